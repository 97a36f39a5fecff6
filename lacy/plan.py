"""What a profile costs before it runs: FLOPs and expected wall time per chapter, per device.

``lacy plan --profile P`` (and :func:`chapter_estimate` in a chapter's first cell) counts the work
each chapter does and converts it to time on the cards a user is likely to have:

* training: models trained x steps x tokens per step x (6 x parameters + 12 x layers x d_model x
  context) FLOPs per token (the dense-transformer count of Kaplan et al. 2020 with attention, as in
  the PaLM paper's MFU appendix), counted in the first chapter (in book order) that trains the model
  -- later chapters reuse the run cache;
* evaluation: generated tokens x 2 x parameters of every model that reads them; and since greedy
  decoding one token at a time is bound by per-layer kernel launches rather than FLOPs, each
  decoding step costs at least ``DECODE_SECONDS_PER_LAYER`` per layer (an assumption, stated);
* annotation (chapter 1): corpus tokens through spaCy on the CPU at ``SPACY_TOKENS_PER_S`` per
  process (measured on this machine: about 9K tokens/s with parser and lemmatizer disabled).

Wall time = FLOPs / (published dense fp16/bf16 peak x ``ASSUMED_MFU``), floored by the decoding
latency, plus annotation. "This machine" uses the measured GEMM peak
(:func:`lacy.bench.peak.gemm_peak_flops`) in the dtype ``precision=auto`` trains in.
The chapter lists (methods, rates, helpers) mirror the defaults of the chapters' parameters cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lacy.profiles import ModelConfig, Profile, check_choice, get_profile, resolve_processes

# Published dense (no sparsity) tensor-core peaks from NVIDIA's datasheets, FLOP/s, in the precision
# precision=auto picks on that card (fp16 where there are no bf16 units: 16-mixed).
CARD_PEAKS: dict[str, tuple[float, str]] = {
    "T4": (65e12, "fp16"), "V100": (125e12, "fp16"), "A10": (125e12, "bf16"), "L4": (121e12, "bf16"),
    "A100": (312e12, "bf16"), "L40S": (362e12, "bf16"), "H100 PCIe": (756e12, "bf16"), "H100": (989e12, "bf16"),
    "H200": (989e12, "bf16"),
}
PLANNED_CARDS = ("T4", "A100", "H100")  # the columns of `lacy plan` (H100: the SXM part)
DEVICE_PEAKS = {card: CARD_PEAKS[card] for card in PLANNED_CARDS}
# Fraction of the peak a Hugging Face model under Lightning reaches: stated, not measured. `make gpu-check` on an
# H200 measured 19% of the published peak (25% of its measured GEMM peak) for the gpu profile's 120M SLM at
# 16 x 1024 tokens per step, so the gpu estimates are optimistic by about 1.5x on Hopper.
ASSUMED_MFU = 0.30
DECODE_SECONDS_PER_LAYER = 1.5e-4  # launch-bound floor of one decoded token through one layer (HF eager, batch 1)
SPACY_TOKENS_PER_S = 9_000.0  # per process, parser and lemmatizer disabled (measured on a 2-core CPU)
SYNTHBIO_TOKENS_PER_DOC = 96.0  # measured on the smoke cache (512 vocabulary; larger vocabularies give fewer)
VITALWIKI_DOCS = 10_033  # Level-4 vital article summaries
VITALWIKI_TOKENS_PER_DOC = 120.0  # ~0.9M words in 10,033 summaries at ~1.3 tokens per word
SMOLLM2 = {"params": 135e6, "layers": 30}  # SmolLM2-135M-Instruct, the offline vitalwiki helper
HUB_HELPERS = {"meta-llama/Llama-3.2-1B-Instruct": {"params": 1.24e9, "layers": 16}}

CHAPTERS = ("01_data", "02_loss_is_not_enough", "03_training", "04_cascade", "05_what_the_slm_keeps",
            "06_real_wikipedia", "07_scaling", "summary")
CH3_METHODS = ("standard", "lacy", "loss", "facts", "rho", "judge", "random", "ignore", "ignore_facts")  # also chapter 5's
CH3_SEEDED = ("standard", "lacy", "loss", "ignore_facts")  # trained with CH3_SEEDS training seeds
CH3_SEEDS = 3
CH4_METHODS = ("standard", "loss", "lacy", "ignore_facts")
CH6_METHODS = ("standard", "loss", "lacy")
CH6_SMALL = {"n_subjects": 20, "max_new_tokens": 40, "rates": 4}  # chapter 6 below full scale
AUTO_NEW_TOKENS = 131
"""Tokens a synthbio generation may write when ``eval.max_new_tokens`` is 0 ("auto": 1.5x the longest training
biography, :meth:`lacy.evaluate.run.EvaluationContext.max_new_tokens`), measured on the ``cpu`` world (131)."""
# Chapter 7's parameters cell: the call fractions swept at the ladder sizes CH7_FRACTION_SIZES (indices, smallest
# first), the training seeds of the smallest and the largest size, and the rates of the token-vs-gate sweep.
CH7_FRACTIONS = (0.2, 0.4, 0.6, 0.8)
CH7_FRACTION_SIZES = (0, 1)
CH7_END_SEEDS = 2
CH7_GATE_RATES = (0.1, 0.22, 0.4)


@dataclass(frozen=True)
class Work:
    """One piece of a chapter's work: FLOPs, sequential decoding steps x layers, and spaCy tokens."""

    label: str
    flops: float = 0.0
    decode_layer_steps: float = 0.0
    spacy_tokens: float = 0.0

    def seconds(self, peak_flops: float, spacy_processes: int) -> float:
        compute = max(self.flops / (peak_flops * ASSUMED_MFU), self.decode_layer_steps * DECODE_SECONDS_PER_LAYER)
        return compute + self.spacy_tokens / (SPACY_TOKENS_PER_S * max(spacy_processes, 1))


