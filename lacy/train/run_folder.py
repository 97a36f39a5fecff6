"""What a run folder was made with, and which of its checkpoints can be resumed.

A run folder is only ever resumed or reused by the settings that made it: ``run.json`` records the
method, corpus, seed, profile (with overrides) and data cache key when training starts, and a later
``train`` into the same folder with other settings is refused, with the command that starts fresh,
instead of silently continuing the old weights. A damaged checkpoint (a run killed while writing it,
a truncated copy) is skipped for the newest intact one.
"""

from __future__ import annotations

import json
import re
import shlex
import zipfile
from pathlib import Path
from typing import Any, Callable

from lacy.io import write_json_atomic
from lacy.profiles import DEFAULT_CALL_THRESHOLD, DEFAULT_CALL_WARMUP, ConfigError, Profile

RUN_RECORD = "run.json"
# Settings that change how fast a run goes, never what it computes: they may differ on resumption.
TRANSIENT_SETTINGS = {"data": ("annotate_processes", "annotate_batch_size"), "train": ("num_workers",)}
EVALUATION_ONLY = ("eval", "hub_helper")
"""Profile sections that do not change what training produces: not part of a run's settings (nor of its
folder name), so changing how models are evaluated (subjects, generation length) reuses trained runs."""


_ADDED_MODEL = {"call_head": "token"}
_ADDED_TRAIN = {"call_threshold": DEFAULT_CALL_THRESHOLD, "call_warmup": DEFAULT_CALL_WARMUP}
ADDED_SETTINGS: dict[str, dict[str, Any]] = {"model": _ADDED_MODEL, "helper_model": _ADDED_MODEL,
                                             "train": _ADDED_TRAIN, "helper_train": _ADDED_TRAIN}
"""Settings added after runs were first recorded, with the value every earlier run had implicitly: at that
value they are left out of a run's settings and folder name, so earlier run folders keep their names and
are still reused; any other value is recorded (and names a folder of its own)."""


def training_config(profile: Profile) -> dict[str, Any]:
    """The profile's settings that training depends on: everything but :data:`EVALUATION_ONLY`, and the
    :data:`ADDED_SETTINGS` that are at their implicit earlier value."""
    config = {key: value for key, value in profile.to_dict().items() if key not in EVALUATION_ONLY}
    for section, added in ADDED_SETTINGS.items():
        config[section] = {k: v for k, v in config[section].items() if k not in added or v != added[k]}
    return config


def run_settings(corpus: str, method: str, profile: Profile, seed: int, cache_key: str) -> dict[str, Any]:
    """The settings that determine a run's result (recorded in ``run.json``)."""
    config = training_config(profile)
    for section, names in TRANSIENT_SETTINGS.items():
        config[section] = {k: v for k, v in config[section].items() if k not in names}
    return json.loads(json.dumps({"method": method, "corpus": corpus, "seed": seed, "profile": profile.name,
                                  "config": config, "cache_key": cache_key}, default=str))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}." if key != "config" or prefix else ""))
        return flat
    return {prefix.rstrip("."): value}


def settings_differences(recorded: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """``"key: recorded -> requested"`` for every setting that differs (``config.`` left out of keys)."""
    old, new = _flatten(recorded), _flatten(requested)
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)]


def _recorded_settings(out: Path) -> dict[str, Any] | None:
    """The settings recorded in ``out``: ``run.json``, else those in a ``summary.json`` of an older lacy."""
    record, summary = out / RUN_RECORD, out / "summary.json"
    try:
        if record.is_file():
            return json.loads(record.read_text())
        if summary.is_file():
            data = json.loads(summary.read_text())
            for section, names in TRANSIENT_SETTINGS.items():
                for name in names:
                    data.get("config", {}).get(section, {}).pop(name, None)
            return {key: data.get(key) for key in ("method", "corpus", "seed", "profile", "config", "cache_key")}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise ConfigError(f"{out} has an unreadable run record ({err}); {_fresh_hint(out)}") from None
    return None


def _fresh_hint(out: Path) -> str:
    return f"to start fresh, remove it (rm -rf {shlex.quote(str(out))}) or pass another --out"


def check_run_folder(out: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """Check that ``out`` may hold a run with ``settings``; return its summary if it is already finished.

    Returns None for a new folder or an unfinished run with the same settings (to be resumed).
    Raises :class:`ConfigError` when the folder was made with other settings, or holds checkpoints
    without a record of their settings.
    """
    recorded = _recorded_settings(out)
    if recorded is None:
        if any((out / "checkpoints").glob("*.ckpt")):
            raise ConfigError(f"{out} holds checkpoints but no record ({RUN_RECORD}) of the settings that made them, "
                              f"so it cannot be resumed safely; {_fresh_hint(out)}")
        return None
    differences = settings_differences(recorded, settings)
    if differences:
        raise ConfigError(f"{out} holds a run made with other settings ({'; '.join(differences)}); it is not resumed "
                          f"or reused under new ones: {_fresh_hint(out)}")
    summary = out / "summary.json"
    if summary.is_file() and (out / "model").is_dir():
        try:
            return json.loads(summary.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # finish it again: the summary is rewritten at the end
    return None


def write_run_record(out: Path, settings: dict[str, Any]) -> None:
    write_json_atomic(out / RUN_RECORD, settings)


def _step(path: Path) -> int:
    match = re.search(r"(\d+)", path.stem)
    return int(match.group(1)) if match else -1


def checkpoint_is_intact(path: Path) -> bool:
    """Whether a PyTorch checkpoint (a zip archive) is complete and every member matches its CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def resume_checkpoint(folder: Path, log: Callable[[str], None]) -> Path | None:
    """The newest intact checkpoint in ``folder`` (``last.ckpt`` first, then ``step-N.ckpt`` by N),
    logging every damaged one skipped; None when there is none."""
    candidates = [folder / "last.ckpt"] + sorted(folder.glob("step-*.ckpt"), key=_step, reverse=True)
    for path in candidates:
        if not path.is_file():
            continue
        if checkpoint_is_intact(path):
            return path
        log(f"[lacy] checkpoint {path} is damaged (truncated or corrupt); skipping it")
    if any(folder.glob("*.ckpt")):
        log(f"[lacy] no intact checkpoint in {folder}; training from step 0")
    return None
