"""Call policies: when the small model defers to its helper (paper §5, inference).

At every decoding step the SLM's P(``<CALL>``) is computed from its full softmax; a policy turns it
into a decision. ``argmax`` defers when ``<CALL>`` is the most likely token; ``threshold`` when
P(``<CALL>``) ≥ τ (τ = 0 always calls, τ = +inf never); ``budget`` is the paper's choice: τ is a
running quantile of the observed P(``<CALL>``) so that a target call rate is met (22% in the main runs).

A policy object is a recipe: the decoder calls :meth:`CallPolicy.start` once per generation and asks
the returned decider. Stateful policies (``budget``) start every generation from the same warm state,
so a generation's calls never depend on which subjects were decoded before it, or in which order.
"""

from __future__ import annotations

import bisect
import math
from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from lacy.data.cache import content_key

POLICIES = ("argmax", "threshold", "budget")


class CallPolicy(ABC):
    name: str

    @abstractmethod
    def decide(self, p_call: float, call_is_argmax: bool) -> bool:
        """Whether to defer this step, given P(<CALL>) and whether <CALL> is the SLM's top token."""

    def start(self) -> "CallPolicy":
        """The decider for one new generation: the policy itself when it keeps no state."""
        return self

    def fingerprint(self) -> str | None:
        """What determines this policy's decisions, as text (cached generations are keyed by it,
        :mod:`lacy.evaluate.generation_cache`); None for a policy that does not say (never cached)."""
        return None


class ArgmaxPolicy(CallPolicy):
    """Defer when ``<CALL>`` is the most likely token (plain greedy decoding of the trained SLM)."""

    name = "argmax"

    def decide(self, p_call: float, call_is_argmax: bool) -> bool:
        return call_is_argmax

    def fingerprint(self) -> str:
        return self.name


class ThresholdPolicy(CallPolicy):
    """Defer when P(``<CALL>``) ≥ ``tau``."""

    name = "threshold"

    def __init__(self, tau: float) -> None:
        if math.isnan(tau) or tau < 0:
            raise ValueError(f"threshold tau must be >= 0 (0 = always call, inf = never), got {tau}")
        self.tau = float(tau)

    def decide(self, p_call: float, call_is_argmax: bool) -> bool:
        return p_call >= self.tau

    def fingerprint(self) -> str:
        return f"{self.name}:{self.tau!r}"


class BudgetPolicy(CallPolicy):
    """Defer on the top ``rate`` fraction of P(``<CALL>``) seen so far: a running-quantile threshold.

    Each new probability joins the observed set (seeded with ``warmup_probs``, e.g. teacher-forced
    probabilities on held-out text); the step defers when fewer than ``rate`` × n observed values
    are strictly larger than it, i.e. it lies in the top ``rate`` quantile. The running quantile
    alone can overspend on ties or a drifting distribution, so a call is also refused when it would
    take the call count above ⌈rate × decisions⌉: the budget is a cap, never exceeded by a whole call.
    The budget holds per generation: :meth:`start` gives each generation a fresh copy, warmed up with
    ``warmup_probs`` only (calling ``decide`` on this object directly accumulates state).
    """

    name = "budget"

    def __init__(self, rate: float, warmup_probs: Sequence[float] = ()) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"budget rate must be in [0, 1] (the paper's main runs use 0.22), got {rate}")
        self.rate = float(rate)
        self.warmup: tuple[float, ...] = tuple(sorted(float(p) for p in warmup_probs))
        self.observed: list[float] = list(self.warmup)
        self.n_decisions = 0
        self.n_calls = 0

    def start(self) -> "BudgetPolicy":
        fresh = BudgetPolicy.__new__(BudgetPolicy)
        fresh.rate, fresh.warmup, fresh.observed = self.rate, self.warmup, list(self.warmup)
        fresh.n_decisions = fresh.n_calls = 0
        return fresh

    def fingerprint(self) -> str:
        """The rate and the warm-up values: each generation starts from them (:meth:`start`)."""
        return f"{self.name}:{self.rate!r}:{content_key({'warmup': self.warmup})}"

    @property
    def tau(self) -> float:
        """The current threshold: the (1 − rate) quantile of the observed probabilities."""
        if not self.observed:
            return 0.0 if self.rate > 0 else math.inf
        return float(np.quantile(self.observed, 1.0 - self.rate)) if self.rate > 0 else math.inf

    def decide(self, p_call: float, call_is_argmax: bool) -> bool:
        bisect.insort(self.observed, p_call)
        self.n_decisions += 1
        n_larger = len(self.observed) - bisect.bisect_right(self.observed, p_call)
        call = n_larger < self.rate * len(self.observed) and self.n_calls + 1 <= math.ceil(self.rate * self.n_decisions - 1e-9)
        self.n_calls += call
        return call

    @property
    def call_rate(self) -> float:
        return self.n_calls / self.n_decisions if self.n_decisions else 0.0


def threshold_for_rate(calibration: Sequence[float], rate: float) -> float:
    """τ such that a fraction ``rate`` of the ``calibration`` probabilities are ≥ τ (Co-LLM style
    calibration on held-out text): the (1 − rate) quantile; rate 0 → +inf, rate 1 → 0."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"call rate must be in [0, 1], got {rate}")
    if rate == 0.0:
        return math.inf
    if rate == 1.0:
        return 0.0
    if len(calibration) == 0:
        raise ValueError("threshold calibration needs at least one probability (see p_call_teacher_forced)")
    return float(np.quantile(np.asarray(calibration, dtype=np.float64), 1.0 - rate))


def build_policy(name: str, tau: float | None = None, budget: float | None = None,
                 calibration: Sequence[float] | None = None) -> CallPolicy:
    """A policy by name.

    ``argmax``; ``threshold`` with ``tau``, or with ``budget`` and ``calibration`` (τ is then the
    calibrated quantile); ``budget`` with ``budget`` (the target call rate), warmed up with
    ``calibration`` when given.
    """
    if name == "argmax":
        return ArgmaxPolicy()
    if name == "threshold":
        if tau is not None:
            return ThresholdPolicy(tau)
        if budget is not None and calibration is not None:
            return ThresholdPolicy(threshold_for_rate(calibration, budget))
        raise ValueError("policy 'threshold' needs tau=..., or budget=... with calibration=... to calibrate tau")
    if name == "budget":
        if budget is None:
            raise ValueError("policy 'budget' needs budget=... (the target call rate in [0, 1], e.g. 0.22)")
        return BudgetPolicy(budget, warmup_probs=calibration if calibration is not None else ())
    raise ValueError(f"unknown call policy {name!r}; valid policies: {', '.join(POLICIES)}")