@dataclass
class ChapterPlan:
    """The work of one chapter under one profile and its expected wall time per device."""

    chapter: str
    profile: str
    work: list[Work] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def flops(self) -> float:
        return sum(w.flops for w in self.work)

    def __str__(self) -> str:
        times = ", ".join(f"{device} {format_seconds(s)}" for device, s in self.seconds.items())
        return (f"{self.chapter} under profile {self.profile!r}: {self.flops:.2e} FLOPs; expected wall time {times} "
                f"(MFU {ASSUMED_MFU:.0%} assumed; `lacy plan --profile {self.profile}` shows every chapter)")


def parameters(cfg: ModelConfig, vocab_size: int, context: int) -> int:
    """Exact parameter count of :func:`lacy.train.model.build_slm` for ``cfg`` (tied embeddings counted once)."""
    d, f, n = cfg.d_model, cfg.d_ff, cfg.n_layer
    gate = d + 1 if cfg.call_head == "gate" else 0  # the deferral gate: Linear(d_model, 1)
    if cfg.arch == "llama":  # q,k,v,o; gate, up, down; two RMSNorms per layer; final norm
        return vocab_size * d + n * (4 * d * d + 3 * d * f + 2 * d) + d + gate
    # gpt2: token + position embeddings; qkv and output projections and the MLP with biases; two LayerNorms
    return vocab_size * d + context * d + n * (4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d) + 2 * d + gate


def train_flops_per_token(cfg: ModelConfig, vocab_size: int, context: int) -> float:
    """6 N + 12 L d T: forward and backward of the dense weights plus the attention scores (T = context)."""
    return 6.0 * parameters(cfg, vocab_size, context) + 12.0 * cfg.n_layer * cfg.d_model * context


