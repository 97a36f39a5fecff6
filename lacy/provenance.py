"""Where a number came from: run provenance for chapters, and the store of their headline results.

Every chapter of the book calls :func:`start` right after its ``parameters`` cell and :func:`show` in
its last cell. ``show`` prints a ``key: value`` block whose first line is ``profile: <name>`` (read by
``python -m lacy.book check-outputs`` to refuse committed chapters executed with the ``smoke``
profile), then a table of the resolved profile settings. The block records the seed, the lacy
version and git commit (with a dirty flag for the library sources), the versions of the main
dependencies, the device and the wall time since ``start()``.

Headline numbers are saved with :func:`save_results` as JSON under
``{run_root}/results/{profile}/{chapter}.json`` and read back by the summary page
(``book/summary.ipynb``) through :func:`load_results` and :func:`tidy_results`. Results are either a
mapping of names to numbers (nested mappings allowed; keys are joined with ``.``) or a DataFrame.
For the summary's cross-chapter tables, prefer a tidy DataFrame with a ``metric`` and a ``value``
column plus the columns that identify the number: ``corpus``, ``method``, ``budget`` (call budget
as a fraction), ``signal``. Metric names the summary tabulates: ``factscore`` (0-100, at a
``budget``; the paper's main budget is 0.22, §5), ``auroc`` (per ``signal``, §3) and names
containing ``ratio`` (benchmark ratios).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

import lacy
from lacy.io import atomic_write
from lacy.profiles import Profile, get_profile

PACKAGES = ("torch", "lightning", "transformers", "tokenizers", "spacy")
"""Dependencies whose versions are recorded with every run."""

PROFILE_LINE_PREFIX = "profile: "
"""The rendered block starts with ``profile: <name>``; :mod:`lacy.book` parses this line."""

OUTPUT_METADATA_KEY = "lacy_provenance"
"""Key of the output metadata (``{"profile": ..., "seed": ...}``) attached to :func:`show`'s table."""


@dataclass
class _Session:
    started: float | None = None
    profile: str | None = None
    seed: int | None = None


_session = _Session()


