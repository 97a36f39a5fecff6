import pytest

from lacy.profiles import PROFILES, ConfigError, get_profile, parse_overrides, valid_keys


def test_every_profile_validates():
    for name in PROFILES:
        get_profile(name).validate()


def test_override_coerces_types():
    p = get_profile("smoke", {"train.max_steps": "7", "train.lr": "0.5", "model.arch": "gpt2", "eval.sweep_rates": "0,0.5"})
    assert p.train.max_steps == 7 and p.train.lr == 0.5 and p.model.arch == "gpt2"
    assert p.eval.sweep_rates == (0.0, 0.5)
    assert get_profile("smoke").train.max_steps != 7  # profiles are immutable


@pytest.mark.parametrize(
    "name, overrides, fragment",
    [
        ("laptop", {}, "valid choices: smoke, cpu, colab, gpu"),
        ("smoke", {"train.max_stepz": "1"}, "valid keys:"),
        ("smoke", {"train": "1"}, "is a section"),
        ("smoke", {"train.max_steps": "many"}, "expected a int"),
        ("smoke", {"model.arch": "mamba"}, "valid choices: llama, gpt2"),
        ("smoke", {"model.n_head": "3"}, "divisible"),
        ("smoke", {"eval.max_new_tokens": "-1"}, "0 for auto"),
        ("smoke", {"train.call_threshold": "-1"}, "train.call_threshold must be >= 0"),
        ("smoke", {"train.call_threshold": "inf"}, "train.call_threshold"),
    ],
)
def test_bad_input_is_refused_with_choices(name, overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        get_profile(name, overrides)


def test_parse_overrides():
    assert parse_overrides(["a.b=1", "c.d = x"]) == {"a.b": "1", "c.d": "x"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["oops"])
    assert "train.call_fraction" in valid_keys()


def test_lacy_set_overrides_every_profile_and_explicit_overrides_win(monkeypatch):
    monkeypatch.setenv("LACY_SET", '{"train.precision": "32", "train.max_steps": "9"}')
    p = get_profile("cpu", {"train.max_steps": "11"})
    assert p.train.precision == "32" and p.train.max_steps == 11
    monkeypatch.setenv("LACY_SET", "")
    assert get_profile("cpu").train.precision == "auto"


@pytest.mark.parametrize("raw, fragment", [("train.precision=32", "Expecting value"), ('["train.precision"]', "not an object"),
                                          ('{"train.max_steps": 9}', "not an object"), ('{"train.precison": "32"}', "unknown setting 'precison'")])
def test_a_malformed_lacy_set_is_refused_with_the_fix(monkeypatch, raw, fragment):
    monkeypatch.setenv("LACY_SET", raw)
    with pytest.raises(ConfigError, match=fragment):
        get_profile("smoke")


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_helper_profile_has_more_capacity_and_training(name):
    """The helper-size standard model is rho's reference: more capacity and more training than the SLM."""
    profile = PROFILES[name]
    helper = profile.as_helper()
    assert helper.model.d_model * helper.model.n_layer > profile.model.d_model * profile.model.n_layer
    assert helper.train.max_steps >= profile.train.max_steps
def test_annotate_processes_auto_or_a_positive_number(monkeypatch):
    from lacy.profiles import MAX_AUTO_PROCESSES, resolve_processes

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert resolve_processes("auto") == MAX_AUTO_PROCESSES
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert get_profile("cpu").data.annotate_processes == "auto" and resolve_processes("auto") == 2
    assert resolve_processes(get_profile("smoke", {"data.annotate_processes": "3"}).data.annotate_processes) == 3
    for bad in ("0", "two", "1.5", "-1"):
        with pytest.raises(ConfigError, match="data.annotate_processes must be 'auto' or a whole number"):
            get_profile("smoke", {"data.annotate_processes": bad})
