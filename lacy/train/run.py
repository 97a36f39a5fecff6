"""Training orchestration used by the CLI (``lacy train``) and the book.

:func:`train` builds the data, the model and a Lightning Trainer from a profile, trains with
checkpointing and exact resumption, and writes a run folder::

    <out>/model/          the exported model + tokenizer (save_pretrained, safetensors)
    <out>/metrics.csv     one row per logged step (train/*, lr, val/*)
    <out>/summary.json    method, corpus, profile, seed, sizes, final losses, throughput, config
    <out>/run.json        the settings that made the run (it is only resumed or reused under them)
    <out>/checkpoints/    last.ckpt (resumed automatically) and periodic checkpoints
    <out>/logs/           raw Lightning CSV logs, one version per session

:func:`get_or_train` is the run cache the chapters share: the same (corpus, method, profile, seed)
trains once and is reused. :func:`get_or_train_many` trains several missing runs side by side in
worker processes, which on a small CPU finishes a batch of small runs sooner than one after another.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Sampler

from lacy.data.cache import cache_config, content_key
from lacy.data.datamodule import LacyDataModule
from lacy.data.corpora import get_corpus
from lacy.io import atomic_write, check_writable, save_npy_atomic, sha256_file, write_json_atomic
from lacy.profiles import Profile, TrainConfig, resolve_processes
from lacy.train.compile import compile_cache_dir, resolve_compile
from lacy.train.memory import retain_freed_memory
from lacy.train.model import autocast_dtype, build_slm, count_parameters, export_model, load_model, resolve_precision
from lacy.train.module import LacyLM
from lacy.train.objective import token_terms, without_call
from lacy.train.run_folder import check_run_folder, resume_checkpoint, run_settings, training_config, write_run_record
from lacy.train.selection import JUDGES, get_method


class StepBatchSampler(Sampler[list[int]]):
    """Endless training batches; the batch of global step ``s`` depends only on (seed, s, rank).

    Each pass over the data is a fresh permutation seeded by (seed, pass number), split into
    ``batch_size * world_size`` chunks (the last partial chunk is dropped) with rank ``r`` taking the
    ``r``-th slice. Iteration starts at ``trainer.global_step``, so a run resumed from a checkpoint
    sees exactly the batches an uninterrupted run would have seen (a plain shuffled DataLoader
    restarts its epoch instead).
    """

    def __init__(self, n_items: int, batch_size: int, seed: int, trainer: L.Trainer | None = None):
        self.n_items, self.batch_size, self.seed, self.trainer = n_items, batch_size, seed, trainer

    def _layout(self) -> tuple[int, int, int]:
        if self.trainer is None:
            return 0, 0, 1
        return self.trainer.global_step, self.trainer.global_rank, self.trainer.world_size

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> list[int]:
        per_pass = self.n_items // (self.batch_size * world_size)
        if per_pass == 0:
            raise ValueError(f"the training split has {self.n_items} windows, fewer than one global batch of "
                             f"{self.batch_size} x {world_size} devices; lower train.batch_size or data.seq_len, "
                             "or use a larger corpus (world.n_people / data.vitalwiki_max_docs)")
        data_pass, position = divmod(step, per_pass)
        order = torch.randperm(self.n_items, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + data_pass))
        start = (position * world_size + rank) * self.batch_size
        return order[start : start + self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step, rank, world_size = self._layout()
        while True:
            yield self.batch(step, rank, world_size)
            step += 1


def resolve_accelerator(requested: str) -> str:
    """``"auto"`` → ``"gpu"`` when CUDA is available, else ``"cpu"``; other values unchanged."""
    if requested == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return requested


def profile_hash(profile: Profile) -> str:
    """8 hex digits identifying every setting of ``profile`` that training depends on (overrides
    included; :data:`lacy.train.run_folder.EVALUATION_ONLY` sections excluded)."""
    return hashlib.sha256(json.dumps(training_config(profile), sort_keys=True).encode()).hexdigest()[:8]


def run_dir(corpus: str, method: str, profile: Profile, seed: int, root: str | Path = "runs") -> Path:
    """``root/{corpus}-{method}-{profile}-s{seed}-{hash8}``: the run cache folder of one configuration."""
    return Path(root) / f"{corpus}-{method}-{profile.name}-s{seed}-{profile_hash(profile)}"


def get_or_train(corpus: str, method: str, profile: Profile, seed: int = 0, root: str | Path = "runs",
                 cache_root: str | Path | None = None, reference: Path | None = None, progress: bool = True) -> Path:
    """The run folder of (corpus, method, profile, seed): reused when its ``summary.json`` exists,
    else trained now (resuming from its last checkpoint if an earlier attempt was interrupted)."""
    out = run_dir(corpus, method, profile, seed, root)
    if not (out / "summary.json").exists():
        train(corpus, method, profile, seed, out, cache_root=cache_root, reference=reference, progress=progress)
    return out


def get_or_train_methods(corpus: str, methods: Sequence[str], profile: Profile, seed: int = 0, root: str | Path = "runs",
                         cache_root: str | Path | None = None, progress: bool = False,
                         log: Callable[[str], None] | None = print) -> dict[str, Path]:
    """:func:`get_or_train` for each of ``methods`` (in order): method -> run folder. ``log`` receives one
    line per method with the seconds it took (to train, or to find the cached run)."""
    runs = {}
    for method in methods:
        started = time.perf_counter()
        runs[method] = get_or_train(corpus, method, profile, seed, root=root, cache_root=cache_root, progress=progress)
        if log is not None:
            log(f"{method:>13}: {time.perf_counter() - started:6.1f} s  ({runs[method].name})")
    return runs


def get_or_train_seeds(corpus: str, methods: Sequence[str], profile: Profile, seeds: Sequence[int], root: str | Path = "runs",
                       cache_root: str | Path | None = None, progress: bool = False,
                       log: Callable[[str], None] | None = print) -> dict[str, list[Path]]:
    """:func:`get_or_train` for each of ``methods`` × training ``seeds``: method -> run folders, one per
    seed in the order given. The data (world, split) is fixed by ``world.seed``, so the seeds differ in
    initialisation, batch order and selection sampling only."""
    if not seeds:
        raise ValueError("get_or_train_seeds needs at least one training seed, e.g. seeds=[0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"training seeds must be distinct, got {list(seeds)}")
    runs: dict[str, list[Path]] = {}
    for method in methods:
        for seed in seeds:
            started = time.perf_counter()
            runs.setdefault(method, []).append(get_or_train(corpus, method, profile, seed, root=root, cache_root=cache_root, progress=progress))
            if log is not None:
                log(f"{method:>13} seed {seed}: {time.perf_counter() - started:6.1f} s  ({runs[method][-1].name})")
    return runs


@dataclass(frozen=True)
class TrainJob:
    """One run of :func:`get_or_train_many`: what :func:`get_or_train` takes."""

    corpus: str
    method: str
    profile: Profile
    seed: int = 0


def resolve_train_workers(requested: int | str, accelerator: str) -> int:
    """Worker processes for :func:`get_or_train_many`: ``"auto"`` is one per CPU core on a CPU-only
    machine (:func:`lacy.profiles.resolve_processes`) and 1 with a GPU (runs share one device badly)."""
    if requested == "auto" and accelerator != "cpu":
        return 1
    return resolve_processes(requested, key="workers")


def worker_threads(workers: int) -> int:
    """Intra-op threads of each of ``workers`` training processes: this machine's cores shared out, at least one."""
    return max(1, resolve_processes("auto") // workers)


def get_or_train_many(jobs: Sequence[TrainJob], *, root: str | Path = "runs", cache_root: str | Path | None = None,
                      workers: int | str = "auto", log: Callable[[str], None] | None = print) -> list[Path]:
    """:func:`get_or_train` for every job: the run folders, in the order of ``jobs``.

    Finished runs are reused; the missing ones are trained ``workers`` at a time in worker processes
    (``"auto"``: :func:`resolve_train_workers`), each with ``cores // workers`` intra-op threads. Why:
    a small model's step is dominated by element-wise kernels and Python overhead that do not spread
    over two threads, so two one-thread runs side by side finish sooner than one after the other
    (``lacy bench runs``: 1.24x for chapter 7's four smallest runs of 150 steps on a 2-core CPU, worker
    start-up included). A CPU run's weights depend on its thread count in the last bits (matmul
    reductions are split differently), so ``summary.json`` records ``threads``;
    the same jobs with the same ``workers`` on the same machine give the same runs. Jobs whose method
    needs a reference model (``rho``, ...) train in this process, one at a time, because they may
    train that shared reference first. ``log`` receives one line per job with its seconds.
    """
    folders = [run_dir(job.corpus, job.method, job.profile, job.seed, root) for job in jobs]
    missing = {folder: job for folder, job in sorted(zip(folders, jobs), key=lambda pair: -_job_flops(pair[1]))
               if not (folder / "summary.json").exists()}  # longest first, so the pool does not end on one long run
    serial = {folder: job for folder, job in missing.items()
              if get_method(job.method).needs_reference(JUDGES[get_corpus(job.corpus).judge])}
    parallel = {folder: job for folder, job in missing.items() if folder not in serial}
    accelerator = resolve_accelerator(next(iter(missing.values())).profile.train.accelerator) if missing else "cpu"
    n_workers = min(resolve_train_workers(workers, accelerator), len(parallel))
    report = log or (lambda _: None)
    if n_workers <= 1:
        serial = {**parallel, **serial}
        parallel = {}
    else:
        caches = {content_key(cache_config(j.corpus, j.profile, j.seed)): j for j in parallel.values()}
        for job in caches.values():  # build each token cache once here, not in every worker at once
            LacyDataModule(job.corpus, job.profile, seed=job.seed, cache_root=cache_root).setup("fit")
        threads = worker_threads(n_workers)
        with ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start_worker, initargs=(threads, list(warnings.filters))) as pool:
            futures = {pool.submit(_train_job, job, folder, cache_root): folder for folder, job in parallel.items()}
            for future in as_completed(futures):
                report(f"{futures[future].name}: {future.result():6.1f} s  (worker process, {threads} thread(s))")
    for folder, job in serial.items():
        report(f"{folder.name}: {_train_job(job, folder, cache_root):6.1f} s")
    return folders