@dataclass(frozen=True)
class Provenance:
    """Everything needed to say which code, settings and machine produced a chapter's outputs."""

    profile: str
    seed: int | None
    settings: dict[str, Any]
    lacy_version: str
    git_commit: str
    git_dirty: bool | None
    python: str
    packages: dict[str, str]
    device: str
    cpu: str
    cores: int
    wall_seconds: float | None
    date: str
    extra: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The ``key: value`` block, ``profile: <name>`` first."""
        dirty = {True: ", dirty", False: "", None: ""}[self.git_dirty]
        wall = "not measured (call lacy.provenance.start() first)" if self.wall_seconds is None else _format_seconds(self.wall_seconds)
        out = [
            f"{PROFILE_LINE_PREFIX}{self.profile}",
            f"seed: {self.seed}",
            f"lacy: {self.lacy_version} (git {self.git_commit}{dirty})",
            f"python: {self.python}",
            *(f"{name}: {version}" for name, version in self.packages.items()),
            f"device: {self.device}",
            f"cpu: {self.cpu} ({self.cores} cores)",
            f"wall time: {wall}",
            f"date: {self.date}",
            *(f"{key}: {value}" for key, value in self.extra.items()),
        ]
        return out

    def render(self) -> str:
        return "\n".join(self.lines())

    def settings_table(self) -> pd.DataFrame:
        """The resolved profile, one row per section (``world``, ``data``, ``model``, ...)."""
        rows = []
        for section, values in self.settings.items():
            if section == "name":
                continue
            if isinstance(values, Mapping):
                text = ", ".join(f"{key}={_format_value(value)}" for key, value in values.items())
            else:
                text = _format_value(values)
            rows.append({"section": section, "settings": text})
        return pd.DataFrame(rows).set_index("section")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def start(profile: str | Profile | None = None, seed: int | None = None) -> None:
    """Start the wall-time clock of a chapter and remember its profile and seed.

    Call it in the cell right after the ``parameters`` cell. The remembered profile and seed are
    the defaults of :func:`show` and :func:`save_results`.
    """
    _session.started = time.perf_counter()
    # A chapter's output is read, not watched: no per-load progress bars, no library chatter.
    # tqdm.auto warns once per kernel that ipywidgets is missing; Lightning 2.6 trips a torch
    # deprecation inside its own pytree helper (nothing a user can act on).
    warnings.filterwarnings("ignore", message="IProgress not found")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    _session.profile = _profile_name(profile) if profile is not None else None
    _session.seed = seed


def capture(profile: str | Profile | None = None, seed: int | None = None, **extra: Any) -> Provenance:
    """Collect the provenance of the current process.

    ``profile`` is a profile name (resolved with :func:`lacy.profiles.get_profile`) or a resolved
    :class:`~lacy.profiles.Profile` (keeps overrides); defaults to the one given to :func:`start`.
    ``extra`` adds ``key: value`` lines (e.g. ``helper="SmolLM2-135M"``).
    """
    resolved = _resolve_profile(profile)
    seed = _session.seed if seed is None else seed
    commit, dirty = git_state()
    cpu, cores = _cpu()
    wall = None if _session.started is None else time.perf_counter() - _session.started
    return Provenance(
        profile=resolved.name,
        seed=seed,
        settings=resolved.to_dict(),
        lacy_version=lacy.__version__,
        git_commit=commit,
        git_dirty=dirty,
        python=platform.python_version(),
        packages={name: _version(name) for name in PACKAGES},
        device=_accelerator(),
        cpu=cpu,
        cores=cores,
        wall_seconds=wall,
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        extra=dict(extra),
    )


def show(profile: str | Profile | None = None, seed: int | None = None, **extra: Any) -> None:
    """Render the provenance block (last cell of every chapter).

    Prints the ``key: value`` block (first line ``profile: <name>``) and displays the resolved
    profile settings as a table whose output metadata carries ``{"profile", "seed"}``.
    """
    record = capture(profile, seed, **extra)
    print(record.render())
    table = record.settings_table()
    if in_ipython():
        from IPython.display import display

        display(table, metadata={OUTPUT_METADATA_KEY: {"profile": record.profile, "seed": record.seed}})
    else:
        print(table.to_string())


def git_state(path: str | Path | None = None) -> tuple[str, bool | None]:
    """``(short commit, dirty)`` of the git checkout holding the lacy sources.

    ``dirty`` covers tracked changes under the ``lacy`` package and ``pyproject.toml`` only, so
    executing chapters in place does not mark later chapters dirty. Outside a git checkout, falls back
    to the commit pip recorded for a ``git+`` install (``dirty`` is then None), else ``"unknown"``.
    """
    package_dir = Path(path) if path is not None else Path(lacy.__file__).resolve().parent
    try:
        root = Path(_git(package_dir, "rev-parse", "--show-toplevel")).resolve()
        if root / package_dir.name != package_dir.resolve():  # e.g. a venv inside another project's checkout
            return _installed_commit(), None
        commit = _git(root, "rev-parse", "--short", "HEAD")
        changes = _git(root, "status", "--porcelain", "--untracked-files=no", "--", package_dir.name, "pyproject.toml")
        return commit, bool(changes)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return _installed_commit(), None


# --- results store --------------------------------------------------------------------------------


def results_path(run_root: str | Path, profile: str, chapter: str) -> Path:
    """``{run_root}/results/{profile}/{chapter}.json``."""
    return Path(run_root) / "results" / profile / f"{chapter}.json"


def save_results(
    run_root: str | Path,
    chapter: str,
    results: Mapping[str, Any] | pd.DataFrame,
    *,
    profile: str | Profile | None = None,
    seed: int | None = None,
) -> Path:
    """Save a chapter's headline numbers with their provenance; returns the JSON path.

    ``chapter`` is the notebook name without extension (``"04_cascade"``). ``profile`` and ``seed``
    default to those given to :func:`start`. NaN and infinities are stored as null.
    """
    record = capture(profile, seed)
    if isinstance(results, pd.DataFrame):
        kind, payload = "table", results.reset_index(drop=not _has_named_index(results)).to_dict(orient="records")
    elif isinstance(results, Mapping):
        kind, payload = "mapping", dict(results)
    else:
        raise TypeError(f"save_results expects a mapping or a pandas DataFrame, got {type(results).__name__}")
    document = {
        "chapter": chapter,
        "profile": record.profile,
        "seed": record.seed,
        "kind": kind,
        "results": payload,
        "provenance": record.to_dict(),
    }
    path = results_path(run_root, record.profile, chapter)
    with atomic_write(path) as fh:
        fh.write(json.dumps(_jsonable(document), indent=1, allow_nan=False) + "\n")
    return path


@dataclass(frozen=True)
class ChapterResults:
    """One chapter's saved headline numbers (``results``: a dict or a DataFrame) and provenance."""

    chapter: str
    profile: str
    seed: int | None
    results: dict[str, Any] | pd.DataFrame
    provenance: dict[str, Any]


