"""The token-aligned cache and the DataModule: alignment, keys, invalidation, corruption."""

import json

import numpy as np
import pytest

from lacy.cli import main
from lacy.data.cache import build_cache, cache_config, content_key


def test_windows_cover_every_token_once(smoke_datamodule):
    dm = smoke_datamodule
    stream = np.asarray(dm.arrays("train")["ids"])
    ds = dm.dataset("train")
    T = dm.profile.data.seq_len
    targets = np.concatenate([ds[i]["targets"][ds[i]["valid"]].numpy() for i in range(len(ds))])
    assert np.array_equal(targets, stream[1:])
    item = ds[0]
    assert np.array_equal(item["targets"][:-1].numpy(), item["input_ids"][1:].numpy())
    assert item["input_ids"].shape == (T,)


def test_flags_describe_the_target_token(smoke_datamodule):
    dm = smoke_datamodule
    arrays = dm.arrays("train")
    item = dm.dataset("train")[1]
    T = dm.profile.data.seq_len
    fact = np.asarray(arrays["fact"][T + 1 : 2 * T + 1]) > 0
    assert np.array_equal(item["fact"].numpy(), fact)
    gold = np.asarray(arrays["gold"][T + 1 : 2 * T + 1]) > 0
    assert np.array_equal(item["gold"].numpy(), gold)


def test_gold_tokens_spell_the_facts(smoke_datamodule):
    """Decoding the gold-flagged tokens of a document gives back its fact values."""
    dm = smoke_datamodule
    arrays = dm.arrays("train")
    doc = dm.documents("train")[0]
    mask = np.asarray(arrays["doc"]) == doc.doc_id
    ids = np.asarray(arrays["ids"])[mask]
    gold = np.asarray(arrays["gold"])[mask] > 0
    decoded = dm.tokenizer.decode(ids[gold].tolist())
    for span in doc.facts:
        assert doc.text[span.start : span.end].replace(" ", "") in decoded.replace(" ", "")


def test_summary_has_proxy_quality(smoke_datamodule):
    s = smoke_datamodule.summary
    assert s["documents"] > 0 and s["tokens"] > 0
    assert 0 < s["fact_fraction"] < 1
    assert 0 < s["proxy_precision"] <= 1 and 0 < s["proxy_recall"] <= 1


def test_cache_key_changes_with_every_input(smoke_profile):
    base = content_key(cache_config("synthbio", smoke_profile, 0))
    variants = [
        cache_config("synthbio", smoke_profile.override({"world.seed": "1"}), 0),
        cache_config("synthbio", smoke_profile.override({"data.vocab_size": "600"}), 0),
        cache_config("synthbio", smoke_profile.override({"world.tier_people": "3,6,12,31"}), 0),
        cache_config("synthbio", smoke_profile.override({"world.remarks_per_doc": "2"}), 0),
        cache_config("synthbio", smoke_profile.override({"data.seq_len": "32"}), 0),
        cache_config("vitalwiki", smoke_profile, 0),
    ]
    keys = {content_key(v) for v in variants}
    assert base not in keys and len(keys) == len(variants)
    # settings that do not change the contents do not change the key
    same = cache_config("synthbio", smoke_profile.override({"data.annotate_processes": "2", "train.max_steps": "99"}), 0)
    assert content_key(same) == base
    # the training seed does not change the synthbio world (world.seed does), so seeds share a cache
    assert content_key(cache_config("synthbio", smoke_profile, 1)) == base


def test_cache_is_reused_and_corruption_is_detected(smoke_datamodule, cache_root, smoke_profile):
    cache = smoke_datamodule.cache
    again = build_cache("synthbio", smoke_profile, 0, cache_root)
    assert again.path == cache.path and again.manifest == cache.manifest
    victim = cache.path / "train.fact.npy"
    original = victim.read_bytes()
    data = bytearray(original)
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    messages = []
    rebuilt = build_cache("synthbio", smoke_profile, 0, cache_root, log=messages.append)
    assert messages and "hash" in messages[0]
    assert rebuilt.path.joinpath("train.fact.npy").read_bytes() == original
    rebuilt.verify()


def test_cache_is_deterministic(tmp_path, smoke_profile):
    a = build_cache("synthbio", smoke_profile, 0, tmp_path / "a")
    b = build_cache("synthbio", smoke_profile, 0, tmp_path / "b")
    assert a.manifest["files"] == b.manifest["files"]
    assert not list((tmp_path / "a").glob(".*tmp"))  # no temporary folders left behind


def test_cli_data_prints_summary(tmp_path, capsys, cache_root):
    assert main(["data", "--corpus", "synthbio", "--profile", "smoke", "--out", str(cache_root)]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("documents", "tokens", "fact_fraction", "proxy_precision", "proxy_recall", "cache_key"):
        assert key in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["data", "--corpus", "wiki"], "valid choices: synthbio, vitalwiki"),
        (["data", "--profile", "huge"], "valid choices: smoke, cpu, colab, gpu"),
        (["data", "--set", "data.vocab_size=lots"], "expected a int"),
        (["train", "--method", "magic", "--out", "x"], "valid choices: standard, lacy"),
        (["bench", "nothing"], "valid choices: annotate, train, cascade, remote"),
    ],
)
def test_cli_refuses_bad_input(argv, fragment, capsys):
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err
