"""The book: table of contents, chapter conventions, publishable outputs, execution, build, plot style.

The browser check runs in ``make test`` (``python -m lacy.book smoke``), not here.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import pytest
import yaml

from lacy import book, plots
from lacy.profiles import METHODS, ConfigError

ROOT = Path(book.__file__).resolve().parents[2]  # lacy/book/__init__.py -> repository root


def _toc_notebooks() -> list[Path]:
    try:
        return book.toc_notebooks(ROOT)
    except book.BookError:
        return []  # test_toc_documents_exist_and_every_chapter_is_listed reports why


TOC_NOTEBOOKS = _toc_notebooks()


def test_toc_documents_exist_and_every_chapter_is_listed():
    listed = set(book.toc_files(ROOT))
    assert Path("book/intro.md") in listed
    orphans = sorted(p.relative_to(ROOT) for p in (ROOT / "book").glob("*.ipynb") if p.relative_to(ROOT) not in listed)
    assert orphans == [], f"add these chapters to _toc.yml: {orphans}"
    assert TOC_NOTEBOOKS[-1].stem == book.SUMMARY_CHAPTER


@pytest.mark.parametrize("notebook", TOC_NOTEBOOKS, ids=str)
def test_chapter_follows_the_conventions(notebook):
    assert book.convention_problems(ROOT, notebook) == []


@pytest.mark.parametrize("notebook", TOC_NOTEBOOKS, ids=str)
def test_committed_outputs_are_from_a_cpu_or_gpu_run(notebook):
    assert book.notebook_output_problems(nbformat.read(ROOT / notebook, as_version=4)) == []


def test_colab_links_come_from_the_repository_url():
    url = book.repository_url(ROOT)
    owner_repo = url.removeprefix("https://github.com/")
    assert book.colab_url(ROOT, "book/04_cascade.ipynb") == (
        f"https://colab.research.google.com/github/{owner_repo}/blob/{book.repository_branch(ROOT)}/book/04_cascade.ipynb")
    assert f"git+{book.install_url(ROOT)}.git" in book.colab_setup_source(ROOT)
    assert book.install_url(ROOT) == url  # pyproject's [project.urls] Repository (when installed) agrees with _config.yml


def test_the_colab_install_url_comes_from_pyproject(monkeypatch):
    monkeypatch.setattr(book.layout, "project_url", lambda: "https://github.com/me/fork")
    assert book.install_url(ROOT) == "https://github.com/me/fork"
    assert "git+https://github.com/me/fork.git@" in book.colab_setup_source(ROOT)


def test_every_chapter_carries_the_current_colab_setup_cell():
    expected = book.colab_setup_source(ROOT)
    for notebook in book.toc_notebooks(ROOT):
        nb = nbformat.read(notebook, as_version=4)
        assert nb.cells[1].source == expected, f"{notebook.name}: colab-setup cell is stale; rewrite it from book.colab_setup_source"
        assert "profile_for_device" in nb.cells[1].source


def test_python_m_lacy_book_keeps_its_commands():
    done = subprocess.run([sys.executable, "-m", "lacy.book", "--help"], capture_output=True, text=True, check=True)
    for command in ("execute", "build", "smoke", "check-browser", "check-outputs"):
        assert command in done.stdout


# --- a scratch book -------------------------------------------------------------------------------


def _scratch_book(tmp_path: Path, chapters: dict[str, list]) -> Path:
    """A book in tmp_path with the repository's _config.yml and the given chapters (name → body cells)."""
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "intro.md").write_text("# Scratch\n\nA scratch book.\n")
    toc = {"format": "jb-book", "root": "book/intro"}
    if chapters:
        toc["chapters"] = [{"file": f"book/{name}"} for name in chapters]
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump(toc))
    for name, cells in chapters.items():
        book.new_chapter(tmp_path / "book" / f"{name}.ipynb", name.title(), {"scale": 2}, cells)
    return tmp_path


def _with_provenance_output(nb: nbformat.NotebookNode, profile: str) -> nbformat.NotebookNode:
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"profile: {profile}\nseed: 0\n")]
    return nb


