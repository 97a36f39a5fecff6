"""The paper's §3 analysis: loss predicts *mismatch*, not *unacceptable* predictions.

For every target token of a batch of held-out text we record the model's current loss, whether its
top-1 prediction (``<CALL>`` excluded) differs from the ground truth (*mismatch*), and whether that
prediction is nonetheless *acceptable* (another valid continuation: a paraphrase, another order).
Only unacceptable mismatches create factual errors. The paper labels acceptability with an LLM
judge (Gemini 2 Flash) and finds that loss alone predicts unacceptable tokens poorly while loss
combined with spaCy's fact flags does better (§3, Fig. 2).

Acceptability here:

- synthbio, exact: the document's text up to the target plus the predicted token's text is still a
  prefix of some biography the generator could write for that person
  (``World.is_valid_prefix``); the world's grammar is the judge.
- vitalwiki, an approximation passed in as a callable, e.g. :func:`reference_topk_acceptability`:
  the prediction is acceptable when a reference model ranks it among its top-k continuations.

:func:`signal_table` scores each predictor (loss, spaCy proxy, loss × proxy, the gold fact flag as an
oracle) by AUROC and AUPRC against both targets; :func:`roc_curves` and :func:`pr_curves` give the curves
behind them, :func:`mismatch_breakdown` the share of mismatches that are acceptable, fact vs non-fact.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve
from tqdm.auto import tqdm
from transformers.convert_slow_tokenizer import bytes_to_unicode

from lacy.data.tokenizer import call_token_id
from lacy.train.objective import token_losses, without_call

Batch = Mapping[str, torch.Tensor]
AcceptabilityJudge = Callable[[Batch, torch.Tensor], torch.Tensor]
"""``judge(batch, predicted)`` -> bool ``[B, T]``: whether each predicted token (``<CALL>`` excluded) is acceptable."""

CONTEXT_TOKENS = 16
_BYTE_OF_CHAR = {char: byte for byte, char in bytes_to_unicode().items()}


def token_bytes(tokenizer: Any) -> list[bytes]:
    """The bytes each token id stands for (special tokens: empty), for exact incremental decoding.

    Byte-level BPE tokens are strings over GPT-2's byte alphabet; mapping them back to bytes lets a
    document prefix be rebuilt token by token even when a character spans several tokens.
    """
    special = set(tokenizer.all_special_ids)
    pieces = []
    for i, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if i in special or token is None:
            pieces.append(b"")
        elif all(c in _BYTE_OF_CHAR for c in token):
            pieces.append(bytes(_BYTE_OF_CHAR[c] for c in token))
        else:
            pieces.append(tokenizer.decode([i]).encode("utf-8"))
    return pieces


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="ignore")


def reference_topk_acceptability(reference_model: Any, call_id: int, k: int = 5) -> AcceptabilityJudge:
    """An acceptability judge for corpora without a grammar (vitalwiki): a documented stand-in for the
    paper's LLM judge. A prediction is acceptable when it equals the target or is among the reference
    model's top-``k`` next tokens (``<CALL>`` excluded) at that position."""

    def judge(batch: Batch, predicted: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            logits = reference_model(input_ids=batch["input_ids"]).logits.float()
            top = without_call(logits, call_id).topk(k, dim=-1).indices
            return predicted.eq(batch["targets"]) | top.eq(predicted.unsqueeze(-1)).any(-1)

    return judge


def token_signal_frame(model: Any, tokenizer: Any, batches: Iterable[Batch], world: Any = None,
                       max_tokens: int | None = None, *, acceptable: AcceptabilityJudge | None = None,
                       progress: bool = False) -> pd.DataFrame:
    """One row per valid content target token (special tokens excluded) with the §3 signals.

    Columns: ``loss`` (NLL renormalised without ``<CALL>``, :func:`lacy.train.objective.token_losses`),
    ``mismatch`` (top-1 without ``<CALL>`` ≠ target), ``acceptable`` and ``unacceptable``
    (= mismatch & ~acceptable), ``proxy`` (spaCy fact flag), ``gold`` (gold fact token), ``token``
    and ``predicted`` (text), ``context`` (the preceding up to 16 tokens of the window), ``doc_id``,
    ``subject`` (synthbio). The acceptability columns are present when a judge is given: ``world``
    (synthbio, exact: :meth:`World.is_valid_prefix` of the document prefix + predicted token; a
    predicted special token is acceptable only if it is end-of-text after a complete biography) or
    ``acceptable`` (a callable, e.g. :func:`reference_topk_acceptability`).

    With ``world``, document prefixes are rebuilt from the token stream, so ``batches`` must be
    consecutive windows in stream order (``LacyDataModule.val_dataloader()``); tokens of a document
    whose start precedes the first window are skipped. ``max_tokens`` caps the number of rows.
    """
    if world is not None and acceptable is not None:
        raise ValueError("pass either world= (exact synthbio judge) or acceptable= (a callable judge), not both")
    call_id = call_token_id(tokenizer)
    bos_id, eos_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    special_ids = set(tokenizer.all_special_ids)
    special = np.asarray(sorted(special_ids))
    pieces = token_bytes(tokenizer)
    subject_of = {d.doc_id: d.subject for d in world.documents()} if world is not None else {}
    prefix_of: dict[int, bytes] = {}  # ground-truth bytes of each document seen so far, up to the current target
    rows: dict[str, list] = {k: [] for k in ("doc_id", "subject", "loss", "mismatch", "acceptable", "proxy", "gold", "token", "predicted", "context")}
    model.eval()
    for batch in tqdm(batches, desc="signals", disable=not progress):
        with torch.inference_mode():
            logits = model(input_ids=batch["input_ids"]).logits.float()
            loss = token_losses(logits, batch["targets"], call_id)
            predicted = without_call(logits, call_id).argmax(-1)
        judged = acceptable(batch, predicted).cpu().numpy() if acceptable is not None else None
        inputs, targets = batch["input_ids"].cpu().numpy(), batch["targets"].cpu().numpy()
        doc_ids = batch["doc_id"].cpu().numpy()
        keep = batch["valid"].cpu().numpy().astype(bool) & ~np.isin(targets, special)
        loss_np, predicted_np = loss.cpu().numpy(), predicted.cpu().numpy()
        proxy, gold = batch["fact"].cpu().numpy().astype(bool), batch["gold"].cpu().numpy().astype(bool)
        for b in range(targets.shape[0]):
            for t in range(targets.shape[1]):
                doc = int(doc_ids[b, t])
                if inputs[b, t] == bos_id:
                    prefix_of[doc] = b""
                if not keep[b, t]:
                    continue
                target, guess = int(targets[b, t]), int(predicted_np[b, t])
                if world is not None:
                    if doc not in prefix_of:
                        continue
                    prefix = prefix_of[doc]
                    if guess in special_ids:  # only end-of-text can be right, and only after a complete biography
                        is_acceptable = guess == eos_id and "" in world.next_word_options(subject_of[doc], _text(prefix))
                    else:
                        is_acceptable = world.is_valid_prefix(subject_of[doc], _text(prefix + pieces[guess]))
                    prefix_of[doc] = prefix + pieces[target]
                else:
                    is_acceptable = bool(judged[b, t]) if judged is not None else None
                rows["doc_id"].append(doc)
                rows["subject"].append(subject_of.get(doc))
                rows["loss"].append(float(loss_np[b, t]))
                rows["mismatch"].append(guess != target)
                rows["acceptable"].append(is_acceptable)
                rows["proxy"].append(bool(proxy[b, t]))
                rows["gold"].append(bool(gold[b, t]))
                rows["token"].append(_text(pieces[target]))
                rows["predicted"].append(_text(pieces[guess]))
                rows["context"].append(_text(b"".join(pieces[i] for i in inputs[b, max(0, t - CONTEXT_TOKENS + 1): t + 1])))
                if max_tokens is not None and len(rows["loss"]) >= max_tokens:
                    return _frame(rows, judged_acceptability=world is not None or acceptable is not None)
    return _frame(rows, judged_acceptability=world is not None or acceptable is not None)


def _frame(rows: dict[str, list], judged_acceptability: bool) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["loss"] = frame["loss"].astype(np.float64)
    for column in ("mismatch", "proxy", "gold"):
        frame[column] = frame[column].astype(bool)
    if judged_acceptability:
        frame["acceptable"] = frame["acceptable"].astype(bool)
        frame["unacceptable"] = frame["mismatch"] & ~frame["acceptable"]
    else:
        frame = frame.drop(columns="acceptable")
    return frame


def _predictors(frame: pd.DataFrame) -> dict[str, tuple[np.ndarray, bool]]:
    """Predictor name -> (score, is_oracle). The gold flag is an oracle, included when present."""
    loss = frame["loss"].to_numpy(np.float64)
    proxy = frame["proxy"].to_numpy(np.float64)
    predictors = {"loss": (loss, False), "proxy": (proxy, False), "loss_x_proxy": (loss * proxy, False)}
    if frame["gold"].any():
        predictors["gold"] = (frame["gold"].to_numpy(np.float64), True)
    return predictors


def _targets(frame: pd.DataFrame) -> list[str]:
    return [t for t in ("mismatch", "unacceptable") if t in frame.columns]


def signal_table(frame: pd.DataFrame) -> pd.DataFrame:
    """AUROC and AUPRC of each predictor for each target (paper §3), with the target's base rate.

    Predictors: ``loss``, ``proxy`` (spaCy fact flag), ``loss_x_proxy`` (loss where the proxy flags a
    fact, else 0) and ``gold`` (oracle; synthbio). Targets: ``mismatch`` and, when judged,
    ``unacceptable``. AUROC is NaN when a target has a single class. Columns: ``target, predictor,
    auroc, auprc, base_rate, n, oracle``.
    """
    rows = []
    for target in _targets(frame):
        y = frame[target].to_numpy(bool)
        both_classes = 0 < y.sum() < len(y)
        for name, (score, oracle) in _predictors(frame).items():
            rows.append({
                "target": target,
                "predictor": name,
                "auroc": roc_auc_score(y, score) if both_classes else np.nan,
                "auprc": average_precision_score(y, score) if y.any() else np.nan,
                "base_rate": float(y.mean()) if len(y) else np.nan,
                "n": len(y),
                "oracle": oracle,
            })
    return pd.DataFrame(rows, columns=["target", "predictor", "auroc", "auprc", "base_rate", "n", "oracle"])


def _curves(frame: pd.DataFrame, columns: tuple[str, str], curve: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """Tidy ``target, predictor, *columns`` points of ``curve(y, score)`` for every predictor and two-class target."""
    parts = []
    for target in _targets(frame):
        y = frame[target].to_numpy(bool)
        if not 0 < y.sum() < len(y):
            continue
        for name, (score, _) in _predictors(frame).items():
            first, second = curve(y, score)
            parts.append(pd.DataFrame({"target": target, "predictor": name, columns[0]: first, columns[1]: second}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["target", "predictor", *columns])


def roc_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Tidy ROC curves (``target, predictor, fpr, tpr``) of every predictor and target, for plotting."""
    return _curves(frame, ("fpr", "tpr"), lambda y, score: roc_curve(y, score)[:2])


def pr_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Tidy precision-recall curves (``target, predictor, recall, precision``) of every predictor and target.

    The paper's §3 reports AUPRC next to AUROC because unacceptable tokens are rare: a predictor's
    precision is compared with the target's base rate (:func:`signal_table`), the precision of chance.
    Points run from recall 0 to 1 (sklearn's order reversed).
    """

    def curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        precision, recall, _ = precision_recall_curve(y, score)
        return recall[::-1], precision[::-1]

    return _curves(frame, ("recall", "precision"), curve)


def mismatch_breakdown(frame: pd.DataFrame, by: str = "proxy") -> pd.DataFrame:
    """How mismatches split into acceptable and unacceptable, per value of the flag ``by`` (paper §3).

    One row per flag value (``by`` = ``proxy``: the spaCy fact flag; ``gold``: the gold fact flag) and
    an ``all`` row. Columns: ``tokens``, ``mismatches``, ``mismatch_rate`` (of tokens),
    ``acceptable_share`` (of mismatches: mismatches that are acceptable alternatives) and
    ``unacceptable_rate`` (of tokens).
    """
    if "acceptable" not in frame.columns:
        raise ValueError("the frame has no acceptability labels; build it with world= (synthbio) or acceptable= (a judge)")
    if by not in ("proxy", "gold"):
        raise ValueError(f"by must be 'proxy' or 'gold', got {by!r}")
    flag = frame[by].to_numpy(bool)
    rows = []
    for label, part in (("fact", frame[flag]), ("non-fact", frame[~flag]), ("all", frame)):
        mismatches = int(part["mismatch"].sum())
        rows.append({
            by: label,
            "tokens": len(part),
            "mismatches": mismatches,
            "mismatch_rate": mismatches / len(part) if len(part) else np.nan,
            "acceptable_share": float((part["mismatch"] & part["acceptable"]).sum() / mismatches) if mismatches else np.nan,
            "unacceptable_rate": float(part["unacceptable"].mean()) if len(part) else np.nan,
        })
    return pd.DataFrame(rows).set_index(by)


def high_loss_acceptable_examples(frame: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """The ``k`` highest-loss mismatches that are acceptable: where loss alone would wrongly flag an error.

    Columns: ``context, target, predicted, loss`` (plus ``subject`` when known).
    """
    if "acceptable" not in frame.columns:
        raise ValueError("the frame has no acceptability labels; build it with world= (synthbio) or acceptable= (a judge)")
    picked = frame[frame["mismatch"] & frame["acceptable"]].nlargest(k, "loss")
    columns = ["context", "token", "predicted", "loss"] + (["subject"] if picked["subject"].notna().any() else [])
    return picked[columns].rename(columns={"token": "target"}).reset_index(drop=True)
