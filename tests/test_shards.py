"""``lacy data --shard I/N`` + ``--merge N`` writes the same cache as a single-machine build."""

from __future__ import annotations

import json

import pytest

from lacy.cli import main
from lacy.data.cache import build_cache
from lacy.data.shards import build_shard, merge_shards, parse_shard, shard_bounds
from lacy.profiles import ConfigError

TIMING = ("annotate_seconds", "annotate_tokens_per_s", "build_seconds")


def test_shard_bounds_tile_the_items():
    for n_items in (0, 1, 7, 100):
        for n in (1, 3, 8):
            bounds = [shard_bounds(n_items, i, n) for i in range(n)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n_items
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


@pytest.mark.parametrize("spec", ["3", "3/3", "-1/2", "a/b", "1/0"])
def test_bad_shard_spec_is_refused(spec):
    with pytest.raises(ConfigError, match="I/N"):
        parse_shard(spec)


def test_three_shards_merged_equal_the_unsharded_cache(tmp_path, smoke_profile):
    whole = build_cache("synthbio", smoke_profile, 0, tmp_path / "whole", log=lambda m: None)
    for i in range(3):
        build_shard("synthbio", smoke_profile, 0, tmp_path / "sharded", i, 3, log=lambda m: None)
    merged = merge_shards("synthbio", smoke_profile, 0, tmp_path / "sharded", 3, log=lambda m: None)
    assert merged.path.name == whole.path.name  # same content key
    files = sorted(p.relative_to(whole.path) for p in whole.path.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert files == sorted(p.relative_to(merged.path) for p in merged.path.rglob("*") if p.is_file() and p.name != "manifest.json")
    for name in files:
        assert (whole.path / name).read_bytes() == (merged.path / name).read_bytes(), name
    a, b = whole.manifest, merged.manifest
    assert a["files"] == b["files"] and a["config"] == b["config"] and a["key"] == b["key"]
    assert {k: v for k, v in a["summary"].items() if k not in TIMING} == {k: v for k, v in b["summary"].items() if k not in TIMING}


def test_merge_names_the_missing_shards(tmp_path, smoke_profile, capsys):
    build_shard("synthbio", smoke_profile, 0, tmp_path, 1, 2, log=lambda m: None)
    assert main(["data", "--profile", "smoke", "--cache", str(tmp_path), "--merge", "2"]) == 2
    assert "shards [0] of 2 are missing" in capsys.readouterr().err
    assert main(["data", "--profile", "smoke", "--cache", str(tmp_path), "--shard", "1/2", "--merge", "2"]) == 2


def test_a_corrupt_part_is_rebuilt(tmp_path, smoke_profile):
    record = build_shard("synthbio", smoke_profile, 0, tmp_path, 0, 1, log=lambda m: None)
    part = next((tmp_path / "parts").glob("*/part-00000-of-00001"))
    (part / "train.ids.npy").write_bytes(b"garbage")
    messages = []
    again = build_shard("synthbio", smoke_profile, 0, tmp_path, 0, 1, log=messages.append)
    assert any("rebuilding shard" in m for m in messages)
    assert again["files"] == record["files"]
    assert json.loads((part / "part.json").read_text())["files"] == record["files"]
