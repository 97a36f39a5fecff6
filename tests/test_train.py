"""The SLM factory, the LightningModule and the training orchestration (resume, NaN stop, run cache)."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys

import lightning as L
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset

from lacy.profiles import ModelConfig, TrainConfig, get_profile
from lacy.train.model import build_slm, count_parameters, export_model, load_model, resolve_precision
from lacy.train.module import LacyLM, lr_multiplier, parameter_groups
from lacy.train.objective import token_losses
from lacy.train.run import StepBatchSampler, get_or_train, run_dir, train
from lacy.train.selection import exact_judge, lacy_counts

VOCAB, SEQ, CALL, PAD = 64, 16, 4, 0
TINY = ModelConfig(d_model=16, n_layer=1, n_head=2, d_ff=32)
CORPUS = "synthbio"


class SyntheticTokens(Dataset):
    """Random token windows with ~25% fact flags and padding at the end of some windows."""

    def __init__(self, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, VOCAB, (n, SEQ + 1), generator=g)
        self.fact = torch.rand(n, SEQ, generator=g) < 0.25
        self.forced = torch.rand(n, SEQ, generator=g) < 0.5
        self.n_real = torch.where(torch.arange(n) % 3 == 2, SEQ // 2, SEQ)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        valid = torch.arange(SEQ) < self.n_real[i]
        targets = torch.where(valid, self.ids[i, 1:], PAD)
        return {"input_ids": self.ids[i, :-1], "targets": targets, "valid": valid, "fact": self.fact[i],
                "gold": self.fact[i], "forced": self.forced[i], "doc_id": torch.zeros(SEQ, dtype=torch.long)}


def tiny_module(method: str = "lacy", **train_overrides) -> LacyLM:
    cfg = TrainConfig(batch_size=4, max_steps=6, warmup_steps=2, **train_overrides)
    model = build_slm(TINY, VOCAB, SEQ, PAD, 1, 2, seed=0)
    return LacyLM(model, method, CALL, cfg, judge=exact_judge if method == "judge" else None, seed=0)


def fit(module: LacyLM, tmp_path, steps: int = 4, callbacks=()) -> L.Trainer:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=L.pytorch.loggers.CSVLogger(tmp_path),
                        callbacks=list(callbacks), enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, val_check_interval=2, check_val_every_n_epoch=None,
                        num_sanity_val_steps=0, log_every_n_steps=1)
    loader = DataLoader(SyntheticTokens(16), batch_size=4)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=DataLoader(SyntheticTokens(8, seed=1), batch_size=4))
    return trainer


def synthetic_batch(n: int = 4) -> dict[str, torch.Tensor]:
    return next(iter(DataLoader(SyntheticTokens(n), batch_size=n)))


# ---- model ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_build_slm_is_seeded_tied_and_leaves_global_rng(arch):
    cfg = ModelConfig(arch=arch, d_model=16, n_layer=1, n_head=2, d_ff=32)
    state = torch.random.get_rng_state()
    a, b, c = (build_slm(cfg, VOCAB, SEQ, PAD, 1, 2, seed=s) for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.get_input_embeddings().weight, c.get_input_embeddings().weight)
    assert a.get_output_embeddings().weight is a.get_input_embeddings().weight
    assert a.config.hidden_size == 16 and a.config.num_hidden_layers == 1
    assert count_parameters(a) == sum(p.numel() for p in set(a.parameters()))


def test_export_and_load_round_trip(tmp_path):
    from lacy.data.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["Ada Lovelace was born in London in 1815."] * 20, vocab_size=300)
    model = build_slm(TINY, len(tokenizer), SEQ, tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, seed=0)
    target = tmp_path / "model"
    export_model(model, tokenizer, target)
    export_model(model, tokenizer, target)  # replacing an existing export is atomic too
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    loaded, loaded_tok = load_model(target)
    ids = torch.tensor([[1, 5, 6, 7]])
    torch.testing.assert_close(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
    assert loaded_tok.convert_tokens_to_ids("<CALL>") == tokenizer.convert_tokens_to_ids("<CALL>")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path / "missing")


def test_precision_resolution():
    assert resolve_precision("32", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    assert resolve_precision("auto", "cpu") in ("bf16-mixed", "32-true")


# ---- module --------------------------------------------------------------------------------------

def test_lr_schedule_warms_up_then_decays_to_min_ratio():
    values = [lr_multiplier(s, warmup_steps=4, max_steps=20, min_lr_ratio=0.1) for s in range(21)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(values[3:], values[4:]))
    assert values[-1] == pytest.approx(0.1)


def test_no_weight_decay_on_norms_biases_embeddings():
    for arch in ("llama", "gpt2"):
        model = build_slm(ModelConfig(arch=arch, d_model=16, n_layer=1, n_head=2, d_ff=32), VOCAB, SEQ, PAD, 1, 2, 0)
        decay, no_decay = parameter_groups(model, 0.1)
        assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
        no_decay_ids = {id(p) for p in no_decay["params"]}
        assert id(model.get_input_embeddings().weight) in no_decay_ids
        assert all(p.ndim >= 2 for p in decay["params"])
        assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("method", ["standard", "lacy", "lacy_adaptive", "loss", "facts", "judge", "random", "ignore",
                                    "ignore_facts"])
def test_compute_loss_counts(method):
    module = tiny_module(method, call_warmup=0.0)
    batch = synthetic_batch()
    loss, stats = module.compute_loss(batch)
    valid = batch["valid"]
    k = int(lacy_counts(valid, batch["fact"], 0.6))
    assert torch.isfinite(loss)
    assert int(stats["n_valid"]) == int(valid.sum())
    current = token_losses(module(batch["input_ids"]), batch["targets"], CALL).detach()
    above_threshold = int((valid & batch["fact"] & (current > module.cfg.call_threshold)).sum())
    expected_call = {"standard": 0, "lacy": k, "loss": k, "random": k, "facts": int((valid & batch["fact"]).sum()),
                     "ignore": 0, "ignore_facts": 0, "lacy_adaptive": above_threshold}
    if method in expected_call:
        assert int(stats["n_call"]) == expected_call[method]
    expected_counted = int(valid.sum()) - (k if method in ("ignore", "ignore_facts") else 0)
    assert int(stats["n_counted"]) == expected_counted
    assert float(stats["call_fraction"]) == pytest.approx(int(stats["n_call"]) / expected_counted)


def test_lacy_adaptive_delegates_nothing_during_its_warm_up():
    """``train.call_warmup`` of ``max_steps``: before it every token is learned, from it on the threshold applies."""
    batch = synthetic_batch()
    warming = tiny_module("lacy_adaptive", call_warmup=0.5)  # step 0 of 6: inside the warm-up
    assert warming.call_threshold() == float("inf")
    _, stats = warming.compute_loss(batch)
    assert int(stats["n_call"]) == 0 and int(stats["n_counted"]) == int(batch["valid"].sum())
    assert tiny_module("lacy_adaptive", call_warmup=0.0).call_threshold() == TrainConfig().call_threshold


def test_judge_method_requires_a_judge():
    with pytest.raises(ValueError, match="judge"):
        LacyLM(build_slm(TINY, VOCAB, SEQ, PAD, 1, 2, 0), "judge", CALL, TrainConfig())


def test_training_logs_metrics_and_validation_matches_direct_computation(tmp_path):
    module = tiny_module("lacy")
    trainer = fit(module, tmp_path, steps=4)
    log = pd.read_csv(next(tmp_path.rglob("metrics.csv")))
    for key in ("train/loss", "train/call_fraction", "train/selected_loss", "train/tokens_per_s", "lr", "val/loss",
                "val/loss_fact", "val/loss_nonfact"):
        assert key in log.columns and log[key].notna().any(), key
    assert trainer.global_step == 4
    # val/loss is the token-weighted NLL (renormalised without <CALL>) over all valid val tokens.
    module.eval()
    nll, count = 0.0, 0
    with torch.no_grad():
        for batch in DataLoader(SyntheticTokens(8, seed=1), batch_size=4):
            losses = token_losses(module(batch["input_ids"]), batch["targets"], CALL)
            nll += float(losses[batch["valid"]].double().sum())
            count += int(batch["valid"].sum())
    assert float(trainer.callback_metrics["val/loss"]) == pytest.approx(nll / count, rel=1e-5)


class PoisonWeights(Callback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            with torch.no_grad():
                pl_module.model.get_input_embeddings().weight.fill_(float("nan"))


def test_nan_loss_stops_with_step_and_batch(tmp_path):
    with pytest.raises(RuntimeError, match=r"global step 2, batch index 2"):
        fit(tiny_module("lacy"), tmp_path, steps=4, callbacks=[PoisonWeights(2)])


# ---- data order ----------------------------------------------------------------------------------

def test_step_batch_sampler_is_a_function_of_step_and_shards_ranks():
    sampler = StepBatchSampler(n_items=10, batch_size=2, seed=0)
    first_pass = [sampler.batch(s) for s in range(5)]
    assert sorted(i for b in first_pass for i in b) == list(range(10))  # each pass is a permutation
    assert sampler.batch(5) != first_pass[0] or sampler.batch(6) != first_pass[1]  # a new pass reshuffles
    assert StepBatchSampler(10, 2, seed=0).batch(3) == first_pass[3]
    ranks = [sampler.batch(0, rank=r, world_size=2) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1])
    with pytest.raises(ValueError, match="batch_size"):
        StepBatchSampler(n_items=3, batch_size=4, seed=0).batch(0)


# ---- orchestration on the real DataModule (smoke profile) ----------------------------------------

class SimulatedCrash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise SimulatedCrash(f"crash at step {self.step}")


@pytest.fixture(scope="module")
def smoke(smoke_profile):
    return smoke_profile.override({"train.max_steps": 6, "train.ckpt_every": 3, "train.val_every": 3})


def test_train_writes_run_folder_and_resumes_exactly(smoke, cache_root, tmp_path):
    whole = train(CORPUS, "lacy", smoke, 0, tmp_path / "whole", cache_root=cache_root, progress=False)
    with pytest.raises(SimulatedCrash):
        train(CORPUS, "lacy", smoke, 0, tmp_path / "resumed", cache_root=cache_root, progress=False, callbacks=[CrashAt(3)])
    assert (tmp_path / "resumed" / "checkpoints" / "last.ckpt").exists()
    assert not (tmp_path / "resumed" / "summary.json").exists()
    resumed = train(CORPUS, "lacy", smoke, 0, tmp_path / "resumed", cache_root=cache_root, progress=False)

    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == whole["steps"] == 6
    a = load_file(tmp_path / "whole" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for key in ("train_tokens", "call_fraction", "val_loss"):
        assert resumed[key] == whole[key], key

    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    expected = {"method", "corpus", "profile", "seed", "params", "train_tokens", "call_fraction", "val_loss", "val_loss_fact",
                "val_loss_nonfact", "tokens_per_s", "seconds", "steps", "cache_key", "config"}
    assert expected <= summary.keys()
    assert summary["train_tokens"] > 0 and 0 < summary["call_fraction"] < 1 and math.isfinite(summary["val_loss"])
    metrics = pd.read_csv(tmp_path / "resumed" / "metrics.csv")
    assert metrics["step"].is_unique and metrics["train/loss"].notna().sum() == 6  # both sessions merged
    load_model(tmp_path / "whole" / "model")


def test_get_or_train_reuses_runs_and_rho_uses_a_cached_reference(smoke, cache_root, tmp_path):
    path = get_or_train(CORPUS, "rho", smoke, 0, root=tmp_path, cache_root=cache_root, progress=False)
    assert path == run_dir(CORPUS, "rho", smoke, 0, tmp_path)
    reference = run_dir(CORPUS, "standard", smoke.as_helper(), 0, tmp_path)
    assert (reference / "summary.json").exists()  # the helper-size reference was trained through the run cache
    summary = json.loads((path / "summary.json").read_text())
    assert summary["reference"] == str(reference / "model") and 0 < summary["call_fraction"] < 1
    # ref_loss is aligned with the token stream: the batch of window i carries the reference model's
    # loss of each of its targets.
    from lacy.data.datamodule import LacyDataModule
    from lacy.train.run import reference_token_arrays

    dm = LacyDataModule(CORPUS, smoke, seed=0, cache_root=cache_root)
    ref_loss, _ = reference_token_arrays(reference / "model", dm)
    dm.attach_token_array("ref_loss", ref_loss)
    ds = dm.dataset("train")
    model, _ = load_model(reference / "model")
    for i in (0, len(ds) - 1):
        item = ds[i]
        with torch.no_grad():
            direct = token_losses(model(input_ids=item["input_ids"][None]).logits, item["targets"][None], dm.call_id)[0]
        valid = item["valid"]
        torch.testing.assert_close(item["ref_loss"][valid], direct[valid], rtol=0.05, atol=0.05)  # bf16 vs fp32
    stamp = (path / "summary.json").stat().st_mtime_ns
    assert get_or_train(CORPUS, "rho", smoke, 0, root=tmp_path, cache_root=cache_root, progress=False) == path
    assert (path / "summary.json").stat().st_mtime_ns == stamp
    assert run_dir(CORPUS, "rho", smoke.override({"train.lr": 1e-3}), 0, tmp_path) != path


def test_judge_on_synthbio_trains(smoke, cache_root, tmp_path):
    summary = train(CORPUS, "judge", smoke, 0, tmp_path / "judge", cache_root=cache_root, progress=False)
    assert summary["steps"] == 6 and 0 <= summary["call_fraction"] < 1


def test_ddp_spawn_on_two_cpu_processes_counts_each_token_once(smoke, cache_root, tmp_path):
    """Lightning DDP (ddp_spawn, gloo): the run summary is written by the main process from the
    workers' results; every rank trains on its own slice of each global batch."""
    distributed = smoke.override({"train.devices": "2", "train.strategy": "ddp_spawn"})
    summary = train(CORPUS, "lacy", distributed, 0, tmp_path / "ddp", cache_root=cache_root, progress=False)
    per_rank_batch = smoke.train.batch_size * smoke.data.seq_len
    assert summary["steps"] == 6
    assert 6 * per_rank_batch < summary["train_tokens"] <= 2 * 6 * per_rank_batch
    assert 0 < summary["call_fraction"] < 1 and math.isfinite(summary["val_loss"])
    load_model(tmp_path / "ddp" / "model")


