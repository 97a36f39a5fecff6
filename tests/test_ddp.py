"""Scale-out correctness on this machine: a 2-process CPU DDP run (gloo) of ``lacy train`` reaches the
same metrics as a 1-process run with the same global batch (issue: scale out)."""

import json
import os
import subprocess
import sys

import pytest


def _train(out, cache, method, *overrides):
    cmd = [sys.executable, "-m", "lacy.cli", "train", "--corpus", "synthbio", "--method", method, "--profile", "smoke",
           "--out", str(out), "--cache", str(cache), "--no-progress", "--set", "train.accelerator=cpu",
           "--set", "train.precision=32", "--set", "train.max_steps=4", "--set", "train.val_every=4",
           "--set", "train.val_batches=1000"]
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lacy", "random"])
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(method, tmp_path, cache_root, smoke_datamodule):
    """Per-batch selection ranks the global batch (all-gathered), the loss is normalised by the global
    count, and validation covers the whole split (val_batches=1000), so the metrics agree."""
    single = _train(tmp_path / "one", cache_root, method, "train.batch_size=8")
    ddp = _train(tmp_path / "two", cache_root, method, "train.batch_size=4", "train.devices=2", "train.strategy=ddp")
    assert ddp["train_tokens"] == single["train_tokens"]
    assert ddp["call_fraction"] == pytest.approx(single["call_fraction"], abs=1e-9)
    assert ddp["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)
    assert ddp["val_loss_fact"] == pytest.approx(single["val_loss_fact"], rel=1e-5)
