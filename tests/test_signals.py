"""The §3 signal analysis: per-token frame, exact synthbio acceptability, AUROC/AUPRC table."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score

from lacy.evaluate.signals import (
    high_loss_acceptable_examples,
    mismatch_breakdown,
    pr_curves,
    reference_topk_acceptability,
    roc_curves,
    signal_table,
    token_bytes,
    token_signal_frame,
)


class LookupModel(torch.nn.Module):
    """A stand-in LM: for each known input window, logits that put the maximum on a chosen token."""

    def __init__(self, windows: dict[tuple[int, ...], torch.Tensor], vocab_size: int):
        super().__init__()
        self.windows, self.vocab_size = windows, vocab_size

    def forward(self, input_ids: torch.Tensor, **_):
        chosen = torch.stack([self.windows[tuple(row.tolist())] for row in input_ids])
        logits = torch.nn.functional.one_hot(chosen, self.vocab_size).float() * 10.0
        return type("Output", (), {"logits": logits})()


def _val_batches(datamodule, n_batches: int = 2) -> list[dict[str, torch.Tensor]]:
    return list(itertools.islice(datamodule.val_dataloader(), n_batches))


def _oracle(batches, vocab_size: int) -> LookupModel:
    """Predicts the ground-truth next token everywhere."""
    return LookupModel({tuple(row.tolist()): tgt for b in batches for row, tgt in zip(b["input_ids"], b["targets"])}, vocab_size)


def _constant(batches, vocab_size: int, token: int) -> LookupModel:
    return LookupModel({tuple(row.tolist()): torch.full_like(row, token) for b in batches for row in b["input_ids"]}, vocab_size)


def _auroc_by_pairs(y: np.ndarray, score: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half (Mann-Whitney)."""
    pos, neg = score[y], score[~y]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_ground_truth_is_always_acceptable(smoke_datamodule):
    batches = _val_batches(smoke_datamodule)
    tok = smoke_datamodule.tokenizer
    frame = token_signal_frame(_oracle(batches, len(tok)), tok, batches, world=smoke_datamodule.world)
    assert len(frame) > 50
    assert not frame["mismatch"].any()
    assert frame["acceptable"].all()
    assert not frame["unacceptable"].any()
    # rows are content tokens of documents whose start was seen, and their text is the document's
    docs = {d.doc_id: d for d in smoke_datamodule.world.documents()}
    for doc_id, rows in frame.groupby("doc_id", sort=False):
        assert docs[doc_id].text.startswith("".join(rows["token"]))
        assert (rows["subject"] == docs[doc_id].subject).all()


def test_wrong_predictions_are_judged_by_the_grammar(smoke_datamodule):
    batches = _val_batches(smoke_datamodule)
    tok = smoke_datamodule.tokenizer
    world = smoke_datamodule.world
    # a token that never continues a biography prefix: "@" is in no template or value
    at = tok.convert_tokens_to_ids("@")
    frame = token_signal_frame(_constant(batches, len(tok), at), tok, batches, world=world)
    assert frame["mismatch"].all() and frame["unacceptable"].all()
    assert (frame["predicted"] == "@").all()
    # end-of-text is acceptable exactly at sentence ends once all six facts are stated (remarks are optional)
    frame = token_signal_frame(_constant(batches, len(tok), tok.eos_token_id), tok, batches, world=world)
    docs = {d.doc_id: d for d in world.documents()}
    for doc_id, rows in frame.groupby("doc_id", sort=False):
        text, facts = "", docs[doc_id].facts
        for token, unacceptable in zip(rows["token"], rows["unacceptable"]):
            may_end = text.endswith(".") and all(f.end <= len(text) for f in facts)
            assert unacceptable == (not may_end)
            text += token
    assert frame["unacceptable"].mean() > 0.9

    # the oracle shifted by one word: predicting " was" is acceptable exactly where the grammar allows it
    was = tok(" was", add_special_tokens=False)["input_ids"]
    assert len(was) == 1
    frame = token_signal_frame(_constant(batches, len(tok), was[0]), tok, batches, world=world)
    docs = {d.doc_id: d for d in world.documents()}
    for doc_id, rows in frame.groupby("doc_id", sort=False):
        prefix = ""
        for token, acceptable in zip(rows["token"], rows["acceptable"]):
            assert acceptable == world.is_valid_prefix(docs[doc_id].subject, prefix + " was")
            prefix += token
    assert frame["acceptable"].any() and not frame["acceptable"].all()


