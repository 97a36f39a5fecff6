"""Build the HTML book with jupyter-book, and the smoke run (execute a copy, build it, check it)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from lacy.book.checks import check_browser
from lacy.book.execute import ExecutionReport, execute
from lacy.book.layout import BookError, log, toc_files

# Sphinx warnings that mean a reader meets a broken page: unresolved references, missing documents
# or images. Other warnings (e.g. a skipped heading level in a notebook) are printed but allowed.
BROKEN_BUILD_WARNINGS = re.compile(
    r"undefined label|unknown document|reference target not found|Unknown target name|xref_missing"
    r"|nonexisting document|not found|image file not readable|Could not find|not readable"
    r"|duplicate label|Duplicate explicit target|toctree",
    re.IGNORECASE,
)


# --- build ----------------------------------------------------------------------------------------


def build(root: Path, html_dir: Path | None = None) -> Path:
    """Build the HTML book from the committed outputs (no execution); returns the HTML folder.

    Builds from scratch in a temporary folder, then replaces ``html_dir`` (default
    ``root/_build/html``), so no page of an earlier build survives. Fails when Sphinx reports a
    broken reference, a missing document or image (:data:`BROKEN_BUILD_WARNINGS`); other warnings are
    printed.
    """
    toc_files(root)  # refuse a _toc.yml naming missing files with a clear message
    html_dir = html_dir or root / "_build" / "html"
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lacy-jb-") as scratch:
        command = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
                   "build", str(root), "--path-output", scratch, "-q"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)  # Sphinx colours its warnings
        warnings = [line for line in text.splitlines() if re.search(r"WARNING|ERROR|CRITICAL", line)]
        if done.returncode != 0:
            raise BookError(f"jupyter-book build failed (exit {done.returncode}):\n{text[-5000:]}")
        for line in warnings:
            log(f"sphinx: {line}")
        broken = [line for line in warnings if "ERROR" in line or "CRITICAL" in line or BROKEN_BUILD_WARNINGS.search(line)]
        if broken:
            raise BookError("the book has broken references or files:\n" + "\n".join(broken))
        shutil.rmtree(html_dir, ignore_errors=True)
        shutil.copytree(Path(scratch) / "_build" / "html", html_dir)
    log(f"built {html_dir} in {time.perf_counter() - began:.1f} s ({len(warnings)} warning(s) allowed)")
    return html_dir


# --- smoke ----------------------------------------------------------------------------------------


def copy_book(root: Path, destination: Path) -> Path:
    """Copy what the book needs (``_config.yml``, ``_toc.yml``, ``book/``) to ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, destination / name)
    shutil.copytree(root / "book", destination / "book", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return destination


def smoke(root: Path, seed: int = 0, chapters: Sequence[str] | None = None) -> ExecutionReport:
    """Execute a temporary copy of the book with ``profile=smoke``, build it and check it in Chromium.

    The HTML goes to ``root/_build/smoke-html``, timings to ``root/_build/timings-smoke.json`` and
    screenshots to ``root/_build/screenshots``. The committed chapters are never touched.
    """
    with tempfile.TemporaryDirectory(prefix="lacy-smoke-") as scratch:
        copy = copy_book(root, Path(scratch) / "book-copy")
        report = execute(copy, "smoke", seed, chapters=chapters, timings_dir=root / "_build")
        if report.failed:
            failed = root / "_build" / "smoke-failed"
            shutil.rmtree(failed, ignore_errors=True)
            shutil.copytree(copy / "_build" / "failed", failed)
            raise BookError("smoke execution failed:\n" + "\n".join(f"  {name}: {error}" for name, error in report.failed.items())
                            + f"\nexecuted copies with the error output: {failed}")
        html = build(copy, root / "_build" / "smoke-html")
    problems = check_browser(html, root / "_build" / "screenshots")
    if problems:
        raise BookError(f"browser check of {html} found {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))
    for name, seconds in report.seconds.items():
        log(f"smoke {name}: {seconds:.1f} s")
    return report

