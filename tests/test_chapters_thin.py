"""Chapters hold parameters, library calls, plots and prose: logic lives in the library, where it is tested.

A code cell may not define a function (``def``, ``lambda``, ``class``) and may not exceed
:data:`MAX_CELL_LINES` lines; experiment grids and reshaping belong in ``lacy``. The Colab set-up
cell is written by :func:`lacy.book.colab_setup_source` and counts like any other.
"""

import ast
from pathlib import Path

import nbformat
import pytest

from lacy import book

ROOT = Path(book.__file__).resolve().parents[2]
MAX_CELL_LINES = 15
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))


def cell_problems(source: str) -> list[str]:
    """Why one code cell is not thin ([] when it is)."""
    problems = []
    lines = source.strip("\n").splitlines()
    if len(lines) > MAX_CELL_LINES:
        problems.append(f"{len(lines)} lines (at most {MAX_CELL_LINES}; move the logic into lacy)")
    tree = ast.parse("\n".join(line for line in lines if not line.lstrip().startswith(("%", "!"))))
    defined = sorted({type(node).__name__ for node in ast.walk(tree)
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))})
    if defined:
        problems.append(f"defines {', '.join(defined)} (define functions in lacy and call them)")
    return problems


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_code_cells_are_thin(chapter):
    nb = nbformat.read(chapter, as_version=4)
    problems = [f"cell {i}: {p}" for i, cell in enumerate(nb.cells) if cell.cell_type == "code" for p in cell_problems(cell.source)]
    assert problems == [], f"{chapter.name}:\n" + "\n".join(problems)


def test_the_check_catches_definitions_and_long_cells():
    assert cell_problems("x = 1\nplots.show(x)") == []
    assert "defines FunctionDef" in cell_problems("def at(frame):\n    return frame")[0]
    assert "defines Lambda" in cell_problems("frame.assign(v=lambda f: f['x'])")[0]
    assert "16 lines" in cell_problems("\n".join(["x = 1"] * 16))[0]
