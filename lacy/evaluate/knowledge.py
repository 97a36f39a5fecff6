"""The knowledge curve: which synthbio facts the SLM alone has learned, against how often it saw them.

The paper's question is which facts a small model *can* learn and which it should delegate. On
synthbio this is measured directly: for every person and attribute, the SLM alone (``<CALL>``
suppressed) continues the opening of a fact template ("Ada Smith was born on") greedily, and the
fact counts as known when the continuation is exactly the whole attribute value ("March 3, 1972",
not "March 3, 1971" nor a prefix of it). Recall per exposure tier, and recall against the number of
training biographies (log axis), are the book's picture of the learn / delegate boundary.

Prompts are batched with left padding and decoded with Hugging Face ``generate`` (greedy, KV cache).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd
import torch

from lacy.data.synthbio_grammar import ATTRIBUTES, FACT_TEMPLATES

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lacy.data.synthbio import Person, World
    from lacy.profiles import Profile

PROMPT_TEMPLATES: dict[str, int] = {
    "birth_date": 0,  # "{subject} was born on {value}."
    "birth_city": 0,  # "{subject} was born in {value}."
    "university": 0,  # "{subject} studied at {value}."
    "major": 1,  # "{subject} majored in {value}." ("studied" alone would also open the university)
    "employer": 0,  # "{subject} works for {value}."
    "employer_city": 0,  # "{subject} works in {value}."
}
"""Per attribute, the fact template whose opening prompts for it: full name first, value last, and an
opening that only this attribute continues."""

_CONTINUES_VALUE = re.compile(r"[\w'-]")


def knowledge_prompt(person: "Person", attribute: str) -> str:
    """The opening of ``attribute``'s prompt template with ``person``'s full name: "Ada Smith was born on"."""
    if attribute not in PROMPT_TEMPLATES:
        raise KeyError(f"unknown attribute {attribute!r}; valid attributes: {', '.join(ATTRIBUTES)}")
    template = FACT_TEMPLATES[ATTRIBUTES.index(attribute)][PROMPT_TEMPLATES[attribute]]
    return (template.literals[0] + person.full_name + template.literals[1]).rstrip()


def states_value(continuation: str, value: str) -> bool:
    """Whether ``continuation`` opens with exactly the whole ``value`` (after leading spaces), not a
    longer word or value ("Fine Arts" does not state "Fine Art"; "Fine Art." does)."""
    text = continuation.lstrip()
    return text.startswith(value) and not _CONTINUES_VALUE.match(text[len(value) : len(value) + 1] or " ")


def training_exposures(world: "World", val_fraction: float) -> dict[str, int]:
    """Full name -> number of the person's biographies in the training split."""
    counts = {p.full_name: 0 for p in world.people}
    for doc in world.documents(val_fraction=val_fraction):
        if doc.split == "train":
            counts[doc.subject] += 1
    return counts


def pick_people(world: "World", per_tier: int = 0, seed: int = 0) -> list["Person"]:
    """All people (``per_tier=0``) or a seeded sample of ``per_tier`` people per tier, in world order."""
    if per_tier < 0:
        raise ValueError(f"per_tier must be >= 0 (0 = everyone), got {per_tier}")
    if per_tier == 0:
        return list(world.people)
    rng = random.Random(f"knowledge/{seed}")
    chosen = {p.pid for name in world.tiers for p in rng.sample(world.tier(name), min(per_tier, len(world.tier(name))))}
    return [p for p in world.people if p.pid in chosen]


@torch.no_grad()
def greedy_continuations(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", prompts: Sequence[str],
                         max_new_tokens: int, batch_size: int = 256, suppress: Sequence[int] = ()) -> list[str]:
    """Greedy continuations of ``prompts`` (each as a document start: ``<bos>`` + prompt), batched with
    left padding; the token ids in ``suppress`` (``<CALL>``) are never generated."""
    from lacy.cascade.helpers import encode_text

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    outputs: list[str] = []
    for begin in range(0, len(prompts), batch_size):
        encoded = [encode_text(tokenizer, p) for p in prompts[begin : begin + batch_size]]
        width = max(map(len, encoded))
        input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        generated = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention.to(device), max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
            suppress_tokens=list(suppress) or None,
        )  # fmt: skip
        outputs += tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
    return outputs


