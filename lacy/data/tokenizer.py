"""A byte-level BPE tokenizer with the ``<CALL>`` token, trained with the ``tokenizers`` library.

The paper uses a 32K SentencePiece vocabulary plus ``<CALL>`` (§4); we train a smaller byte-level BPE
on the training split (vocabulary size is a profile setting). Saved and loaded as a ``transformers``
fast tokenizer, so models export with ``save_pretrained`` and character offsets stay available for
aligning spaCy annotations to subword tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from lacy import BOS_TOKEN, CALL_TOKEN, EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, UNK_TOKEN


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``; special tokens (pad, bos, eos, unk, ``<CALL>``) get ids 0..4.

    Deterministic: the same texts in the same order give the same vocabulary.
    """
    tok = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a raw ``tokenizers.Tokenizer`` as a transformers fast tokenizer with lacy's specials."""
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        additional_special_tokens=[CALL_TOKEN],
    )
    return fast


def call_token_id(tokenizer: PreTrainedTokenizerFast) -> int:
    """The id of ``<CALL>``; a clear error when the tokenizer has none."""
    call_id = tokenizer.convert_tokens_to_ids(CALL_TOKEN)
    if call_id is None or call_id == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no {CALL_TOKEN} token; train it with lacy.data.tokenizer.train_tokenizer")
    return int(call_id)


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | Path) -> None:
    tokenizer.save_pretrained(str(directory))


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by :func:`save_tokenizer` (or with a model's ``save_pretrained``)."""
    path = Path(directory)
    if not (path / "tokenizer.json").exists():
        raise FileNotFoundError(f"no tokenizer.json in {path}; expected a folder written by save_pretrained")
    return PreTrainedTokenizerFast.from_pretrained(str(path))


def encode_with_offsets(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """Token ids and character offsets ``(start, end)`` for each text, without special tokens."""
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], [[tuple(o) for o in offs] for offs in enc["offset_mapping"]]
