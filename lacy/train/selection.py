"""Token-selection rules: which positions of a batch learn ``<CALL>``, which are ignored, which learn.

Every rule is a pure function of per-token tensors ``[B, T]`` returning a :class:`Selection` of two
disjoint masks, with one keyword signature. Each rule is declared with what it needs in a
:class:`Method` record (:data:`METHOD_SPECS`), the one place a method name is decoded:

- ``call``: the target becomes ``<CALL>`` (learned with the ordinary softmax);
- ``learn``: the original target is learned with the softmax renormalised without ``<CALL>``;
- neither (``Selection.ignored(valid)``): the position contributes no loss.

Counting rules (fixing what third-party Rho-1 code gets wrong: it selects padding tokens and normalises
per rank):

- Padding (``valid=False``) is never selected and never learned.
- ``lacy`` converts ``k = floor(fraction * n_fact + 1/2)`` tokens of a group, where ``n_fact`` is the
  number of valid fact tokens in the group (nearest integer, halves rounded up; see :func:`lacy_counts`).
  The matched baselines (``loss``, ``rho``, ``rho_excess``, ``judge``, ``random``, ``ignore``) select the *same* ``k``
  per group, so every method trains ``<CALL>`` (or ignores) at the same rate. ``judge`` selects at
  most ``k``: only tokens the judge marks unacceptable are eligible.
- A group is the whole batch (``granularity="batch"``, the default: one quantile over the batch) or
  one sequence (``granularity="sequence"``).
- ``lacy_adaptive`` is the exception: after a warm-up (``train.call_warmup``) it converts every valid
  fact token whose current loss exceeds an absolute threshold (``train.call_threshold``), so its count
  is not matched.
- Ties are broken deterministically: a stable sort by descending score, so among equal scores the
  lower flat index (row-major within the group) is selected first.

Judges compute the ``unacceptable`` mask for the ``judge`` rule (paper §3: an LLM judge labels which
mismatches are unacceptable). See :func:`exact_judge` and :func:`reference_judge`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

import torch
from torch import Tensor

from lacy.profiles import DEFAULT_CALL_THRESHOLD, check_choice
from lacy.train.objective import without_call

GRANULARITIES = ("batch", "sequence")


@dataclass(frozen=True)
class Selection:
    """Disjoint ``[B, T]`` bool masks: ``call`` (target becomes ``<CALL>``) and ``learn`` (original target)."""

    call: Tensor
    learn: Tensor

    def ignored(self, valid: Tensor) -> Tensor:
        """Valid positions that neither learn ``<CALL>`` nor their target: they get no loss."""
        return valid & ~self.call & ~self.learn


class SelectionRule(Protocol):
    def __call__(
        self,
        loss: Tensor,
        valid: Tensor,
        fact: Tensor,
        *,
        fraction: float = 0.6,
        granularity: str = "batch",
        ref_loss: Tensor | None = None,
        unacceptable: Tensor | None = None,
        generator: torch.Generator | None = None,
        threshold: float = DEFAULT_CALL_THRESHOLD,
    ) -> Selection: ...


def _groups(x: Tensor, granularity: str) -> Tensor:
    """View ``[B, T]`` as ``[G, N]``: one group for the batch, or one per sequence."""
    if granularity == "batch":
        return x.reshape(1, -1)
    if granularity == "sequence":
        return x
    raise ValueError(f"unknown granularity {granularity!r}; valid choices: {', '.join(GRANULARITIES)}")


def lacy_counts(valid: Tensor, fact: Tensor, fraction: float, granularity: str = "batch") -> Tensor:
    """Number of tokens ``lacy`` converts per group: ``floor(fraction * n_fact + 1/2)`` (paper §4).

    ``n_fact`` counts valid fact tokens in the group. Returns a long tensor ``[G]`` (``G = 1`` for
    ``"batch"``, ``B`` for ``"sequence"``). Computed in float64 so that e.g. ``0.6 * 5`` gives 3.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    n_fact = _groups(valid & fact, granularity).sum(dim=1, dtype=torch.float64)
    return torch.floor(n_fact * fraction + 0.5).long()


