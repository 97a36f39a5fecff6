"""The small language model (SLM): construction, precision, export and loading.

The paper trains GPT-2 style SLMs (334M, 1.3B; §4). We default to a Llama-style decoder from
``transformers`` (RMSNorm, SwiGLU, rotary positions) with SDPA attention and tied embeddings: on CPU
with bf16 autocast it trains ~2.2x faster than GPT2LMHeadModel in fp32 at the same size (measured on
a 2-core CPU with bf16 units; without them ``precision="auto"`` falls back to fp32). ``arch="gpt2"``
builds the paper's architecture family. Both are plain Hugging Face models, so checkpoints export
with ``save_pretrained`` and load anywhere ``AutoModelForCausalLM`` does.

``model.call_head=gate`` (the Co-LLM-style ablation, :mod:`lacy.train.objective`) replaces the output
layer by a :class:`GatedLMHead`: the same tied weights plus a ``Linear(d_model, 1)`` deferral gate whose
logit becomes the ``<CALL>`` column. The gate is exported next to the weights (``call_gate.safetensors``,
and ``lacy_call_head: "gate"`` in ``config.json``); :func:`load_model` puts it back. Loaded by plain
``AutoModelForCausalLM``, such a folder is the LM without its gate.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from lacy.data.tokenizer import call_token_id, load_tokenizer
from lacy.io import CHECKSUM_FILE, make_temp_dir, set_default_mode, verify_checksums, write_checksums
from lacy.profiles import ARCHITECTURES, CALL_HEADS, ModelConfig, check_choice
from lacy.train.objective import gated_call_logits

WEIGHTS_FILE = "model.safetensors"
GATE_FILE = "call_gate.safetensors"
GATE_CONFIG_KEY = "lacy_call_head"
"""``config.json`` field saying which ``<CALL>`` head a model has (absent: ``"token"``)."""


class GatedLMHead(torch.nn.Linear):
    """The output layer of a ``model.call_head=gate`` model: the LM's (tied) output weights and a
    deferral gate ``call_gate = Linear(d_model, 1)`` on the final hidden state, whose logit ``g`` is
    written into the ``<CALL>`` column so that ``P(<CALL>) = sigmoid(g)`` under the full softmax
    (:func:`lacy.train.objective.gated_call_logits`). An ``nn.Linear`` itself, so Hugging Face's
    weight tying and ``get_output_embeddings`` keep working."""

    def __init__(self, in_features: int, out_features: int, call_id: int, bias: bool = False) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.call_id = call_id
        self.call_gate = torch.nn.Linear(in_features, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return gated_call_logits(super().forward(hidden), self.call_gate(hidden).squeeze(-1), self.call_id)


def attach_call_gate(model: PreTrainedModel, call_id: int) -> GatedLMHead:
    """Replace ``model``'s output layer by a :class:`GatedLMHead` sharing its weights; returns the head.

    The gate is freshly initialised from the global RNG (``nn.Linear``'s default); the config records
    ``lacy_call_head = "gate"`` so that :func:`export_model` and :func:`load_model` know of it.
    """
    old = model.get_output_embeddings()
    head = GatedLMHead(old.in_features, old.out_features, call_id, bias=old.bias is not None)
    head.weight = old.weight
    if old.bias is not None:
        head.bias = old.bias
    model.set_output_embeddings(head.to(old.weight.device))
    setattr(model.config, GATE_CONFIG_KEY, "gate")
    return head


def call_gate(model: PreTrainedModel) -> GatedLMHead | None:
    """The model's :class:`GatedLMHead`, or None for the in-vocabulary ``<CALL>`` token."""
    head = model.get_output_embeddings()
    return head if isinstance(head, GatedLMHead) else None


def build_slm(
    cfg: ModelConfig,
    vocab_size: int,
    max_positions: int,
    pad_id: int,
    bos_id: int,
    eos_id: int,
    seed: int,
    attn_implementation: str = "auto",
    call_id: int | None = None,
) -> PreTrainedModel:
    """A freshly initialised causal LM sized by ``cfg``; the same seed gives the same weights.

    Tied input/output embeddings and no dropout (tiny models trained for few epochs do not need it).
    ``attn_implementation="auto"``: see :func:`resolve_attention`. ``cfg.call_head="gate"`` adds a
    deferral gate (:func:`attach_call_gate`) and needs ``call_id``, the tokenizer's ``<CALL>`` id.
    The global RNG is left untouched.
    """
    check_choice("model.arch", cfg.arch, ARCHITECTURES)
    check_choice("model.call_head", cfg.call_head, CALL_HEADS)
    if cfg.call_head == "gate" and call_id is None:
        raise ValueError("model.call_head=gate needs the tokenizer's <CALL> id: pass call_id=... to build_slm, "
                         "or use --set model.call_head=token")
    attn_implementation = resolve_attention(attn_implementation)
    if cfg.arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
            num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_head,
            max_position_embeddings=max_positions, tie_word_embeddings=True,
            pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id, attn_implementation=attn_implementation,
        )
        model_class = LlamaForCausalLM
    else:
        config = GPT2Config(
            vocab_size=vocab_size, n_positions=max_positions, n_embd=cfg.d_model, n_layer=cfg.n_layer,
            n_head=cfg.n_head, n_inner=cfg.d_ff, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            tie_word_embeddings=True, pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id,
            attn_implementation=attn_implementation,
        )
        model_class = GPT2LMHeadModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
        if cfg.call_head == "gate":
            attach_call_gate(model, call_id)
        return model