def test_bench_cli_refuses_settings_where_a_bench_takes_none(capsys):
    from lacy.cli import main

    assert main(["bench", "annotate", "--profile", "smoke", "--set", "train.precision=32"]) == 2
    assert "takes no --set settings" in capsys.readouterr().err


def test_bench_train_reports_rates_side_by_side(capfd):
    from lacy.bench.train import flops_per_token, run, targets

    result = run(profile="smoke", steps=2, overrides={"train.precision": "32"})
    for name in ("naive", "standard", "lacy"):
        assert result[f"{name}_tokens_per_s"] > 0 and result[f"{name}_tokens_per_cpu_s"] > 0
    assert result["compile_seconds_cold"] == 0.0 and not result["features"]["compile"]  # smoke: eager
    assert result["speedup_vs_naive"] == pytest.approx(result["lacy_tokens_per_s"] / result["naive_tokens_per_s"])
    assert result["step_speedup_vs_naive"] == pytest.approx(result["speedup_vs_naive"])
    assert result["lacy_overhead"] == pytest.approx(1 - result["lacy_tokens_per_s"] / result["standard_tokens_per_s"])
    flops = result["lacy_tokens_per_s"] * flops_per_token(result["params"], get_profile("smoke").model, 64)
    assert result["mfu"] == pytest.approx(flops / result["gemm_peak_flops"]) and 0 < result["mfu"] < 1
    assert result["features"]["dtype"] == "float32" and result["features"]["threads"] >= 1
    assert result["targets"] == targets("32-true") and result["steps"] == 2 and result["params"] > 0
    assert 0 < result["naive_matmul_share"] and 0 < result["lacy_matmul_share"]
    naive_step = 1 / result["naive_tokens_per_s"] * get_profile("smoke").train.batch_size * 64
    assert result["speedup_ceiling_matmul_only"] == pytest.approx(naive_step / result["lacy_matmul_seconds_per_step"])
    assert "profiler_st" not in capfd.readouterr().err  # the profiler's start/stop lines stay out of the output


