"""Execute, build and check the book: ``python -m lacy.book {execute,build,smoke,check-browser,check-outputs}``.

Chapter conventions (every notebook listed in ``_toc.yml`` follows them; :func:`new_chapter` writes
them, ``tests/test_book.py`` checks them):

1. A chapter is ``book/NN_name.ipynb`` with kernel ``lacy`` (registered by ``make install``:
   ``python -m ipykernel install --sys-prefix --name lacy``), listed in ``_toc.yml`` in reading order.
2. First cell (markdown): ``# Title`` and the "Open in Colab" badge (:func:`colab_badge`; the GitHub
   repository is named in ``_config.yml`` ``repository.url``).
3. Second cell (code, tags ``colab-setup`` and ``hide-cell``): does nothing outside Colab; in Colab it pip-installs lacy
   from :func:`install_url` (``pyproject.toml`` ``[project.urls] Repository``) with its offline data
   packages and sets ``LACY_PROFILE=gpu`` when a GPU is present.
4. Third cell (code, tag ``parameters``, read by papermill)::

       profile = os.environ.get("LACY_PROFILE", "cpu")  # smoke | cpu | gpu
       seed = 0
       run_root = "../runs"  # trained models and results, shared between chapters
       # ...chapter-specific parameters

5. Fourth cell: ``lacy.provenance.start(profile, seed)`` and ``lacy.plots.set_style()``.
6. The chapter itself: only imports from ``lacy``, parameters, calls and plots: no function
   definitions, no experiment grids, code cells of at most 15 lines (``tests/test_chapters_thin.py``). Trained models are
   cached under ``run_root`` (load if present, else train). Headline numbers are saved with
   ``lacy.provenance.save_results(run_root, "NN_name", dict_or_dataframe)`` for ``book/summary.ipynb``.
7. Last cell (code): ``lacy.provenance.show(profile, seed)``; its output starts with
   ``profile: <name>``.
8. Committed chapters carry the outputs of a ``cpu`` (or ``gpu``) run, never ``smoke``
   (``check-outputs``). ``execute`` runs them in ``_toc.yml`` order, ``book/summary`` last.

Modules: :mod:`~lacy.book.layout` (``_config.yml``, ``_toc.yml``, the chapter template),
:mod:`~lacy.book.execute` (papermill), :mod:`~lacy.book.build` (jupyter-book, smoke runs),
:mod:`~lacy.book.checks` (committed outputs, headless browser), ``__main__`` (the commands).

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

from lacy.book.build import build, copy_book, smoke
from lacy.book.checks import check_browser, notebook_output_problems, output_problems, output_profiles, serve
from lacy.book.execute import ExecutionReport, execute
from lacy.book.layout import (
    COMMITTED_PROFILES, DEFAULT_RUN_ROOT, KERNEL_DISPLAY_NAME, KERNEL_NAME, SUMMARY_CHAPTER, BookError, chapter_name,
    colab_badge, colab_setup_source, colab_url, convention_problems, find_root, install_url, load_config,
    new_chapter, parameters_source, repository_branch, repository_url, toc_files, toc_notebooks,
)

__all__ = [
    "COMMITTED_PROFILES", "DEFAULT_RUN_ROOT", "KERNEL_DISPLAY_NAME", "KERNEL_NAME", "SUMMARY_CHAPTER", "BookError",
    "ExecutionReport", "build", "chapter_name", "check_browser", "colab_badge", "colab_setup_source", "colab_url",
    "convention_problems", "copy_book", "execute", "find_root", "install_url", "load_config", "new_chapter",
    "notebook_output_problems", "output_problems", "output_profiles", "parameters_source", "repository_branch",
    "repository_url", "serve", "smoke", "toc_files", "toc_notebooks",
]
