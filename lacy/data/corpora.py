"""One object per corpus: everything that differs between ``synthbio`` and ``vitalwiki``, in one place.

Training, caching and evaluation ask the corpus, never test its name:

- :meth:`Corpus.documents` and :meth:`Corpus.world`: the documents (with splits) and, for the
  synthetic world, the :class:`~lacy.data.synthbio.World` they come from (``None`` otherwise);
  :meth:`Corpus.world_config` is the part of a profile that determines the documents' world;
- :meth:`Corpus.subject_candidates` and :meth:`Corpus.subject_prompt`: whom FactScore asks about,
  with each candidate's exposure in the corpus and the prompt that opens its biography;
- :meth:`Corpus.references`: subject -> reference texts (what the document helper looks up);
- :attr:`Corpus.judge`: the name of the acceptability judge of the ``judge`` method
  (:data:`lacy.train.selection.JUDGES`): exact from the generator's grammar, or a reference model;
- :attr:`Corpus.factscore`: the FactScore variant, ``"exact"`` (against the world's knowledge base)
  or ``"reference"`` (support in the subject's reference text).

:func:`get_corpus` is the only place a corpus name is decoded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from lacy.data.corpus import Document
from lacy.profiles import CORPORA, Profile, check_choice

if TYPE_CHECKING:
    from lacy.data.synthbio import World


FREQUENT_FRACTION = 0.1
"""Share of candidate subjects, by exposure, counted as "frequent" (the top decile); the rest are "rare"."""


def frequency_labels(exposures: Sequence[float]) -> list[str]:
    """"frequent" for the top decile of ``exposures`` (at least one item; ties by position), else "rare"."""
    order = sorted(range(len(exposures)), key=lambda i: (-exposures[i], i))
    n_frequent = max(1, math.ceil(FREQUENT_FRACTION * len(exposures))) if len(exposures) else 0
    labels = ["rare"] * len(exposures)
    for i in order[:n_frequent]:
        labels[i] = "frequent"
    return labels


@dataclass(frozen=True)
class SubjectCandidate:
    """A possible FactScore subject: ``exposure`` ranks how much the corpus shows them (number of
    biographies, or words of the article's summary); ``n_docs`` counts their documents."""

    name: str
    exposure: float
    n_docs: int


class Corpus:
    """What training, caching and evaluation need to know about one corpus (see the module docstring)."""

    name: ClassVar[str]
    judge: ClassVar[str]
    factscore: ClassVar[str]
    prompt_needs_nlp: ClassVar[bool]
    """Whether :meth:`subject_prompt` needs a spaCy pipeline (else ``nlp`` may be None)."""
    seed_draws_split: ClassVar[bool]
    """Whether the training seed draws the train/val split (vitalwiki); synthbio's split is fixed by
    ``world.seed``, so runs with several training seeds share one corpus and one cache."""

    def world(self, profile: Profile, seed: int) -> World | None:
        return None

    def world_config(self, profile: Profile) -> dict[str, Any] | None:
        return None

    def documents(self, profile: Profile, seed: int, world: World | None = None) -> tuple[list[Document], World | None]:
        """All documents (both splits) and the world they come from (``world`` is reused when given)."""
        raise NotImplementedError

    def subject_candidates(self, documents: list[Document], world: World | None) -> list[SubjectCandidate]:
        raise NotImplementedError

    def subject_prompt(self, name: str, nlp: Any = None) -> str:
        raise NotImplementedError

    def exposure_groups(self, candidates: list[SubjectCandidate], world: World | None) -> tuple[list[str], tuple[str, ...]]:
        """Each candidate's exposure group and the groups, most exposed first (subjects are spread evenly
        over them): "frequent" (top decile by exposure, :func:`frequency_labels`) and "rare"."""
        return frequency_labels([c.exposure for c in candidates]), ("frequent", "rare")

    def references(self, documents: list[Document]) -> dict[str, list[str]]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"get_corpus({self.name!r})"


class SynthBio(Corpus):
    """The synthetic biography world (:mod:`lacy.data.synthbio`): exact judge and exact FactScore."""

    name, judge, factscore, prompt_needs_nlp, seed_draws_split = "synthbio", "exact", "exact", False, False

    def world(self, profile: Profile, seed: int) -> World:
        """The world of ``profile.world`` (its own ``world.seed``; the training ``seed`` does not change it)."""
        from lacy.data.synthbio import World

        return World.from_config(profile.world)

    def world_config(self, profile: Profile) -> dict[str, Any]:
        return asdict(profile.world)

    def documents(self, profile: Profile, seed: int, world: World | None = None) -> tuple[list[Document], World]:
        world = world if world is not None else self.world(profile, seed)
        return world.documents(val_fraction=profile.data.val_fraction), world

    def subject_candidates(self, documents: list[Document], world: World | None) -> list[SubjectCandidate]:
        """Every person of the world; exposure = number of biographies."""
        if world is None:
            raise ValueError("synthbio subjects need the World: pass the one returned by documents()")
        return [SubjectCandidate(p.full_name, p.n_docs, p.n_docs) for p in world.people]

    def subject_prompt(self, name: str, nlp: Any = None) -> str:
        """The person's full name."""
        return name

    def exposure_groups(self, candidates: list[SubjectCandidate], world: World | None) -> tuple[list[str], tuple[str, ...]]:
        """The world's exposure tiers (famous … obscure), most exposed first."""
        if world is None:
            raise ValueError("synthbio exposure tiers need the World: pass the one returned by documents()")
        return [world.person(c.name).tier for c in candidates], tuple(world.tiers)

    def references(self, documents: list[Document]) -> dict[str, list[str]]:
        """The person's training-split biographies (a person seen only in the val split has none)."""
        references: dict[str, list[str]] = {}
        for doc in documents:
            if doc.split == "train":
                references.setdefault(doc.subject, []).append(doc.text)
        return references


class VitalWiki(Corpus):
    """Wikipedia lead sections (:mod:`lacy.data.vitalwiki`): a reference-model judge and FactScore
    against the article's own summary."""

    name, judge, factscore, prompt_needs_nlp, seed_draws_split = "vitalwiki", "reference", "reference", True, True

    def documents(self, profile: Profile, seed: int, world: World | None = None) -> tuple[list[Document], None]:
        from lacy.data import vitalwiki

        docs = vitalwiki.documents(max_docs=profile.data.vitalwiki_max_docs, val_fraction=profile.data.val_fraction, seed=seed)
        return docs, None

    def subject_candidates(self, documents: list[Document], world: World | None) -> list[SubjectCandidate]:
        """Every People article; exposure = the summary's length in words (one document each)."""
        from lacy.data import vitalwiki

        return [SubjectCandidate(a.title, len(a.summary.split()), 1) for a in vitalwiki.people()]

    def subject_prompt(self, name: str, nlp: Any = None) -> str:
        """The summary's opening words up to the first verb (:func:`lacy.data.vitalwiki.prompt_for`)."""
        from lacy.data import vitalwiki

        if nlp is None:
            raise ValueError("vitalwiki prompts need a spaCy pipeline: pass nlp=lacy.data.annotate.load_spacy(...)")
        article = next((a for a in vitalwiki.people() if a.title == name), None)
        if article is None:
            raise ValueError(f"{name!r} is not a People article of vitalwiki")
        return vitalwiki.prompt_for(article, nlp)

    def references(self, documents: list[Document]) -> dict[str, list[str]]:
        """Every article's summary (the article is the knowledge source)."""
        from lacy.data import vitalwiki

        return {title: [summary] for title, summary in vitalwiki.summaries().items()}


_CORPORA: dict[str, Corpus] = {c.name: c for c in (SynthBio(), VitalWiki())}


def get_corpus(name: str) -> Corpus:
    """The :class:`Corpus` called ``name``; a ConfigError lists the valid names otherwise."""
    return _CORPORA[check_choice("corpus", name, CORPORA)]