def load_results(run_root: str | Path, profile: str) -> dict[str, ChapterResults]:
    """Every chapter's results saved under ``run_root`` for ``profile``, keyed by chapter name."""
    out: dict[str, ChapterResults] = {}
    for path in sorted((Path(run_root) / "results" / profile).glob("*.json")):
        document = json.loads(path.read_text())
        results = document["results"]
        if document.get("kind") == "table":
            results = pd.DataFrame.from_records(results)
        out[document["chapter"]] = ChapterResults(
            chapter=document["chapter"],
            profile=document["profile"],
            seed=document.get("seed"),
            results=results,
            provenance=document.get("provenance", {}),
        )
    return out


def tidy_results(results: Mapping[str, ChapterResults]) -> pd.DataFrame:
    """All chapters' numbers as one long table: ``chapter``, ``metric``, ``value`` + identifying columns.

    Mappings are flattened (nested keys joined with ``.``); DataFrames with ``metric``/``value``
    columns are kept as they are; other DataFrames are melted, numeric columns becoming metrics and
    the other columns identifying them.
    """
    frames = []
    for name, chapter in results.items():
        if isinstance(chapter.results, pd.DataFrame):
            frame = _tidy_frame(chapter.results)
        else:
            flat = _flatten(chapter.results)
            frame = pd.DataFrame({"metric": list(flat), "value": list(flat.values())})
        frames.append(frame.assign(chapter=name))
    if not frames:
        return pd.DataFrame(columns=["chapter", "metric", "value"])
    tidy = pd.concat(frames, ignore_index=True)
    first = ["chapter", "metric"]
    return tidy[first + [c for c in tidy.columns if c not in (*first, "value")] + ["value"]]


def chapter_status(results: Mapping[str, ChapterResults], chapters: list[str]) -> pd.DataFrame:
    """One row per expected chapter: ``ran`` or ``not run``, with seed, git commit and wall time."""
    rows = []
    for chapter in chapters:
        found = results.get(chapter)
        if found is None:
            rows.append({"chapter": chapter, "status": "not run", "seed": "", "git": "", "wall time": "", "date": ""})
            continue
        prov = found.provenance
        dirty = "+dirty" if prov.get("git_dirty") else ""
        wall = prov.get("wall_seconds")
        rows.append({
            "chapter": chapter,
            "status": "ran",
            "seed": found.seed,
            "git": f"{prov.get('git_commit', 'unknown')}{dirty}",
            "wall time": "" if wall is None else _format_seconds(wall),
            "date": prov.get("date"),
        })
    return pd.DataFrame(rows).set_index("chapter")