def test_max_tokens_and_columns(smoke_datamodule):
    batches = _val_batches(smoke_datamodule)
    tok = smoke_datamodule.tokenizer
    frame = token_signal_frame(_oracle(batches, len(tok)), tok, batches, world=smoke_datamodule.world, max_tokens=17)
    assert len(frame) == 17
    assert {"loss", "mismatch", "acceptable", "unacceptable", "proxy", "gold", "token", "predicted", "doc_id", "context"} <= set(frame.columns)
    special = {tok.decode([i]) for i in tok.all_special_ids}
    assert not frame["token"].isin(special).any()


def test_callable_judge_and_no_judge(smoke_datamodule):
    batches = _val_batches(smoke_datamodule, 1)
    tok = smoke_datamodule.tokenizer
    at = tok.convert_tokens_to_ids("@")
    model = _constant(batches, len(tok), at)
    # a reference model that ranks "@" first: every prediction becomes acceptable
    judge = reference_topk_acceptability(model, smoke_datamodule.call_id, k=1)
    frame = token_signal_frame(model, tok, batches, acceptable=judge)
    assert frame["acceptable"].all() and not frame["unacceptable"].any()
    bare = token_signal_frame(model, tok, batches)
    assert "acceptable" not in bare.columns and "unacceptable" not in bare.columns
    assert set(signal_table(bare)["target"]) == {"mismatch"}
    with pytest.raises(ValueError, match="either world"):
        token_signal_frame(model, tok, batches, world=smoke_datamodule.world, acceptable=judge)


def test_token_bytes_rebuild_text(smoke_datamodule):
    tok = smoke_datamodule.tokenizer
    pieces = token_bytes(tok)
    text = "Ada Lovelace was born on March 5, 1972 in Ashford — café."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert b"".join(pieces[i] for i in ids).decode("utf-8") == text
    assert all(pieces[i] == b"" for i in tok.all_special_ids)


@pytest.fixture()
def hand_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 200
    proxy = rng.random(n) < 0.3
    gold = proxy & (rng.random(n) < 0.8)
    loss = rng.gamma(2.0, 1.0, n) + 2.0 * proxy
    mismatch = rng.random(n) < 1 / (1 + np.exp(-(loss - 2.5)))
    acceptable = ~gold & (rng.random(n) < 0.7)
    return pd.DataFrame({"loss": loss, "proxy": proxy, "gold": gold, "mismatch": mismatch,
                         "acceptable": acceptable, "unacceptable": mismatch & ~acceptable,
                         "context": [f"c{i}" for i in range(n)], "token": "t", "predicted": "p", "subject": None})


def test_signal_table_matches_independent_computation(hand_frame):
    table = signal_table(hand_frame).set_index(["target", "predictor"])
    assert set(table.index) == {(t, p) for t in ("mismatch", "unacceptable") for p in ("loss", "proxy", "loss_x_proxy", "gold")}
    scores = {"loss": hand_frame["loss"].to_numpy(), "proxy": hand_frame["proxy"].to_numpy(float),
              "loss_x_proxy": (hand_frame["loss"] * hand_frame["proxy"]).to_numpy(), "gold": hand_frame["gold"].to_numpy(float)}
    for (target, predictor), row in table.iterrows():
        y = hand_frame[target].to_numpy(bool)
        assert row["auroc"] == pytest.approx(_auroc_by_pairs(y, scores[predictor]))
        assert row["auprc"] == pytest.approx(average_precision_score(y, scores[predictor]))
        assert row["base_rate"] == pytest.approx(y.mean())
        assert row["n"] == len(y)
        assert row["oracle"] == (predictor == "gold")


