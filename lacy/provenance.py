"""Where a number came from: the provenance of a chapter's run, and saving its headline results.

Every chapter of the book calls :func:`start` right after its ``parameters`` cell and :func:`show` in
its last cell. ``show`` prints a ``key: value`` block whose first line is ``profile: <name>`` (read by
``python -m lacy.book check-outputs`` to refuse committed chapters executed with the ``smoke``
profile), then a table of the profile settings the chapter ran with. The block records the seed, the
settings that differ from the named profile (``overrides``), the lacy version and git commit (with a
dirty flag for the library sources), the versions of the main dependencies, the device and the wall
time since ``start()``.

The settings are those of the :class:`~lacy.profiles.Profile` object the chapter used, never a
re-resolve of its name: a chapter that runs with ``settings.override(...)`` hands that object to
:func:`use` (or to :func:`start`, :func:`show`), and the block shows the overridden values.

Headline numbers are saved with :func:`save_results` into the results store (:mod:`lacy.results`,
which documents the schema and builds the summary page's tables).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

import lacy
from lacy.profiles import PROFILES, Profile, get_profile
from lacy.results import format_seconds, write_results

PACKAGES = ("torch", "lightning", "transformers", "tokenizers", "spacy")
"""Dependencies whose versions are recorded with every run."""

PROFILE_LINE_PREFIX = "profile: "
"""The rendered block starts with ``profile: <name>``; :mod:`lacy.book` parses this line."""

OUTPUT_METADATA_KEY = "lacy_provenance"
"""Key of the output metadata (``{"profile": ..., "seed": ...}``) attached to :func:`show`'s table."""


@dataclass
class _Session:
    started: float | None = None
    profile: Profile | None = None
    seed: int | None = None


_session = _Session()


@dataclass(frozen=True)
class Provenance:
    """Everything needed to say which code, settings and machine produced a chapter's outputs."""

    profile: str
    seed: int | None
    settings: dict[str, Any]
    overrides: dict[str, Any]
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
        wall = "not measured (call lacy.provenance.start() first)" if self.wall_seconds is None else format_seconds(self.wall_seconds)
        out = [
            f"{PROFILE_LINE_PREFIX}{self.profile}",
            f"seed: {self.seed}",
            *([f"overrides: {', '.join(f'{k}={_format_value(v)}' for k, v in self.overrides.items())}"] if self.overrides else []),
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

    Call it in the cell right after the ``parameters`` cell. The remembered profile (a name is
    resolved now; a :class:`~lacy.profiles.Profile` keeps its overrides) and seed are the defaults
    of :func:`show` and :func:`save_results`.
    """
    _session.started = time.perf_counter()
    # A chapter's output is read, not watched: no per-load progress bars, no library chatter.
    # tqdm.auto warns once per kernel that ipywidgets is missing; Lightning 2.6 trips a torch
    # deprecation inside its own pytree helper (nothing a user can act on).
    warnings.filterwarnings("ignore", message="IProgress not found")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    _session.profile = None if profile is None else _resolve_profile(profile)
    _session.seed = seed


def use(profile: Profile) -> Profile:
    """Record that the chapter runs with ``profile`` (e.g. ``settings.override({...})``); returns it.

    Later :func:`show` and :func:`save_results` calls record these settings, overrides included,
    also when they are given the profile's name.
    """
    if not isinstance(profile, Profile):
        raise TypeError(f"use() expects a lacy.profiles.Profile (e.g. settings.override(...)), got {type(profile).__name__}")
    _session.profile = profile
    return profile


def capture(profile: str | Profile | None = None, seed: int | None = None, **extra: Any) -> Provenance:
    """Collect the provenance of the current process.

    ``profile`` is a :class:`~lacy.profiles.Profile` (kept with its overrides) or a name: the
    profile given to :func:`start` or :func:`use` when it has that name, else the named profile.
    Defaults to the one given to :func:`start` or :func:`use`.
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
        overrides=_overrides(resolved),
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


def save_results(run_root: str | Path, chapter: str, results: Mapping[str, Any] | pd.DataFrame, *,
                 profile: str | Profile | None = None, seed: int | None = None) -> Path:
    """Save a chapter's headline numbers with their provenance into the results store; returns the path.

    ``chapter`` is the notebook name without extension (``"04_cascade"``); ``results`` a mapping of
    names to numbers or a DataFrame (schema: :mod:`lacy.results`). ``profile`` and ``seed`` default
    to those given to :func:`start` or :func:`use`.
    """
    return write_results(run_root, chapter, results, capture(profile, seed).to_dict())


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


# --- helpers --------------------------------------------------------------------------------------







def _resolve_profile(profile: str | Profile | None) -> Profile:
    if isinstance(profile, Profile):
        return profile
    if profile is None:
        if _session.profile is None:
            raise ValueError(
                "no profile given: pass profile=... or call lacy.provenance.start(profile, seed) first "
                "(right after the chapter's parameters cell)"
            )
        return _session.profile
    if _session.profile is not None and _session.profile.name == profile:
        return _session.profile
    return get_profile(profile)


def _overrides(profile: Profile) -> dict[str, Any]:
    """Dotted keys whose value differs from the named profile's (empty for a profile of another name)."""
    base = PROFILES.get(profile.name)
    return {} if base is None else _differences(base.to_dict(), profile.to_dict())


def _differences(base: Mapping[str, Any], actual: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in actual.items():
        if isinstance(value, Mapping):
            out.update(_differences(base.get(key, {}), value, f"{prefix}{key}."))
        elif base.get(key) != value:
            out[f"{prefix}{key}"] = value
    return out


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



def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_format_value(v) for v in value) + ")"
    return str(value)