def headline_tables(tidy: pd.DataFrame, budget: float = 0.22) -> dict[str, pd.DataFrame]:
    """Cross-chapter tables found in ``tidy``: FactScore at ``budget``, signal AUROCs, bench ratios.

    Returns only the tables for which numbers exist, keyed by a caption. FactScore is pivoted to
    method × corpus when both columns are present (the paper's main budget is 22%, §5); AUROC is
    indexed by ``signal`` when present (§3).
    """
    tables: dict[str, pd.DataFrame] = {}
    if tidy.empty:
        return tables
    metric = tidy["metric"].astype(str).str.lower()
    factscore = tidy[metric.str.contains("factscore")]
    if "budget" in factscore.columns:
        at_budget = pd.to_numeric(factscore["budget"], errors="coerce")
        factscore = factscore[np.isclose(at_budget, budget) | at_budget.isna()]
    if not factscore.empty:
        tables[f"FactScore at a {budget:.0%} call budget"] = _pivot(factscore, ["method", "helper"], "corpus")
    auroc = tidy[metric.str.contains("auroc")]
    if not auroc.empty:
        tables["AUROC of the token signals"] = _pivot(auroc, ["signal", "target"], "corpus")
    ratios = tidy[metric.str.contains("ratio")]
    if not ratios.empty:
        tables["Benchmark ratios"] = ratios.dropna(axis=1, how="all").reset_index(drop=True)
    return tables


# --- helpers --------------------------------------------------------------------------------------


def _pivot(frame: pd.DataFrame, index: list[str], columns: str) -> pd.DataFrame:
    """Pivot ``value`` to ``index`` (the listed columns that exist) × ``columns`` (else × chapter).

    Every identifying column that exists is kept in the index, so unrelated numbers (say AUROCs for
    different targets) are never averaged together."""
    frame = frame.dropna(axis=1, how="all")
    present = [c for c in index if c in frame.columns]
    if not present:
        return frame.reset_index(drop=True)
    return frame.pivot_table(index=present, columns=columns if columns in frame.columns else "chapter",
                             values="value", aggfunc="mean")


def _tidy_frame(frame: pd.DataFrame) -> pd.DataFrame:
    if {"metric", "value"} <= set(frame.columns):
        return frame.copy()
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and c not in ("budget", "seed")]
    ids = [c for c in frame.columns if c not in numeric]
    return frame.melt(id_vars=ids, value_vars=numeric, var_name="metric", value_name="value")


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _has_named_index(frame: pd.DataFrame) -> bool:
    return any(name is not None for name in frame.index.names)


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays unwrapped, NaN/inf → None, paths → str."""
    if isinstance(obj, Mapping):
        return {str(key): _jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(value) for value in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, (Path, pd.Timestamp, dt.datetime, dt.date)):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} {obj!r} in results JSON; use numbers, strings, lists or dicts")


def _profile_name(profile: str | Profile) -> str:
    return profile.name if isinstance(profile, Profile) else str(profile)


def _resolve_profile(profile: str | Profile | None) -> Profile:
    if isinstance(profile, Profile):
        return profile
    name = profile if profile is not None else _session.profile
    if name is None:
        raise ValueError(
            "no profile given: pass profile=... or call lacy.provenance.start(profile, seed) first "
            "(right after the chapter's parameters cell)"
        )
    return get_profile(name)


def in_ipython() -> bool:
    """Whether this code runs inside an IPython shell or Jupyter kernel."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10)
    return done.stdout.strip()


def _installed_commit() -> str:
    try:
        direct_url = metadata.distribution("lacy").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return "unknown"
    commit = json.loads(direct_url or "{}").get("vcs_info", {}).get("commit_id")
    return commit[:7] if commit else "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu() -> tuple[str, int]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return model or platform.processor() or platform.machine() or "unknown", os.cpu_count() or 0


def _accelerator() -> str:
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"{len(names)} × GPU: " + ", ".join(names)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "Apple MPS"
    return "CPU only"


def _format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_format_value(v) for v in value) + ")"
    return str(value)
