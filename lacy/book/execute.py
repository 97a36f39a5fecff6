"""Execute chapters with papermill, in place or in a copy, recording timings."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import nbformat

from lacy.book.layout import DEFAULT_RUN_ROOT, KERNEL_DISPLAY_NAME, KERNEL_NAME, BookError, chapter_name, log, one_line, toc_notebooks
from lacy.profiles import ENV_OVERRIDES, PROFILES, env_overrides

# --- execute --------------------------------------------------------------------------------------


@dataclass
class ExecutionReport:
    """Wall seconds per chapter that ran, and the chapters that failed (name → error summary)."""

    profile: str
    seed: int
    seconds: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "seed": self.seed, "overrides": self.overrides, "chapters": self.seconds,
                "failed": self.failed, "total": self.total}


def execute(
    root: Path,
    profile: str,
    seed: int,
    chapters: Sequence[str] | None = None,
    run_root: str = DEFAULT_RUN_ROOT,
    timings_dir: Path | None = None,
    overrides: Mapping[str, str] | None = None,
) -> ExecutionReport:
    """Execute the ``_toc.yml`` notebooks under ``root`` in place with papermill (``summary`` last).

    ``chapters`` restricts the run to those names (``04_cascade``). Each notebook runs in its own
    folder with the parameters ``profile``, ``seed`` and ``run_root``; it replaces the file only when
    it ran without error (a failed run is kept under ``_build/failed/``). ``overrides`` (dotted keys, as
    ``--set``; added to any already in ``$LACY_SET``) reach every chapter's ``get_profile`` through ``$LACY_SET``. Writes
    ``timings-{profile}.json`` (``timings-{profile}+KEY=VALUE….json`` with overrides) into ``timings_dir``
    (default ``root/_build``).
    """
    import papermill

    if profile not in PROFILES:
        raise BookError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    overrides = {**env_overrides(), **(overrides or {})}  # what every chapter's get_profile will apply
    PROFILES[profile].override(overrides)  # refuse a bad key or value before any chapter starts
    _require_kernel()
    notebooks = _select(toc_notebooks(root), chapters)
    report = ExecutionReport(profile=profile, seed=seed, overrides=overrides)
    work = root / "_build" / "executing"
    failed_dir = root / "_build" / "failed"
    work.mkdir(parents=True, exist_ok=True)
    for notebook in notebooks:
        name = chapter_name(notebook)
        source = root / notebook
        output = work / source.name
        began = time.perf_counter()
        try:
            with _environment(ENV_OVERRIDES, json.dumps(overrides)):
                papermill.execute_notebook(
                    str(source), str(output),
                    parameters={"profile": profile, "seed": seed, "run_root": run_root},
                    kernel_name=KERNEL_NAME, cwd=str(source.parent), progress_bar=False, log_output=False,
                )
        except Exception as error:  # papermill raises PapermillExecutionError and kernel/IO errors alike
            failed_dir.mkdir(parents=True, exist_ok=True)
            if output.exists():
                os.replace(output, failed_dir / source.name)
            report.failed[name] = one_line(error)
            log(f"{name}: FAILED after {time.perf_counter() - began:.1f} s: {report.failed[name]} "
                f"(executed copy: {failed_dir / source.name})")
            continue
        seconds = time.perf_counter() - began
        _record_metadata(output, notebook, profile, seed)
        os.replace(output, source)
        report.seconds[name] = round(seconds, 2)
        log(f"{name}: {seconds:.1f} s")
    shutil.rmtree(work, ignore_errors=True)
    log(f"{len(report.seconds)} chapter(s) in {report.total:.1f} s (profile {profile}, seed {seed})")
    suffix = "".join(f"+{key}={value}" for key, value in sorted(overrides.items()))
    timings = (timings_dir or root / "_build") / f"timings-{profile}{suffix}.json"
    timings.parent.mkdir(parents=True, exist_ok=True)
    timings.write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    return report


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """Set ``$name`` for the kernels started inside, then restore what was there."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _select(notebooks: list[Path], chapters: Sequence[str] | None) -> list[Path]:
    if not chapters:
        return notebooks
    names = {chapter_name(path): path for path in notebooks}
    wanted = [chapter_name(chapter) for chapter in chapters]
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise BookError(f"unknown chapter(s) {', '.join(unknown)}; chapters in _toc.yml: {', '.join(names)}")
    return [path for path in notebooks if chapter_name(path) in wanted]


def _require_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        raise BookError(
            f"no Jupyter kernel named {KERNEL_NAME!r}; register it with `make install` or "
            f"`{sys.executable} -m ipykernel install --sys-prefix --name {KERNEL_NAME} --display-name '{KERNEL_DISPLAY_NAME}'`"
        ) from None


def _record_metadata(output: Path, notebook: Path, profile: str, seed: int) -> None:
    """Store the profile in the notebook metadata and keep machine paths out of papermill's."""
    nb = nbformat.read(output, as_version=4)
    nb.metadata["lacy"] = {"profile": profile, "seed": seed}
    papermill_meta = nb.metadata.get("papermill", {})
    papermill_meta["input_path"] = papermill_meta["output_path"] = notebook.as_posix()
    nbformat.write(nb, output)
