"""The knowledge curve: prompts, exact-value judging, batched greedy decoding, the summary, CLI and plot."""

import json

import pandas as pd
import pytest

from lacy.cli import main
from lacy.data.synthbio import ATTRIBUTES, WORD_RE, World
from lacy.evaluate.knowledge import (
    greedy_continuations,
    knowledge_frame,
    knowledge_prompt,
    knowledge_summary,
    pick_people,
    states_value,
    training_exposures,
)


@pytest.fixture(scope="module")
def smoke_world(smoke_profile):
    return World.from_config(smoke_profile.world)


@pytest.fixture(scope="module")
def standard_run(tmp_path_factory, smoke_profile, cache_root):
    from lacy.train.run import get_or_train

    return get_or_train("synthbio", "standard", smoke_profile, 0, root=tmp_path_factory.mktemp("runs"),
                        cache_root=cache_root, progress=False)


def test_prompts_open_exactly_one_attribute(smoke_world):
    for person in smoke_world.people[:10]:
        for attribute in ATTRIBUTES:
            prompt, value = knowledge_prompt(person, attribute), person.value(attribute)
            assert prompt.startswith(person.full_name) and not prompt.endswith(" ")
            assert smoke_world.is_valid_prefix(person.full_name, f"{prompt} {value}.")
            # the grammar allows one continuation only: the value's first word
            assert smoke_world.next_word_options(person.full_name, prompt) == {WORD_RE.match(value).group()}
    assert knowledge_prompt(smoke_world.people[0], "birth_date") == f"{smoke_world.people[0].full_name} was born on"
    with pytest.raises(KeyError, match="valid attributes"):
        knowledge_prompt(smoke_world.people[0], "height")


def test_states_value_needs_the_whole_value():
    assert states_value(" Fine Art.", "Fine Art") and states_value("Fine Art", "Fine Art")
    assert states_value(" March 3, 1972. She", "March 3, 1972")
    assert not states_value(" Fine Arts.", "Fine Art")
    assert not states_value(" March 3, 19721", "March 3, 1972") and not states_value(" March 3, 197", "March 3, 1972")
    assert not states_value(" Ashford-on-Sea", "Ashford") and not states_value(" ", "Ashford")


def test_summary_per_tier():
    frame = pd.DataFrame({
        "person": ["a", "a", "b", "b", "c", "c"], "tier": ["top", "top", "top", "top", "low", "low"],
        "exposures": [10, 10, 20, 20, 1, 1], "attribute": ["major", "employer"] * 3,
        "correct": [True, True, True, False, False, False],
    })  # fmt: skip
    summary = knowledge_summary(frame, ["top", "low", "missing"])
    assert summary["tiers"] == ["top", "low"]
    assert summary["by_tier"]["top"] == {"recall": 0.75, "exposures_median": 15.0, "n_people": 2, "n_facts": 4,
                                         "by_attribute": {"major": 1.0, "employer": 0.5}}
    assert summary["by_tier"]["low"]["recall"] == 0.0 and summary["by_tier"]["low"]["n_people"] == 1


def test_people_and_exposures(smoke_world, smoke_profile):
    assert pick_people(smoke_world) == smoke_world.people
    sample = pick_people(smoke_world, per_tier=2, seed=1)
    assert [p.tier for p in sample] == [t for t in smoke_world.tiers for _ in range(2)]
    assert sample == pick_people(smoke_world, per_tier=2, seed=1)
    with pytest.raises(ValueError, match="per_tier must be >= 0"):
        pick_people(smoke_world, per_tier=-1)
    exposures = training_exposures(smoke_world, smoke_profile.data.val_fraction)
    n_val = sum(d.split == "val" for d in smoke_world.documents(smoke_profile.data.val_fraction))
    assert sum(exposures.values()) == sum(p.n_docs for p in smoke_world.people) - n_val
    assert all(0 <= exposures[p.full_name] <= p.n_docs for p in smoke_world.people)


def test_batched_greedy_decoding_matches_one_by_one(standard_run, smoke_world):
    from lacy.train.model import load_model

    model, tokenizer = load_model(standard_run / "model")
    prompts = [knowledge_prompt(p, a) for p in smoke_world.people[:3] for a in ("birth_date", "major")]
    batched = greedy_continuations(model, tokenizer, prompts, max_new_tokens=6, batch_size=len(prompts))
    assert batched == [greedy_continuations(model, tokenizer, [p], max_new_tokens=6)[0] for p in prompts]
    frame = knowledge_frame(model, tokenizer, smoke_world, smoke_world.people[:3])
    assert len(frame) == 3 * len(ATTRIBUTES) and frame["correct"].dtype == bool
    assert frame["correct"].tolist() == [states_value(g, v) for g, v in zip(frame["generated"], frame["value"])]


def test_cli_knowledge(standard_run, smoke_world, cache_root, tmp_path, capsys):
    out = tmp_path / "knowledge.json"
    argv = ["knowledge", "--model", str(standard_run / "model"), "--corpus", "synthbio", "--profile", "smoke",
            "--cache", str(cache_root), "--out", str(out)]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["tiers"] == smoke_world.tiers
    for name, tier in printed["by_tier"].items():
        assert 0.0 <= tier["recall"] <= 1.0 and tier["n_people"] == len(smoke_world.tier(name))
        assert tier["exposures_median"] >= 0
    table = pd.read_csv(tmp_path / "knowledge.facts.csv")
    assert len(table) == len(ATTRIBUTES) * len(smoke_world.people)
    assert main(argv[:-2] + ["--per-tier", "1"]) == 0
    assert all(t["n_people"] == 1 for t in json.loads(capsys.readouterr().out)["by_tier"].values())
    assert main(["knowledge", "--model", str(standard_run / "model"), "--corpus", "vitalwiki", "--profile", "smoke"]) == 2
    assert "needs --corpus synthbio" in capsys.readouterr().err


def test_knowledge_curve_plot():
    from lacy.plots import knowledge_curve

    frame = pd.DataFrame({
        "person": list("aabbcc"), "tier": ["t"] * 6, "exposures": [0, 0, 3, 3, 400, 400],
        "attribute": ["major", "employer"] * 3, "correct": [False, False, False, True, True, True],
    })  # fmt: skip
    fig = knowledge_curve(frame)
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog" and ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    pooled = ax.lines[-1].get_ydata()
    assert list(pooled) == [0.0, 0.5, 1.0]