def training(label: str, profile: Profile, models: int = 1, helper: bool = False) -> Work:
    """``models`` training runs of the profile's SLM (or its synthbio LM helper)."""
    cfg, tcfg = (profile.helper_model, profile.helper_train) if helper else (profile.model, profile.train)
    tokens = tcfg.max_steps * tcfg.batch_size * profile.data.seq_len
    per_token = train_flops_per_token(cfg, profile.data.vocab_size, profile.data.seq_len)
    return Work(f"{label}: {models} x {tokens:,} tokens", flops=models * tokens * per_token)


def decoding(label: str, generations: float, new_tokens: int, models: list[tuple[float, int]]) -> Work:
    """Greedy generation: ``generations`` x ``new_tokens`` steps through each of ``models`` (params, layers)."""
    steps = generations * new_tokens
    return Work(f"{label}: {int(generations):,} generations", flops=steps * sum(2.0 * p for p, _ in models),
                decode_layer_steps=steps * sum(layers for _, layers in models))


def synthbio_tokens(profile: Profile) -> float:
    """Corpus tokens of the synthbio world: biographies from the exposure law x tokens per biography."""
    from lacy.data.synthbio import ExposureLaw

    return sum(n_docs for _, n_docs in ExposureLaw.from_config(profile.world).assign()) * SYNTHBIO_TOKENS_PER_DOC


def vitalwiki_tokens(profile: Profile) -> float:
    docs = profile.data.vitalwiki_max_docs or VITALWIKI_DOCS
    return min(docs, VITALWIKI_DOCS) * VITALWIKI_TOKENS_PER_DOC


def _slm(profile: Profile) -> tuple[float, int]:
    return parameters(profile.model, profile.data.vocab_size, profile.data.seq_len), profile.model.n_layer


def _helper(profile: Profile) -> tuple[float, int]:
    return parameters(profile.helper_model, profile.data.vocab_size, profile.data.seq_len), profile.helper_model.n_layer


def full_scale_wikipedia(profile: Profile) -> bool:
    """Chapter 6 runs every People subject with the profile's generation length and a hub helper only under ``gpu``."""
    return profile.name == "gpu"


def new_tokens(profile: Profile) -> int:
    """``eval.max_new_tokens``, or :data:`AUTO_NEW_TOKENS` where it is 0 ("auto")."""
    return profile.eval.max_new_tokens or AUTO_NEW_TOKENS


def chapter_work(chapter: str, profile: Profile) -> list[Work]:
    """The work ``chapter`` adds under ``profile`` (models already trained by earlier chapters are reused)."""
    check_choice("chapter", chapter, CHAPTERS)
    e, generated = profile.eval, new_tokens(profile)
    slm = _slm(profile)
    if chapter == "01_data":
        return [Work("annotate synthbio + vitalwiki with spaCy", spacy_tokens=synthbio_tokens(profile) + vitalwiki_tokens(profile))]
    if chapter == "02_loss_is_not_enough":
        return [training("train synthbio standard", profile), Work("score 44K tokens", flops=2 * slm[0] * 44_000)]
    if chapter == "03_training":
        runs = len(CH3_METHODS) - 1 + len(CH3_SEEDED) * (CH3_SEEDS - 1)  # standard at the first seed: chapter 2
        train_tokens = synthbio_tokens(profile) * (1 - profile.data.val_fraction)
        return [training("train the other synthbio methods and seeds", profile, models=runs),
                training("train the synthbio LM helper (rho's reference)", profile, helper=True),
                Work("rho reference losses over the train split", flops=2 * _helper(profile)[0] * train_tokens)]
    if chapter == "04_cascade":
        sweep_rates = len([r for r in e.sweep_rates if r < 1.0])
        per_helper = len(CH4_METHODS) * (sweep_rates + 1) + 1  # sweeps, budget runs, helper alone
        return [decoding("document-helper cascades", per_helper * e.n_subjects, generated, [slm]),
                decoding("LM-helper cascades", per_helper * e.n_subjects, generated, [slm, _helper(profile)])]
    if chapter == "05_what_the_slm_keeps":
        return [Work("teacher-forced leakage over the val split", flops=len(CH3_METHODS) * 2 * slm[0] * synthbio_tokens(profile) * profile.data.val_fraction)]
    if chapter == "06_real_wikipedia":
        full = full_scale_wikipedia(profile)
        n_subjects = e.n_subjects if full else min(CH6_SMALL["n_subjects"], e.n_subjects)
        wiki_tokens = e.max_new_tokens if full else min(CH6_SMALL["max_new_tokens"], e.max_new_tokens or CH6_SMALL["max_new_tokens"])
        helper = HUB_HELPERS.get(profile.hub_helper, HUB_HELPERS["meta-llama/Llama-3.2-1B-Instruct"]) if full else SMOLLM2
        lm_runs = len(CH6_METHODS) + 2  # budget runs, one extra sweep rate, the helper alone
        return [training("train vitalwiki methods + reference seed", profile, models=len(CH6_METHODS) + 1),
                decoding("document-oracle and retrieval sweeps + leakage", len(CH6_METHODS) * (2 * CH6_SMALL["rates"] + 1) * n_subjects, wiki_tokens, [slm]),
                decoding("LM-helper cascades", lm_runs * n_subjects, wiki_tokens, [slm, (helper["params"], helper["layers"])])]
    if chapter == "07_scaling":
        return scaling_work(profile)
    return []