def top_k_mask(score: Tensor, eligible: Tensor, k: Tensor, granularity: str = "batch") -> Tensor:
    """The ``k[g]`` highest-``score`` eligible positions of each group, as a ``[B, T]`` bool mask.

    Ties go to the lower flat index (stable sort). Never selects an ineligible position, so a group
    with fewer than ``k[g]`` eligible positions selects all of them.
    """
    grouped_score = _groups(score, granularity)
    grouped_eligible = _groups(eligible, granularity)
    # Two stable sorts = a lexicographic sort on (eligible desc, score desc, index asc).
    order = torch.sort(grouped_score, dim=1, descending=True, stable=True).indices
    by_eligibility = torch.sort(grouped_eligible.gather(1, order).to(torch.uint8), dim=1, descending=True, stable=True).indices
    order = order.gather(1, by_eligibility)
    rank_selected = torch.arange(grouped_score.shape[1], device=score.device).unsqueeze(0) < k.to(score.device).unsqueeze(1)
    selected = torch.zeros_like(grouped_eligible).scatter(1, order, rank_selected)
    return (selected & grouped_eligible).reshape(score.shape)


def _no_call(valid: Tensor) -> Tensor:
    return torch.zeros_like(valid)


def _call_selected(valid: Tensor, selected: Tensor) -> Selection:
    return Selection(call=selected, learn=valid & ~selected)


def _ignore_selected(valid: Tensor, selected: Tensor) -> Selection:
    return Selection(call=_no_call(valid), learn=valid & ~selected)


def _lacy_mask(loss: Tensor, valid: Tensor, fact: Tensor, fraction: float, granularity: str) -> Tensor:
    return top_k_mask(loss, valid & fact, lacy_counts(valid, fact, fraction, granularity), granularity)


def _loss_mask(loss: Tensor, valid: Tensor, fact: Tensor, fraction: float, granularity: str) -> Tensor:
    return top_k_mask(loss, valid, lacy_counts(valid, fact, fraction, granularity), granularity)


def select_standard(
    loss: Tensor, valid: Tensor, fact: Tensor, *, fraction: float = 0.6, granularity: str = "batch",
    ref_loss: Tensor | None = None, unacceptable: Tensor | None = None, generator: torch.Generator | None = None,
    threshold: float = DEFAULT_CALL_THRESHOLD,
) -> Selection:
    """Standard pretraining: nothing becomes ``<CALL>``; every valid token is learned."""
    return Selection(call=_no_call(valid), learn=valid.clone())


def select_lacy(
    loss: Tensor, valid: Tensor, fact: Tensor, *, fraction: float = 0.6, granularity: str = "batch",
    ref_loss: Tensor | None = None, unacceptable: Tensor | None = None, generator: torch.Generator | None = None,
    threshold: float = DEFAULT_CALL_THRESHOLD,
) -> Selection:
    """LaCy (paper §4): among valid fact tokens, the top ``fraction`` by current loss → ``<CALL>``."""
    return _call_selected(valid, _lacy_mask(loss, valid, fact, fraction, granularity))


def select_lacy_adaptive(
    loss: Tensor, valid: Tensor, fact: Tensor, *, fraction: float = 0.6, granularity: str = "batch",
    ref_loss: Tensor | None = None, unacceptable: Tensor | None = None, generator: torch.Generator | None = None,
    threshold: float = DEFAULT_CALL_THRESHOLD,
) -> Selection:
    """Adaptive LaCy (issue #13): every valid fact token whose current loss exceeds ``threshold`` nats
    → ``<CALL>``; every other valid token is learned. ``threshold=inf`` delegates nothing: the training
    module passes it during the warm-up (:meth:`lacy.train.module.LacyLM.call_threshold`), because a fact
    delegated before the model has had the chance to learn it never gets the gradient that would teach
    it (measured without warm-up: the SLM recalled none of the famous people's attributes).

    Why: ``lacy`` delegates a fixed top 60% of each batch's fact losses, so late in training it still
    delegates facts the model is about to learn (the famous people's, seen hundreds of times) while a
    model's capacity (≈ 2 bits of knowledge per parameter, Allen-Zhu & Li 2024, "Physics of Language
    Models 3.3") is what decides which facts it can keep. An absolute threshold on the current loss
    tracks that instead: a fact the model has learned falls below it and is learned from then on, and
    the call rate falls as training proceeds. The selection is per token, with no batch statistic, so
    ``granularity`` and ``fraction`` play no part and a data-parallel run selects what one process does.

    The number of ``<CALL>`` targets is *not* matched to ``lacy``'s: compare the two at equal achieved
    call rates (the cascade sweep), not at one training setting.
    """
    if math.isnan(threshold) or threshold < 0.0:
        raise ValueError(f"threshold must be a number of nats >= 0 (inf: delegate nothing), got {threshold}; "
                         "set it with --set train.call_threshold=...")
    return _call_selected(valid, valid & fact & (loss > threshold))


