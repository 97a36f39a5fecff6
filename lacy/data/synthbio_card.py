"""The synthbio dataset card: what the world contains and how often each tier is written about."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from lacy.data.synthbio_grammar import ATTRIBUTES, REMARKS, TEMPLATES
from lacy.data.synthbio_vocab import (
    BIRTH_YEARS,
    EMPLOYERS,
    FEMALE_FIRST_NAMES,
    MAJORS,
    MALE_FIRST_NAMES,
    SURNAMES,
    TOWNS,
    UNIVERSITIES,
)

if TYPE_CHECKING:
    from lacy.data.synthbio import World


def _quantiles(counts: np.ndarray) -> dict[str, float]:
    quantiles = {f"p{q}": float(np.percentile(counts, q)) for q in (0, 25, 50, 75, 90, 99, 100)} if len(counts) else {}
    return {**quantiles, "mean": float(counts.mean()) if len(counts) else 0.0}


def world_card(world: "World") -> dict[str, Any]:
    """Sizes, vocabularies, templates, remarks and exposures (overall and per tier) of ``world``."""
    n_docs = np.array([p.n_docs for p in world.people], dtype=np.int64)
    total = int(n_docs.sum())
    top = max(1, len(world.people) // 100)
    tiers = {}
    for name in world.tiers:
        counts = np.array([p.n_docs for p in world.tier(name)], dtype=np.int64)
        tiers[name or "(none)"] = {
            "n_people": len(counts),
            "max_docs": int(counts.max()),
            "min_docs": int(counts.min()),
            "median_docs": float(np.median(counts)),
            "documents": int(counts.sum()),
            "share_of_documents": float(counts.sum() / total) if total else 0.0,
        }
    return {
        "name": "synthbio",
        "seed": world.seed,
        "n_people": len(world.people),
        "n_documents": total,
        "attributes": list(ATTRIBUTES),
        "vocabulary_sizes": {
            "female_first_names": len(FEMALE_FIRST_NAMES),
            "male_first_names": len(MALE_FIRST_NAMES),
            "surnames": len(SURNAMES),
            "birth_date": f"uniform over {BIRTH_YEARS[0]}-01-01..{BIRTH_YEARS[1]}-12-31",
            "birth_city": len(TOWNS),
            "university": len(UNIVERSITIES),
            "major": len(MAJORS),
            "employer": len(EMPLOYERS),
            "employer_city": len(TOWNS),
        },
        "templates_per_attribute": {a: len(TEMPLATES[a]) for a in ATTRIBUTES},
        "remarks": {
            "per_document": world.remarks_per_doc,
            "topics": {topic: {"templates": len(t), "choices": len(c)} for topic, (t, c) in REMARKS.items()},
        },
        "name_repeat": world.name_repeat,
        "exposure": {"law": world.exposure.describe() if world.exposure else "explicit n_docs per person", "tiers": tiers},
        "docs_per_person": _quantiles(n_docs),
        "top_1pct_share_of_documents": float(np.sort(n_docs)[::-1][:top].sum() / total) if total else 0.0,
    }


def card_markdown(card: dict[str, Any]) -> str:
    """The card of :func:`world_card` as Markdown (a short description and tables)."""
    remarks = card["remarks"]
    lines = [
        "# synthbio dataset card",
        "",
        f"{card['n_people']} people, {card['n_documents']} biographies, seed {card['seed']}. "
        f"Each biography states all {len(card['attributes'])} attributes, one sentence each, plus "
        f"{remarks['per_document']} remarks that assert nothing checkable (one per topic, a free word each), "
        "in a random order with a random paraphrase template per sentence; the first sentence is a fact "
        f"that names the person, later fact sentences repeat the name with probability {card['name_repeat']:g}.",
        "",
        f"Exposure: {card['exposure']['law']}; the top 1% of people hold "
        f"{card['top_1pct_share_of_documents']:.1%} of the biographies.",
        "",
        "| tier | people | biographies per person | median | share of biographies |",
        "|---|---|---|---|---|",
    ]
    for name, tier in card["exposure"]["tiers"].items():
        lines.append(f"| {name} | {tier['n_people']} | {tier['max_docs']}..{tier['min_docs']} | "
                     f"{tier['median_docs']:g} | {tier['share_of_documents']:.1%} |")
    lines += ["", "| field | vocabulary | templates |", "|---|---|---|"]
    for field, size in card["vocabulary_sizes"].items():
        lines.append(f"| {field} | {size} | {card['templates_per_attribute'].get(field, '')} |")
    lines += ["", "| remark topic | templates | free choices |", "|---|---|---|"]
    lines += [f"| {topic} | {v['templates']} | {v['choices']} |" for topic, v in remarks["topics"].items()]
    lines += ["", "| docs per person | value |", "|---|---|"]
    lines += [f"| {k} | {v:g} |" for k, v in card["docs_per_person"].items()]
    return "\n".join(lines) + "\n"