def scaling_work(profile: Profile) -> list[Work]:
    """Chapter 7: the size ladder below the profile's SLM (the largest size is chapter 3's runs), the call-fraction
    sweep, ``lacy_adaptive`` and the deferral gate, and their cascades with the LM helper."""
    from lacy.evaluate.scaling import sized_profiles

    e = profile.eval
    sized = sized_profiles(profile)
    swept = [f for f in CH7_FRACTIONS if f != profile.train.call_fraction]  # LaCy's own fraction is the ladder's lacy run
    gate = profile.override({"model.call_head": "gate"})
    runs = [(sized[i], 2 * (CH7_END_SEEDS if i == 0 else 1)) for i in range(len(sized) - 1)]  # standard + lacy per seed
    runs += [(sized[i], len(swept)) for i in CH7_FRACTION_SIZES] + [(profile, 1), (gate, 1)]  # lacy_adaptive, gate
    trained = Work(f"train {sum(n for _, n in runs)} models: size ladder, call fractions, lacy_adaptive, gate",
                   flops=sum(training("", p, models=n).flops for p, n in runs))
    slm, helper = _slm(profile), _helper(profile)
    # The models that read a cascade's tokens, per ladder size; joined over several sizes, one generation
    # stands for one through each of those sizes' cascades.
    with_helper = [[_slm(p), helper] for p in sized]
    n, generated = e.n_subjects, new_tokens(profile)
    return [trained,
            decoding("call-fraction budget runs", (1 + len(CH7_FRACTIONS)) * n, generated,
                     [m for i in CH7_FRACTION_SIZES for m in with_helper[i]]),
            decoding("lacy_adaptive, lacy, standard at the budget", 3 * n, generated, [slm, helper]),
            decoding("gate vs token: sweep, helper alone, budget", (2 * len(CH7_GATE_RATES) + 1 + 2) * n, generated, [slm, helper]),
            decoding("frontier: lacy at rate 0 and the budget", 2 * n, generated, [m for models in with_helper for m in models]),
            decoding("frontier: helper alone", n, generated, with_helper[0])]


def card_peak(device_name: str) -> tuple[float, str] | None:
    """The published peak of a CUDA device from its name (``torch.cuda.get_device_name``), or None if unknown.

    The longest matching card name wins ("NVIDIA A100-SXM4-80GB" is an A100, not an A10)."""
    matches = [card for card in CARD_PEAKS if card.lower() in device_name.lower()]
    return CARD_PEAKS[max(matches, key=len)] if matches else None