def select_loss(
    loss: Tensor, valid: Tensor, fact: Tensor, *, fraction: float = 0.6, granularity: str = "batch",
    ref_loss: Tensor | None = None, unacceptable: Tensor | None = None, generator: torch.Generator | None = None,
    threshold: float = DEFAULT_CALL_THRESHOLD,
) -> Selection:
    """Loss-only baseline (paper §4-5): the ``k`` highest-loss valid tokens → ``<CALL>``, facts or not.

    ``k`` is the number ``lacy`` converts on the same group, so the ``<CALL>`` rate is equal.
    """
    return _call_selected(valid, _loss_mask(loss, valid, fact, fraction, granularity))


def select_facts(
    loss: Tensor, valid: Tensor, fact: Tensor, *, fraction: float = 0.6, granularity: str = "batch",
    ref_loss: Tensor | None = None, unacceptable: Tensor | None = None, generator: torch.Generator | None = None,
    threshold: float = DEFAULT_CALL_THRESHOLD,
) -> Selection:
    """Facts-only baseline: every valid fact token → ``<CALL>``, whatever its loss."""
    return _call_selected(valid, valid & fact)


def select_rho(
    loss: Tensor, valid: Tensor, fact: Tensor, *, fraction: float = 0.6, granularity: str = "batch",
    ref_loss: Tensor | None = None, unacceptable: Tensor | None = None, generator: torch.Generator | None = None,
    threshold: float = DEFAULT_CALL_THRESHOLD,
) -> Selection:
    """Rho-1 baseline, read as its authors meant it (paper §5): among valid fact tokens, the ``k`` that a
    reference model *also* cannot predict (highest ``ref_loss``) → ``<CALL>``; ``k`` matched to ``lacy``.

    Rho-1 (Lin et al., 2024, "Not All Tokens Are What You Need", §2) scores a token by its excess
    loss ``loss - ref_loss`` against a reference trained on better data: a high excess marks a token
    that is *learnable* (the reference predicts it) but not yet learned, and Rho-1 trains on exactly
    those; tokens the reference too predicts badly are noise it does not train on. Delegating the
    high-excess tokens would hand the helper precisely what a model can learn (the ablation
    :func:`select_rho_excess`). Learnability says to delegate the other end: the tokens still
    unpredictable to a reference with more capacity and more training than the SLM (lacy's default
    reference is the profile's helper-size ``standard`` model). Restricted to fact tokens, as
    ``lacy`` is, so the two differ only in *whose* loss ranks the facts: the reference's (learnable at
    all?) against the SLM's own current loss.
    """
    if ref_loss is None:
        raise ValueError("the 'rho' rule needs ref_loss (a reference model's per-token loss); "
                         "lacy.train.run.train attaches it, or pass ref_loss=... explicitly")
    k = lacy_counts(valid, fact, fraction, granularity)
    return _call_selected(valid, top_k_mask(ref_loss.to(loss.dtype), valid & fact, k, granularity))


def select_rho_excess(
    loss: Tensor, valid: Tensor, fact: Tensor, *, fraction: float = 0.6, granularity: str = "batch",
    ref_loss: Tensor | None = None, unacceptable: Tensor | None = None, generator: torch.Generator | None = None,
    threshold: float = DEFAULT_CALL_THRESHOLD,
) -> Selection:
    """Ablation of ``rho`` with Rho-1's score taken literally: the ``k`` valid tokens with the largest
    excess loss ``loss - ref_loss`` → ``<CALL>`` (``k`` matched to ``lacy``). It delegates the tokens
    the reference says are learnable, the opposite of Rho-1's reading (see :func:`select_rho`)."""
    if ref_loss is None:
        raise ValueError("the 'rho_excess' rule needs ref_loss (a reference model's per-token loss); "
                         "lacy.train.run.train attaches it, or pass ref_loss=... explicitly")
    k = lacy_counts(valid, fact, fraction, granularity)
    return _call_selected(valid, top_k_mask(loss - ref_loss.to(loss.dtype), valid, k, granularity))