def test_new_chapter_writes_a_conventional_notebook(tmp_path):
    root = _scratch_book(tmp_path, {"summary": [("markdown", "Body."), ("code", "x = scale * 2")]})
    notebook = Path("book/summary.ipynb")
    assert book.convention_problems(root, notebook) == []
    nb = nbformat.read(root / notebook, as_version=4)
    assert nb.metadata.kernelspec.name == book.KERNEL_NAME
    assert "scale = 2" in nb.cells[2].source
    assert book.toc_notebooks(root) == [notebook]
    with pytest.raises(book.BookError, match="overwrite=True"):
        book.new_chapter(root / notebook, "Again")


def test_convention_problems_name_what_is_missing(tmp_path):
    root = _scratch_book(tmp_path, {"chapter": []})
    path = root / "book" / "chapter.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].metadata.tags = []  # no parameters cell
    del nb.cells[-1]  # no provenance cell
    nbformat.write(nb, path)
    problems = book.convention_problems(root, "book/chapter.ipynb")
    assert any("parameters" in p for p in problems)
    assert any("provenance" in p for p in problems)


def test_template_parameters_cannot_be_redefined(tmp_path):
    _scratch_book(tmp_path, {})
    with pytest.raises(book.BookError, match="seed"):
        book.new_chapter(tmp_path / "book" / "x.ipynb", "X", {"seed": 1})


@pytest.mark.parametrize("profile, publishable", [("cpu", True), ("gpu", True), ("smoke", False)])
def test_check_outputs_accepts_only_cpu_and_gpu_runs(tmp_path, profile, publishable):
    root = _scratch_book(tmp_path, {"chapter": []})
    nb = _with_provenance_output(nbformat.read(root / "book/chapter.ipynb", as_version=4), profile)
    problems = book.notebook_output_problems(nb)
    assert (problems == []) is publishable
    if not publishable:
        assert any(profile in p for p in problems)


def test_check_outputs_refuses_missing_outputs_errors_and_smoke_metadata(tmp_path):
    root = _scratch_book(tmp_path, {"chapter": []})
    nb = nbformat.read(root / "book/chapter.ipynb", as_version=4)
    assert "no outputs" in book.notebook_output_problems(nb)[0]
    nb = _with_provenance_output(nb, "cpu")
    nb.metadata["papermill"] = {"parameters": {"profile": "smoke"}}
    assert any("smoke" in p for p in book.notebook_output_problems(nb))
    del nb.metadata["papermill"]
    nb.cells[3].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[])]
    assert any("error output" in p for p in book.notebook_output_problems(nb))
    nb.cells[3].outputs, nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi")], []
    assert any("profile: <name>" in p for p in book.notebook_output_problems(nb))


def test_output_problems_reads_the_toc(tmp_path):
    root = _scratch_book(tmp_path, {"chapter": []})
    assert book.output_problems(root) == ["book/chapter.ipynb: " + book.notebook_output_problems(
        nbformat.read(root / "book/chapter.ipynb", as_version=4))[0]]


def test_toc_naming_a_missing_file_is_refused(tmp_path):
    root = _scratch_book(tmp_path, {})
    (root / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "book/intro", "chapters": [{"file": "book/03_training"}]}))
    with pytest.raises(book.BookError, match="book/03_training"):
        book.toc_files(root)


def test_unknown_chapter_names_are_refused(tmp_path):
    root = _scratch_book(tmp_path, {"one": []})
    with pytest.raises(book.BookError, match="one"):
        book.execute(root, "smoke", 0, chapters=["two"])


# --- execution and build (kernel and Sphinx; a few seconds each) ----------------------------------