def test_signal_table_single_class_and_no_gold(hand_frame):
    frame = hand_frame.assign(mismatch=False, unacceptable=False, gold=False)
    table = signal_table(frame)
    assert "gold" not in set(table["predictor"])
    assert table["auroc"].isna().all() and table["auprc"].isna().all()
    assert (table["base_rate"] == 0).all()


def test_roc_curves_tidy(hand_frame):
    curves = roc_curves(hand_frame)
    assert list(curves.columns) == ["target", "predictor", "fpr", "tpr"]
    for _, curve in curves.groupby(["target", "predictor"]):
        assert curve["fpr"].iloc[0] == 0 and curve["fpr"].iloc[-1] == 1 and curve["tpr"].iloc[-1] == 1
        assert curve["fpr"].is_monotonic_increasing and curve["tpr"].is_monotonic_increasing


def test_high_loss_acceptable_examples(hand_frame):
    examples = high_loss_acceptable_examples(hand_frame, k=5)
    pool = hand_frame[hand_frame["mismatch"] & hand_frame["acceptable"]]
    assert list(examples.columns) == ["context", "target", "predicted", "loss"]
    assert len(examples) == min(5, len(pool))
    assert examples["loss"].tolist() == sorted(pool["loss"], reverse=True)[:5]
    with pytest.raises(ValueError, match="acceptability"):
        high_loss_acceptable_examples(hand_frame.drop(columns=["acceptable", "unacceptable"]))


def test_pr_curves_integrate_to_auprc(hand_frame):
    curves = pr_curves(hand_frame)
    assert list(curves.columns) == ["target", "predictor", "recall", "precision"]
    table = signal_table(hand_frame).set_index(["target", "predictor"])
    for key, curve in curves.groupby(["target", "predictor"]):
        recall, precision = curve["recall"].to_numpy(), curve["precision"].to_numpy()
        assert recall[0] == 0 and recall[-1] == 1 and np.all(np.diff(recall) >= 0)
        # average precision is the step integral of precision over recall
        assert np.sum(np.diff(recall) * precision[1:]) == pytest.approx(table.loc[key, "auprc"])


def test_mismatch_breakdown_counts(hand_frame):
    table = mismatch_breakdown(hand_frame)
    assert list(table.index) == ["fact", "non-fact", "all"]
    for label, part in (("fact", hand_frame[hand_frame["proxy"]]), ("non-fact", hand_frame[~hand_frame["proxy"]]), ("all", hand_frame)):
        row = table.loc[label]
        assert row["tokens"] == len(part)
        assert row["mismatches"] == part["mismatch"].sum()
        assert row["acceptable_share"] == pytest.approx(part.loc[part["mismatch"], "acceptable"].mean())
        assert row["unacceptable_rate"] == pytest.approx((part["mismatch"] & ~part["acceptable"]).mean())
    assert list(mismatch_breakdown(hand_frame, by="gold").index) == ["fact", "non-fact", "all"]
    with pytest.raises(ValueError, match="acceptability"):
        mismatch_breakdown(hand_frame.drop(columns=["acceptable", "unacceptable"]))
    with pytest.raises(ValueError, match="proxy"):
        mismatch_breakdown(hand_frame, by="loss")


def test_signal_plots_one_panel_per_target(hand_frame):
    from lacy import plots

    rates = signal_table(hand_frame).groupby("target")["base_rate"].first().to_dict()
    for fig in (plots.signal_roc(roc_curves(hand_frame)), plots.signal_pr(pr_curves(hand_frame), rates)):
        assert [ax.get_title().split(": ")[-1] for ax in fig.axes] == ["mismatch", "unacceptable"]
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_ylabel()
            assert {"loss", "proxy", "loss_x_proxy", "gold", "chance"} <= {t.get_text() for t in ax.get_legend().get_texts()}