def select_judge(
    loss: Tensor, valid: Tensor, fact: Tensor, *, fraction: float = 0.6, granularity: str = "batch",
    ref_loss: Tensor | None = None, unacceptable: Tensor | None = None, generator: torch.Generator | None = None,
    threshold: float = DEFAULT_CALL_THRESHOLD,
) -> Selection:
    """Judge baseline (paper §3, §5): among valid tokens a judge marks unacceptable, the highest-loss
    ones → ``<CALL>``, at most ``k`` (matched to ``lacy``) per group."""
    if unacceptable is None:
        raise ValueError("the 'judge' rule needs unacceptable (a judge's mask); compute it with "
                         "lacy.train.selection.exact_judge or reference_judge")
    k = lacy_counts(valid, fact, fraction, granularity)
    return _call_selected(valid, top_k_mask(loss, valid & unacceptable, k, granularity))


def select_random(
    loss: Tensor, valid: Tensor, fact: Tensor, *, fraction: float = 0.6, granularity: str = "batch",
    ref_loss: Tensor | None = None, unacceptable: Tensor | None = None, generator: torch.Generator | None = None,
    threshold: float = DEFAULT_CALL_THRESHOLD,
) -> Selection:
    """Random baseline: ``k`` uniformly random valid tokens → ``<CALL>`` (``k`` matched to ``lacy``).

    Draws from ``generator`` (a seeded ``torch.Generator`` on the CPU) for reproducibility.
    """
    score = torch.rand(valid.shape, generator=generator, device="cpu").to(valid.device)
    k = lacy_counts(valid, fact, fraction, granularity)
    return _call_selected(valid, top_k_mask(score, valid, k, granularity))


def select_ignore(
    loss: Tensor, valid: Tensor, fact: Tensor, *, fraction: float = 0.6, granularity: str = "batch",
    ref_loss: Tensor | None = None, unacceptable: Tensor | None = None, generator: torch.Generator | None = None,
    threshold: float = DEFAULT_CALL_THRESHOLD,
) -> Selection:
    """Ignore baseline (paper §5): the tokens ``loss`` would select get no loss instead of ``<CALL>``."""
    return _ignore_selected(valid, _loss_mask(loss, valid, fact, fraction, granularity))


def select_ignore_facts(
    loss: Tensor, valid: Tensor, fact: Tensor, *, fraction: float = 0.6, granularity: str = "batch",
    ref_loss: Tensor | None = None, unacceptable: Tensor | None = None, generator: torch.Generator | None = None,
    threshold: float = DEFAULT_CALL_THRESHOLD,
) -> Selection:
    """IgnoreFacts baseline (paper §5): the tokens ``lacy`` would select get no loss instead of ``<CALL>``."""
    return _ignore_selected(valid, _lacy_mask(loss, valid, fact, fraction, granularity))


# ---- judges -------------------------------------------------------------------------------------

Judge = Callable[[Mapping[str, Tensor], Tensor, int], Tensor]
"""``judge(batch, logits, call_id) -> unacceptable [B, T] bool``."""


def greedy_without_call(logits: Tensor, call_id: int) -> Tensor:
    """The model's greedy next token among real tokens (``<CALL>`` excluded), ``[B, T]``."""
    return without_call(logits.detach(), call_id).argmax(-1)


def exact_judge(batch: Mapping[str, Tensor], logits: Tensor, call_id: int) -> Tensor:
    """synthbio's exact judge: a greedy mismatch is unacceptable where the target word was the only
    acceptable continuation (``forced``, decided by the generator's grammar)."""
    prediction = greedy_without_call(logits, call_id)
    return batch["valid"] & batch["forced"] & (prediction != batch["targets"])


def reference_judge(batch: Mapping[str, Tensor], logits: Tensor, call_id: int) -> Tensor:
    """vitalwiki's model judge, standing in for the paper's LLM judge (Gemini 2 Flash, §3).

    A greedy mismatch is acceptable when a reference model ranks the predicted token among its
    top-k next tokens (``ref_topk [B, T, k]``): a plausible alternative continuation. Otherwise it is
    unacceptable. Cheaper and offline, but a judge of plausibility, not of factual truth.
    """
    if "ref_topk" not in batch:
        raise ValueError("reference_judge needs batch['ref_topk'] (a reference model's top-k next tokens); "
                         "lacy.train.run.train attaches it for method='judge' on vitalwiki")
    prediction = greedy_without_call(logits, call_id)
    plausible = (batch["ref_topk"] == prediction.unsqueeze(-1)).any(-1)
    return batch["valid"] & (prediction != batch["targets"]) & ~plausible


@dataclass(frozen=True)
class JudgeSpec:
    """A judge and what it reads: ``reference_top_k > 0`` means a reference model's top-k next tokens
    (``batch["ref_topk"]``), which training attaches before the first step."""

    judge: Judge
    reference_top_k: int = 0