def resolve_attention(requested: str) -> str:
    """``"auto"``: SDPA on a GPU, eager attention on CPU.

    On CPU, PyTorch's SDPA picks its flash kernel for bf16, whose backward is slow at our sizes:
    measured 42 ms vs 13 ms (eager) for forward + backward of one [32, 4, 128, 32] attention.
    """
    if requested != "auto":
        return requested
    return "sdpa" if torch.cuda.is_available() else "eager"


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matmul (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(requested: str, accelerator: str) -> str:
    """Lightning precision for ``train.precision``; ``"auto"`` picks the fast path for the hardware.

    ``accelerator`` is the resolved one (``"cpu"`` or ``"gpu"``/``"cuda"``). Auto: ``"bf16-mixed"`` on a
    GPU with bf16 (else ``"16-mixed"``) and on a CPU with native bf16 (else ``"32-true"``).
    """
    if requested != "auto":
        return "32-true" if requested == "32" else requested
    if accelerator in ("gpu", "cuda"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"


AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (:func:`resolve_precision`); None means no autocast (fp32)."""
    return AUTOCAST_DTYPES.get(precision)


def export_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, directory: str | Path) -> Path:
    """Write ``model`` (safetensors), ``tokenizer`` and the SHA-256 of every file (``SHA256SUMS``,
    checked by :func:`load_model`) to ``directory`` atomically. A gated model's gate goes to
    ``call_gate.safetensors``; ``model.safetensors`` holds the plain LM.

    Everything is written to a temporary sibling folder first and renamed into place, so readers
    never see a half-written model; an existing folder is replaced.
    """
    directory = Path(directory)
    staging = make_temp_dir(directory.parent, prefix=f".{directory.name}.", suffix="")
    try:
        gate = call_gate(model)
        if gate is None:
            model.save_pretrained(staging, safe_serialization=True)
        else:
            lm_state = {k: v for k, v in model.state_dict().items() if ".call_gate." not in k}
            model.save_pretrained(staging, safe_serialization=True, state_dict=lm_state)
            save_file({k: v.detach().contiguous().cpu() for k, v in gate.call_gate.state_dict().items()},
                      str(staging / GATE_FILE))
        tokenizer.save_pretrained(staging)
        files = [p for p in staging.iterdir() if p.is_file()]
        for file in files:  # safetensors writes 0600: give colleagues the access the umask allows
            set_default_mode(file)
        write_checksums(staging, [p.name for p in files])
        if directory.exists():
            retired = make_temp_dir(directory.parent, prefix=f".{directory.name}.old.", suffix="")
            os.replace(directory, retired / directory.name)
            os.replace(staging, directory)
            shutil.rmtree(retired)
        else:
            os.replace(staging, directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return directory


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load a model and its tokenizer written by :func:`export_model`, in eval mode on ``device``.

    The files are first checked against the hashes recorded at export (``lacy.io.IntegrityError``
    when one differs); a folder without them (written by another tool) loads unchecked, with a warning.
    A model exported with a deferral gate gets it back (:class:`GatedLMHead`); its gate file must be
    there and intact.
    """
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"no model in {directory} (config.json missing); train one with `lacy train` or "
            "lacy.train.run.train, which writes <run>/model/")
    check_weights(directory)
    tokenizer = load_tokenizer(directory)
    call_token_id(tokenizer)  # a clear error when the tokenizer lacks <CALL>
    model = AutoModelForCausalLM.from_pretrained(directory, use_safetensors=True)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise ValueError(f"model in {directory} has {model.get_input_embeddings().num_embeddings} embeddings "
                         f"but its tokenizer has {len(tokenizer)} tokens; re-export it with export_model")
    call_head = getattr(model.config, GATE_CONFIG_KEY, "token")
    if call_head not in CALL_HEADS:
        raise ValueError(f"{directory / 'config.json'} has {GATE_CONFIG_KEY}={call_head!r}; valid: {', '.join(CALL_HEADS)}. "
                         "Re-export the model with export_model")
    if call_head == "gate":
        _load_call_gate(model, tokenizer, directory)
    return model.to(device).eval(), tokenizer


def _load_call_gate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, directory: Path) -> None:
    """Put back the deferral gate of a model exported with one; refuse a missing or unreadable gate file."""
    file = directory / GATE_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{directory} holds a model.call_head=gate model but no {GATE_FILE}: the gate is lost; "
                                "re-export the model with export_model (or retrain it)")
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{file} is not a readable safetensors file ({err}); re-export the model with export_model") from None
    with torch.random.fork_rng(devices=[]):  # the gate's throwaway initialisation leaves the global RNG alone
        head = attach_call_gate(model, call_token_id(tokenizer))
    expected = {k: tuple(v.shape) for k, v in head.call_gate.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        raise ValueError(f"{file} holds {found}, expected the gate of this model {expected}; "
                         "re-export the model with export_model")
    head.call_gate.load_state_dict(state)


def check_weights(directory: str | Path) -> bool:
    """Check a model folder's files against the hashes recorded at export; see :func:`load_model`.

    Returns whether the folder carried hashes. Raises ``FileNotFoundError`` when it has no
    ``model.safetensors`` and ``lacy.io.IntegrityError`` when a file differs from its hash.
    """
    directory = Path(directory)
    if not (directory / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"no {WEIGHTS_FILE} in {directory}: the folder has no weights; "
                                "export a model there with `lacy train` (<run>/model) or save_pretrained")
    if verify_checksums(directory, required=(WEIGHTS_FILE,)):
        return True
    print(f"[lacy] warning: {directory} has no {CHECKSUM_FILE}; its weights cannot be checked for corruption",
          file=sys.stderr)
    return False