def profile_for_device() -> str:
    """The profile sized for this machine: ``gpu`` on an A100/H100-class card (published peak >= 300
    TFLOP/s), ``colab`` on any other CUDA GPU (a T4: the colab profile's budget), else ``cpu``.
    For the Colab setup cell, which runs on whatever card the session got."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    peak = card_peak(torch.cuda.get_device_name(0))
    return "gpu" if peak is not None and peak[0] >= 300e12 else "colab"


def machine_peak() -> tuple[float, str]:
    """This machine's measured GEMM peak in the dtype ``precision=auto`` trains in here."""
    import torch

    from lacy.bench.peak import gemm_peak_flops
    from lacy.train.model import cpu_supports_bf16

    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return gemm_peak_flops(dtype, size=4096), str(dtype).removeprefix("torch.")
    dtype = torch.bfloat16 if cpu_supports_bf16() else torch.float32
    return gemm_peak_flops(dtype, size=1024), str(dtype).removeprefix("torch.")


def plan(profile: Profile, this_machine_peak: float | None = None, chapters: tuple[str, ...] = CHAPTERS) -> list[ChapterPlan]:
    """Per chapter: its work and expected seconds on T4 / A100 / H100 (and on this machine, given its peak)."""
    peaks = {name: peak for name, (peak, _) in DEVICE_PEAKS.items()}
    if this_machine_peak is not None:
        peaks["this machine"] = this_machine_peak
    plans = []
    for chapter in chapters:
        work = chapter_work(chapter, profile)
        processes = resolve_processes(profile.data.annotate_processes)  # "auto": this machine's cores
        seconds = {device: sum(w.seconds(peak, processes) for w in work) for device, peak in peaks.items()}
        plans.append(ChapterPlan(chapter, profile.name, work, seconds))
    return plans


def chapter_estimate(chapter: str, profile: str | Profile, measure: bool = True) -> ChapterPlan:
    """The estimate a chapter prints in its first cell: ``print(lacy.plan.chapter_estimate("03_training", profile))``."""
    settings = get_profile(profile) if isinstance(profile, str) else profile
    peak = machine_peak()[0] if measure else None
    return plan(settings, peak, chapters=(chapter,))[0]


def plan_table(plans: list[ChapterPlan]) -> list[dict[str, Any]]:
    """One row per chapter plus a ``book`` total: FLOPs and hours per device."""
    rows = [{"chapter": p.chapter, "flops": p.flops, **{f"{d} h": s / 3600 for d, s in p.seconds.items()}} for p in plans]
    total = {"chapter": "book", "flops": sum(r["flops"] for r in rows)}
    total.update({key: sum(r[key] for r in rows) for key in rows[0] if key.endswith(" h")})
    return rows + [total]


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render(plans: list[ChapterPlan], machine_dtype: str | None = None) -> str:
    """A fixed-width table of :func:`plan_table` with the assumptions it rests on."""
    rows = plan_table(plans)
    devices = [key.removesuffix(" h") for key in rows[0] if key.endswith(" h")]
    header = f"{'chapter':<24}{'FLOPs':>10}" + "".join(f"{d:>14}" for d in devices)
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['chapter']:<24}{row['flops']:>10.2e}" + "".join(f"{format_seconds(row[d + ' h'] * 3600):>14}" for d in devices))
    peaks = ", ".join(f"{name} {peak / 1e12:.0f} TFLOP/s {dtype}" for name, (peak, dtype) in DEVICE_PEAKS.items())
    lines.append(f"\nPeaks (published, dense): {peaks}; MFU assumed {ASSUMED_MFU:.0%}; decoding floored at "
                 f"{DECODE_SECONDS_PER_LAYER * 1e3:.2f} ms per layer per token; spaCy {SPACY_TOKENS_PER_S:,.0f} tokens/s per process.")
    if machine_dtype:
        lines.append(f"This machine: measured GEMM peak in {machine_dtype}.")
    return "\n".join(lines)