JUDGES: dict[str, JudgeSpec] = {
    "exact": JudgeSpec(exact_judge),
    "reference": JudgeSpec(reference_judge, reference_top_k=5),
}
"""Judges by name; each corpus names its own (:attr:`lacy.data.corpora.Corpus.judge`)."""


# ---- methods ------------------------------------------------------------------------------------

EFFECTS = ("call", "ignore", "none")


@dataclass(frozen=True)
class Method:
    """A training method: its selection rule and everything the rule needs, declared in one place.

    ``effect``: what happens to the selected tokens (``"call"``: they learn ``<CALL>``; ``"ignore"``:
    they get no loss; ``"none"``: nothing is selected). ``needs_reference_loss``: the rule ranks by
    a reference model's per-token loss (``batch["ref_loss"]``). ``needs_judge``: the rule reads a
    judge's ``unacceptable`` mask (the corpus decides which judge). ``stochastic``: the rule draws
    from the ``generator`` it is given.
    """

    name: str
    rule: SelectionRule
    effect: str = "call"
    needs_reference_loss: bool = False
    needs_judge: bool = False
    stochastic: bool = False

    def reference_top_k(self, judge: JudgeSpec) -> int:
        """How many reference top-k next tokens training must attach (0: none)."""
        return judge.reference_top_k if self.needs_judge else 0

    def needs_reference(self, judge: JudgeSpec) -> bool:
        """Whether training needs a reference model (for its losses or for the judge)."""
        return self.needs_reference_loss or self.reference_top_k(judge) > 0

    def rule_inputs(self, loss: Tensor, batch: Mapping[str, Tensor], logits: Tensor, call_id: int,
                    judge: Judge | None = None) -> dict[str, Tensor | None]:
        """The rule's tensor arguments for one batch: ``loss`` (the current per-token loss), ``valid``,
        ``fact``, ``ref_loss`` (when the batch carries it) and ``unacceptable`` (the judge's mask,
        for methods that need one)."""
        if self.needs_judge and judge is None:
            raise ValueError(f"method {self.name!r} needs a judge: one of lacy.train.selection.JUDGES "
                             f"({', '.join(JUDGES)}); the corpus names its own")
        if self.needs_reference_loss and batch.get("ref_loss") is None:
            raise ValueError(f"method {self.name!r} needs batch['ref_loss'] (a reference model's per-token loss); "
                             "lacy.train.run.train attaches it")
        return {"loss": loss, "valid": batch["valid"], "fact": batch["fact"], "ref_loss": batch.get("ref_loss"),
                "unacceptable": judge(batch, logits, call_id) if self.needs_judge else None}

    def select(self, inputs: Mapping[str, Tensor | None], *, fraction: float, granularity: str,
               generator: torch.Generator | None = None, threshold: float = DEFAULT_CALL_THRESHOLD) -> Selection:
        """Apply the rule to :meth:`rule_inputs` (possibly gathered over ranks)."""
        return self.rule(inputs["loss"], inputs["valid"], inputs["fact"], fraction=fraction, granularity=granularity,
                         ref_loss=inputs["ref_loss"], unacceptable=inputs["unacceptable"],
                         generator=generator if self.stochastic else None, threshold=threshold)


METHOD_SPECS: dict[str, Method] = {m.name: m for m in (
    Method("standard", select_standard, effect="none"),
    Method("lacy", select_lacy),
    Method("lacy_adaptive", select_lacy_adaptive),
    Method("loss", select_loss),
    Method("facts", select_facts),
    Method("rho", select_rho, needs_reference_loss=True),
    Method("rho_excess", select_rho_excess, needs_reference_loss=True),
    Method("judge", select_judge, needs_judge=True),
    Method("random", select_random, stochastic=True),
    Method("ignore", select_ignore, effect="ignore"),
    Method("ignore_facts", select_ignore_facts, effect="ignore"),
)}
"""Every training method, in the order of :data:`lacy.profiles.METHODS` (the CLI's light list of names,
kept equal to these keys by a test)."""

SELECTION_RULES: dict[str, SelectionRule] = {name: m.rule for name, m in METHOD_SPECS.items()}


def get_method(name: str) -> Method:
    """The :class:`Method` called ``name``; a ConfigError lists the valid names otherwise."""
    return METHOD_SPECS[check_choice("method", name, tuple(METHOD_SPECS))]
