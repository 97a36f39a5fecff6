"""The document type shared by every corpus: text plus gold fact spans where they are known."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FactSpan:
    """A gold fact in a document: ``text[start:end]`` states ``attribute`` of the subject."""

    start: int
    end: int
    attribute: str


@dataclass(frozen=True)
class Document:
    """One training/evaluation document.

    ``subject`` is whom the document is about (synthbio: the person's full name; vitalwiki: the
    article title). ``facts`` holds gold spans (synthbio only; empty for vitalwiki).
    """

    doc_id: int
    text: str
    subject: str
    facts: tuple[FactSpan, ...] = field(default=())
    split: str = "train"