def test_execute_in_place_records_profile_and_timings_and_keeps_failed_chapters_out(tmp_path):
    root = _scratch_book(tmp_path, {
        "good": [("code", "print('scale', scale)")],
        "bad": [("code", "raise RuntimeError('chapter broke')")],
    })
    original_bad = (root / "book/bad.ipynb").read_text()
    report = book.execute(root, "smoke", 5)
    assert list(report.seconds) == ["good"] and "chapter broke" in report.failed["bad"]
    good = nbformat.read(root / "book/good.ipynb", as_version=4)
    assert good.metadata.lacy == {"profile": "smoke", "seed": 5}
    assert good.metadata.papermill.input_path == "book/good.ipynb"
    assert book.output_profiles(good) == ({"smoke"}, {"smoke"})
    assert (root / "book/bad.ipynb").read_text() == original_bad  # the committed chapter is untouched
    assert (root / "_build/failed/bad.ipynb").exists()
    timings = json.loads((root / "_build/timings-smoke.json").read_text())
    assert timings["chapters"] == report.seconds and timings["total"] == pytest.approx(report.total)


def test_execute_with_overrides_hands_them_to_every_chapter_and_names_the_timings(tmp_path, monkeypatch):
    monkeypatch.delenv("LACY_SET", raising=False)
    code = "from lacy.profiles import get_profile; print('precision', get_profile('smoke').train.precision)"
    root = _scratch_book(tmp_path, {"chapter": [("code", code)]})
    report = book.execute(root, "smoke", 0, overrides={"train.precision": "32"})
    assert report.seconds and not report.failed
    printed = "".join(o.get("text", "") for c in nbformat.read(root / "book/chapter.ipynb", as_version=4).cells
                      for o in c.get("outputs", []))
    assert "precision 32" in printed
    timings = json.loads((root / "_build/timings-smoke+train.precision=32.json").read_text())
    assert timings["overrides"] == {"train.precision": "32"}
    assert "LACY_SET" not in os.environ  # restored after the run


def test_execute_refuses_a_bad_override_before_running_anything(tmp_path):
    root = _scratch_book(tmp_path, {"chapter": []})
    with pytest.raises(ConfigError, match="unknown setting 'precison'"):
        book.execute(root, "smoke", 0, overrides={"train.precison": "32"})
    assert not (root / "_build/timings-smoke.json").exists()


def test_build_makes_html_and_fails_on_broken_references(tmp_path):
    root = _scratch_book(tmp_path, {})
    html = book.build(root, tmp_path / "html")
    assert (html / "book" / "intro.html").is_file()
    (root / "book" / "intro.md").write_text("# Scratch\n\nSee [the missing chapter](03_training.ipynb).\n")
    with pytest.raises(book.BookError, match="03_training"):
        book.build(root, tmp_path / "html")


# --- plot style shared by the chapters ------------------------------------------------------------


def test_every_method_and_endpoint_has_its_own_colour():
    assert set(METHODS) | {"helper alone", "SLM alone"} == set(plots.METHOD_COLORS)
    assert len(set(plots.METHOD_COLORS.values())) == len(plots.METHOD_COLORS)
    assert plots.method_order(["standard", "lacy"]) == ["lacy", "standard"]
    with pytest.raises(KeyError, match="METHOD_COLORS"):
        plots.method_palette(["lacy", "unknown"])


def test_finish_requires_title_and_axis_labels_and_figures_stay_out_of_pyplot():
    plots.set_style()
    fig, ax = plots.new_figure()
    assert plt.get_fignums() == []  # not shown a second time by the notebook's pyplot hook
    assert plots.finish(ax, "FactScore vs call rate", "call rate (% of tokens)", "FactScore (0-100)") is fig
    assert ax.get_xlabel() == "call rate (% of tokens)"
    with pytest.raises(ValueError, match="ylabel"):
        plots.finish(ax, "title", "x (unit)", " ")


def test_cost_frontier_lists_points_without_model_flops_instead_of_dropping_them():
    import pandas as pd

    plots.set_style()
    points = pd.DataFrame({"label": ["lacy", "doc"], "kind": ["SLM alone", "helper alone"], "flops_per_token": [2e6, 0.0],
                           "precision": [0.1, 0.99], "recall": [0.05, 0.26]})
    fig = plots.cost_frontier(points)
    notes = [ax.get_xlabel().split("\n")[1] for ax in fig.axes]
    assert notes == ["0 FLOPs, not drawn: doc alone 99.0%", "0 FLOPs, not drawn: doc alone 26.0%"]