def _start_worker(threads: int, warning_filters: list) -> None:
    """A training worker: its intra-op thread count, and the caller's warning filters (a chapter's
    silenced library chatter stays silenced in the worker's output)."""
    torch.set_num_threads(threads)
    warnings.filters[:0] = warning_filters


def _job_flops(job: TrainJob) -> float:
    from lacy.plan import train_flops_per_token

    profile = job.profile
    tokens = profile.train.max_steps * profile.train.batch_size * profile.data.seq_len
    return train_flops_per_token(profile.model, profile.data.vocab_size, profile.data.seq_len) * tokens


def _train_job(job: TrainJob, out: Path, cache_root: str | Path | None) -> float:
    started = time.perf_counter()
    train(job.corpus, job.method, job.profile, job.seed, out, cache_root=cache_root, progress=False)
    return time.perf_counter() - started


@contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Silence Lightning's info lines and transformers' save bars (for chapters run with progress off)."""
    if not enabled:
        yield
        return
    from transformers.utils import logging as hf_logging

    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    bars = hf_logging.is_progress_bar_enabled()
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        hf_logging.disable_progress_bar()
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


@contextmanager
def _deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration of a run only (Lightning would leave them on)."""
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(enabled)
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def train(corpus: str, method: str, profile: Profile, seed: int, out: str | Path, cache_root: str | Path | None = None,
          reference: Path | None = None, progress: bool = True, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Pretrain an SLM on ``corpus`` with the selection ``method`` and write the run folder ``out``.

    Resumes from the newest intact checkpoint in ``out/checkpoints`` when there is one, and only
    under the settings recorded in ``out/run.json`` (a ConfigError otherwise, with the command that
    starts fresh); a finished run with the same settings is not trained again: its summary is
    returned. ``reference`` is a model folder used by methods that need one (reference losses for
    ``rho``/``rho_excess``; reference top-k for a corpus whose judge reads them, see
    :meth:`lacy.train.selection.Method.needs_reference`); by default a ``standard`` run with the
    profile's helper model and training (``profile.as_helper()``: more capacity and more steps than
    the SLM) on the same corpus and seed is trained or reused next to ``out``.
    Extra Lightning ``callbacks`` are added to the Trainer. Returns the summary (also written to
    ``out/summary.json``).
    """
    judge, spec = JUDGES[get_corpus(corpus).judge], get_method(method)
    out = check_writable(out, directory=True)
    settings = run_settings(corpus, method, profile, seed, content_key(cache_config(corpus, profile, seed)))
    finished = check_run_folder(out, settings)
    if finished is not None:
        _log(f"[lacy] {out} already holds this run, finished; nothing to train (remove it to train again)")
        return finished
    write_run_record(out, settings)
    tcfg = profile.train
    accelerator = resolve_accelerator(tcfg.accelerator)
    retained = retain_freed_memory()  # fewer page faults per step; changes no result (lacy.train.memory)

    dm = LacyDataModule(corpus, profile, seed=seed, cache_root=cache_root)
    dm.setup("fit")  # builds the token cache when missing, else verifies and loads it (once per run)
    if spec.needs_reference(judge):
        # The reference has more capacity and training than the SLM: the helper-size standard model.
        reference = reference or get_or_train(corpus, "standard", profile.as_helper(), seed, root=out.parent,
                                              cache_root=cache_root, progress=progress) / "model"
        ref_loss, ref_topk = reference_token_arrays(reference, dm, top_k=spec.reference_top_k(judge))
        dm.attach_token_array("ref_loss", ref_loss)
        if ref_topk is not None:
            dm.attach_token_array("ref_topk", ref_topk)

    L.seed_everything(seed, workers=True, verbose=False)
    model = build_slm(profile.model, dm.vocab_size, profile.data.seq_len, dm.pad_id, dm.tokenizer.bos_token_id,
                      dm.tokenizer.eos_token_id, seed, call_id=dm.call_id)
    compiled = resolve_compile(tcfg.compile, accelerator, tcfg.max_steps)
    if compiled:
        compile_cache_dir(cache_root)  # paid once per machine: Inductor's caches persist under the lacy cache
    module = LacyLM(model, method, dm.call_id, tcfg, judge=judge.judge if spec.needs_judge else None, seed=seed,
                    compile=compiled)
    with _deterministic_algorithms(accelerator == "cpu"), _quiet(not progress):
        trainer = build_trainer(tcfg, accelerator, out, progress, callbacks)
        train_windows = dm.dataset("train")
        train_loader = DataLoader(train_windows, batch_sampler=StepBatchSampler(len(train_windows), tcfg.batch_size, seed, trainer),
                                  num_workers=tcfg.num_workers, persistent_workers=tcfg.num_workers > 0)
        val_loader = dm.val_dataloader()
        resume_from = resume_checkpoint(out / "checkpoints", _log)
        started = time.perf_counter()
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=resume_from)
        seconds = time.perf_counter() - started
        run_metrics = {k: int(v) for k, v in trainer.callback_metrics.items() if k.startswith("run/")}
        if "run/end_step" not in run_metrics:  # resumed at max_steps (killed before the summary): no step left
            totals = module.token_totals.tolist()
            run_metrics = {"run/call_tokens": totals[0], "run/counted_tokens": totals[1], "run/valid_tokens": totals[2],
                           "run/start_step": trainer.global_step, "run/end_step": trainer.global_step}
        final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if not final or run_metrics["run/end_step"] % tcfg.val_every:  # no validation after the last step yet
            final = trainer.validate(module, dataloaders=val_loader, verbose=False)[0]
    resumed_from, steps = run_metrics["run/start_step"], run_metrics["run/end_step"]
    summary = {
        "method": method, "corpus": corpus, "profile": profile.name, "seed": seed,
        "params": count_parameters(model),
        "train_tokens": run_metrics["run/valid_tokens"],
        "call_fraction": run_metrics["run/call_tokens"] / max(run_metrics["run/counted_tokens"], 1),
        "val_loss": final["val/loss"], "val_loss_fact": final["val/loss_fact"], "val_loss_nonfact": final["val/loss_nonfact"],
        "tokens_per_s": (steps - resumed_from) * tcfg.batch_size * profile.data.seq_len * trainer.world_size / max(seconds, 1e-9),
        "seconds": seconds, "steps": steps, "resumed_from_step": resumed_from,
        "precision": str(trainer.precision), "accelerator": accelerator, "compile": compiled, "threads": torch.get_num_threads(),
        "retain_freed_memory": retained,
        "cache_key": dm.cache_key, "reference": str(reference) if reference else None,
        "config": profile.to_dict(),
    }
    if trainer.is_global_zero:
        with _quiet(not progress):
            export_model(model, dm.tokenizer, out / "model")
        write_metrics_csv(out / "logs", out / "metrics.csv")
        write_json_atomic(out / "summary.json", summary)
    return summary


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def build_trainer(tcfg: TrainConfig, accelerator: str, out: Path, progress: bool, callbacks: Sequence[Callback] = ()) -> L.Trainer:
    """A Trainer for ``tcfg``: step-based, validation every ``val_every`` steps, checkpoints every
    ``ckpt_every`` steps into ``out/checkpoints`` (plus ``last.ckpt``), CSV logs in ``out/logs``.

    ``accelerator/devices/strategy/num_nodes`` pass through, so DDP or FSDP are Lightning strategies;
    each rank draws its own batches from :class:`StepBatchSampler` (no distributed sampler).
    """
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", every_n_train_steps=tcfg.ckpt_every, save_top_k=1,
                                 save_last=True, filename="step-{step}", auto_insert_metric_name=False)
    return L.Trainer(
        accelerator=accelerator, devices=tcfg.devices, strategy=tcfg.strategy, num_nodes=tcfg.num_nodes,
        precision=resolve_precision(tcfg.precision, accelerator), max_steps=tcfg.max_steps,
        gradient_clip_val=tcfg.grad_clip or None, val_check_interval=tcfg.val_every, check_val_every_n_epoch=None,
        limit_val_batches=tcfg.val_batches, num_sanity_val_steps=0, log_every_n_steps=tcfg.log_every,
        # Flushed at every log call, so a killed run keeps the rows (validation included) logged before.
        logger=CSVLogger(out, name="logs", flush_logs_every_n_steps=1), callbacks=[checkpoint, *callbacks], enable_progress_bar=progress,
        enable_model_summary=False, use_distributed_sampler=False, default_root_dir=out,
    )


def write_metrics_csv(log_root: Path, path: Path) -> pd.DataFrame:
    """Merge the CSV logs of every session (``version_*``) into one row per step, written atomically."""
    frames = [pd.read_csv(f) for f in sorted(log_root.glob("version_*/metrics.csv"), key=lambda f: int(f.parent.name.split("_")[1]))]
    frames = [f for f in frames if not f.empty]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["step"])
    table = table.drop(columns=["epoch"], errors="ignore").groupby("step", as_index=False).last()
    with atomic_write(path) as fh:
        table.to_csv(fh, index=False)
    return table


def reference_token_arrays(model_dir: Path, dm: LacyDataModule, top_k: int = 0, batch_size: int = 32,
                           split: str = "train") -> tuple[np.ndarray, np.ndarray | None]:
    """A reference model's per-token loss (and top-k next tokens) over the flat token stream of ``split``.

    Aligned with the stream as :meth:`LacyDataModule.attach_token_array` expects: entry ``j`` scores
    token ``j`` as the target of the training window that contains it (entry 0 is never a target, 0).
    The loss is the NLL renormalised without ``<CALL>``, the same "current loss" the rules rank.
    Cached under the data cache root, keyed by the data cache key and the reference weights' hash.
    """
    model_dir = Path(model_dir)
    weights = model_dir / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"no model.safetensors in {model_dir}; pass a folder written by export_model (<run>/model)")
    dm.setup()
    folder = dm.cache.path.parent / "references" / f"{dm.cache_key}-{sha256_file(weights)[:16]}"
    loss_path = folder / f"{split}.loss.npy"
    topk_path = folder / f"{split}.top{top_k}.npy"
    if loss_path.exists() and (top_k == 0 or topk_path.exists()):
        return np.load(loss_path), (np.load(topk_path) if top_k else None)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, _ = load_model(model_dir, device=device)
    windows = torch.from_numpy(dm.flat_windows(split))
    n_tokens = dm.arrays(split)["ids"].shape[0]
    losses, tops = [], []
    dtype = autocast_dtype(resolve_precision(dm.profile.train.precision, "gpu" if device == "cuda" else "cpu"))  # fp16 on a T4
    autocast = torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None)
    with torch.no_grad(), autocast:
        for chunk in windows.split(batch_size):
            chunk = chunk.to(device)
            logits = model(input_ids=chunk[:, :-1]).logits
            losses.append(token_terms(logits, chunk[:, 1:], dm.call_id).learn.float().cpu())
            if top_k:
                tops.append(without_call(logits.float(), dm.call_id).topk(top_k, dim=-1).indices.to(torch.int32).cpu())
    loss = np.zeros(n_tokens, dtype=np.float32)
    loss[1:] = torch.cat(losses).reshape(-1)[: n_tokens - 1].numpy()
    topk = None
    if top_k:
        topk = np.zeros((n_tokens, top_k), dtype=np.int32)
        topk[1:] = torch.cat(tops).reshape(-1, top_k)[: n_tokens - 1].numpy()
    folder.mkdir(parents=True, exist_ok=True)
    save_npy_atomic(loss_path, loss)
    if topk is not None:
        save_npy_atomic(topk_path, topk)
    return loss, topk