@pytest.mark.slow
def test_bench_train_counts_every_compile_it_reports():
    """Compiled: a cold compile, a warm re-trace in-process and a new process against the filled cache,
    each added to the profile's run of lacy steps. (New process vs cold is not compared: in a process
    that compiled before, as under pytest, the cold compile skips Inductor's start-up that a new process pays.)"""
    from lacy.bench.train import run

    smoke = get_profile("smoke")
    result = run(profile="smoke", steps=2, overrides={"train.precision": "32", "train.compile": "on"})
    assert result["features"]["compile"] and result["lacy_eager_tokens_per_s"] > 0
    assert result["compile_seconds_cold"] > 0 and result["compile_seconds_new_process"] > 0
    tokens = result["amortised_over_steps"] * smoke.train.batch_size * smoke.data.seq_len
    naive_run, lacy_run = tokens / result["naive_tokens_per_s"], tokens / result["lacy_tokens_per_s"]
    for key, seconds in (("speedup_vs_naive", "compile_seconds_cold"), ("speedup_vs_naive_warm_cache", "compile_seconds_warm"),
                         ("speedup_vs_naive_new_process", "compile_seconds_new_process")):
        assert result[key] == pytest.approx(naive_run / (lacy_run + result[seconds]))


def test_get_or_train_many_trains_in_workers_as_one_thread_trains_here(smoke, cache_root, tmp_path):
    """Two runs side by side in worker processes give exactly the weights the same run gets when
    trained in this process with the workers' thread count; finished runs are reused, not retrained."""
    from lacy.profiles import resolve_processes
    from lacy.train.run import TrainJob, get_or_train_many

    jobs = [TrainJob(CORPUS, "lacy", smoke, 0), TrainJob(CORPUS, "standard", smoke, 1), TrainJob(CORPUS, "lacy", smoke, 0)]
    lines: list[str] = []
    folders = get_or_train_many(jobs, root=tmp_path / "pool", cache_root=cache_root, workers=2, log=lines.append)
    assert folders == [run_dir(CORPUS, j.method, smoke, j.seed, tmp_path / "pool") for j in jobs]
    assert len(lines) == 2 and all("worker process" in line for line in lines)  # the duplicate job trained once
    summary = json.loads((folders[0] / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["threads"] == max(1, resolve_processes("auto") // 2)

    threads = torch.get_num_threads()
    torch.set_num_threads(summary["threads"])
    try:
        here = get_or_train(CORPUS, "lacy", smoke, 0, root=tmp_path / "here", cache_root=cache_root, progress=False)
    finally:
        torch.set_num_threads(threads)
    a, b = load_file(folders[0] / "model" / "model.safetensors"), load_file(here / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    lines.clear()
    assert get_or_train_many(jobs, root=tmp_path / "pool", cache_root=cache_root, workers=2, log=lines.append) == folders
    assert lines == []


def test_bench_runs_times_the_same_jobs_serially_and_side_by_side(cache_root):
    from lacy.bench.runs import run

    result = run(profile="smoke", max_steps=2, cache_root=cache_root, overrides={"train.precision": "32"})
    assert result["runs"] == 4 and result["max_steps"] == 2 and all(p > 0 for p in result["params"])
    assert result["serial_seconds"] > 0 and result["side_by_side_seconds"] > 0
    assert result["speedup"] == pytest.approx(result["serial_seconds"] / result["side_by_side_seconds"])
    assert result["workers"] >= 1 and result["threads_per_worker"] >= 1
    assert 0 < result["mfu_serial"] < 1 and 0 < result["mfu_side_by_side"] < 1
    assert result["features"]["dtype"] == "float32"


def test_bench_runs_at_the_profiles_own_size_and_refuses_other_sizes(cache_root, smoke_profile):
    from lacy.bench.runs import run
    from lacy.plan import parameters

    result = run(profile="smoke", max_steps=1, cache_root=cache_root, overrides={"train.precision": "32"}, sizes=[-1])
    own = parameters(smoke_profile.model, smoke_profile.data.vocab_size, smoke_profile.data.seq_len)
    assert result["runs"] == 2 and result["sizes"] == [-1] and result["params"] == [own, own]
    with pytest.raises(ValueError, match="indices into the 4 ladder sizes"):
        run(profile="smoke", max_steps=1, cache_root=cache_root, sizes=[4])


def test_retain_freed_memory_switch(monkeypatch):
    from lacy.train.memory import SWITCH, retain_freed_memory

    monkeypatch.setenv(SWITCH, "0")
    assert retain_freed_memory() is False
    monkeypatch.setenv(SWITCH, "yes")
    with pytest.raises(ValueError, match="LACY_RETAIN_FREED_MEMORY='yes': use 1 .* or 0"):
        retain_freed_memory()
    monkeypatch.setenv(SWITCH, "1")
    assert retain_freed_memory() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


@pytest.mark.slow
def test_retained_memory_changes_no_result(smoke_datamodule, cache_root, tmp_path):
    """The same run in two fresh processes, with and without the glibc settings: identical weights and losses."""
    summaries, weights = {}, {}
    for switch in ("1", "0"):
        out = tmp_path / f"retain-{switch}"
        subprocess.run([sys.executable, "-m", "lacy.cli", "train", "--profile", "smoke", "--method", "lacy", "--no-progress",
                        "--cache", str(cache_root), "--out", str(out), "--set", "train.max_steps=6"],
                       env={**os.environ, "LACY_RETAIN_FREED_MEMORY": switch}, check=True, capture_output=True)
        summaries[switch] = json.loads((out / "summary.json").read_text())
        weights[switch] = (out / "model" / "model.safetensors").read_bytes()
    assert summaries["1"]["retain_freed_memory"] is (platform.libc_ver()[0] == "glibc") and summaries["0"]["retain_freed_memory"] is False
    assert weights["1"] == weights["0"]
    assert summaries["1"]["val_loss"] == summaries["0"]["val_loss"]
