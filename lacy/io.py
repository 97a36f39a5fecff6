"""File I/O with integrity: atomic writes, content hashes, checksum files and writability checks.

Every cache, run summary, metric table, result and exported model goes through here, so readers
never see a half-written file, corrupt files are detected by hash instead of being used, and a
command that would write somewhere it cannot finds out before it starts its work. Files and folders
are created with the permissions the user's umask allows (as ``open`` would), so a shared cache or
model stays readable by colleagues.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

import numpy as np

CHECKSUM_FILE = "SHA256SUMS"  # `sha256sum -c SHA256SUMS` format, so it can be checked without lacy


class IntegrityError(ValueError):
    """A file is missing, truncated or does not match the hash recorded when it was written."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def set_default_mode(path: str | Path, directory: bool = False) -> None:
    """Give a temporary file (0600) or folder (0700) the mode ``open``/``mkdir`` would have given it."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def make_temp_dir(parent: str | Path, prefix: str, suffix: str = ".tmp") -> Path:
    """A fresh temporary folder inside ``parent`` (created if needed) with umask-respecting permissions."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=suffix))
    set_default_mode(folder, directory=True)
    return folder


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path`` (atomic on POSIX).

    A crash or exception leaves ``path`` as it was and removes the temporary file, so readers never
    see a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        set_default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file in the same folder and an atomic rename."""
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        np.save(fh, array)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_checksums(folder: str | Path, names: Iterable[str]) -> Path:
    """Record the SHA-256 of ``names`` (paths relative to ``folder``) in ``folder/SHA256SUMS``."""
    folder = Path(folder)
    lines = [f"{sha256_file(folder / name)}  {name}\n" for name in sorted(names)]
    with atomic_write(folder / CHECKSUM_FILE) as fh:
        fh.writelines(lines)
    return folder / CHECKSUM_FILE


def verify_checksums(folder: str | Path, required: Iterable[str] = ()) -> bool:
    """Check every file listed in ``folder/SHA256SUMS`` against its hash.

    Returns False when the folder has no checksum file (written by another tool), True when all
    listed files match. Raises :class:`IntegrityError` naming the file when one is missing or
    differs, or when a ``required`` file is not listed.
    """
    folder = Path(folder)
    sums = folder / CHECKSUM_FILE
    if not sums.is_file():
        return False
    recorded: dict[str, str] = {}
    for line in sums.read_text(errors="replace").splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise IntegrityError(f"{sums} is malformed (line {line[:80]!r}); re-export the folder")
        recorded[name] = digest
    for name in required:
        if name not in recorded:
            raise IntegrityError(f"{sums} does not list {name}; re-export the folder")
    for name, digest in recorded.items():
        file = folder / name
        if not file.is_file():
            raise IntegrityError(f"{file} is missing (listed in {CHECKSUM_FILE})")
        if sha256_file(file) != digest:
            raise IntegrityError(f"{file} does not match the SHA-256 recorded when it was written: "
                                 "the file is corrupt or was modified")
    return True


def check_writable(path: str | Path, *, directory: bool = False) -> Path:
    """Make sure ``path`` can be written (as a file, or as a folder with ``directory=True``) before any
    long work starts; creates missing parent folders. Raises ``OSError`` saying what is wrong."""
    path = Path(path).expanduser()
    folder = path if directory else path.parent
    if directory and path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a folder; choose another output folder")
    if not directory and path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; pass a file name for the output")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise type(err)(err.errno, f"cannot write to {folder}: {err.strerror}; choose a writable location") from None
    return path