def knowledge_frame(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", world: "World",
                    people: Sequence["Person"] | None = None, *, val_fraction: float = 0.05,
                    batch_size: int = 256) -> pd.DataFrame:
    """One row per (person, attribute): ``person, tier, exposures, n_docs, attribute, value, generated,
    correct``, the SLM alone prompted greedily with :func:`knowledge_prompt`.

    ``exposures`` counts the person's training-split biographies (``val_fraction`` as in the data
    cache); ``n_docs`` all their biographies. ``correct`` is :func:`states_value` of the continuation.
    """
    from lacy.data.tokenizer import call_token_id

    people = list(world.people if people is None else people)
    exposures = training_exposures(world, val_fraction)
    rows = [(p, a, knowledge_prompt(p, a)) for p in people for a in ATTRIBUTES]
    longest = max((len(tokenizer(" " + p.value(a) + ".", add_special_tokens=False)["input_ids"]) for p, a, _ in rows),
                  default=1)
    texts = greedy_continuations(model, tokenizer, [prompt for _, _, prompt in rows], max_new_tokens=longest + 1,
                                 batch_size=batch_size, suppress=[call_token_id(tokenizer)])
    return pd.DataFrame(
        {
            "person": [p.full_name for p, _, _ in rows],
            "tier": [p.tier for p, _, _ in rows],
            "exposures": [exposures[p.full_name] for p, _, _ in rows],
            "n_docs": [p.n_docs for p, _, _ in rows],
            "attribute": [a for _, a, _ in rows],
            "value": [p.value(a) for p, a, _ in rows],
            "generated": texts,
            "correct": [states_value(text, p.value(a)) for (p, a, _), text in zip(rows, texts)],
        }
    )


def knowledge_summary(frame: pd.DataFrame, tiers: Sequence[str] | None = None) -> dict[str, Any]:
    """``{"tiers": [names, most exposed first], "by_tier": {name: {"recall", "exposures_median",
    "n_people", "n_facts", "by_attribute": {attribute: recall}}}}`` from a :func:`knowledge_frame`.

    ``recall`` is the share of (person, attribute) pairs stated exactly; ``exposures_median`` the
    median training biographies per person of the tier. ``tiers`` defaults to the frame's order.
    """
    tiers = list(dict.fromkeys(frame["tier"])) if tiers is None else [t for t in tiers if t in set(frame["tier"])]
    by_tier = {}
    for name in tiers:
        rows = frame[frame["tier"] == name]
        per_person = rows.drop_duplicates("person")
        by_tier[name] = {
            "recall": float(rows["correct"].mean()),
            "exposures_median": float(per_person["exposures"].median()),
            "n_people": int(len(per_person)),
            "n_facts": int(len(rows)),
            "by_attribute": {a: float(g["correct"].mean()) for a, g in rows.groupby("attribute", sort=False)},
        }
    return {"tiers": tiers, "by_tier": by_tier}


def knowledge(model_dir: str | Path, profile: "Profile", *, per_tier: int = 0, seed: int = 0,
              batch_size: int = 256, device: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The knowledge frame and per-tier summary of a trained model on ``profile``'s synthbio world.

    ``per_tier`` > 0 evaluates a seeded sample (``seed``) of that many people per tier; 0 = everyone.
    """
    from lacy.data.synthbio import World
    from lacy.train.model import load_model

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model(model_dir, device=device)
    world = World.from_config(profile.world)
    frame = knowledge_frame(model, tokenizer, world, pick_people(world, per_tier, seed),
                            val_fraction=profile.data.val_fraction, batch_size=batch_size)
    return frame, knowledge_summary(frame, world.tiers)
