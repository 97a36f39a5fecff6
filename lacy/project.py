"""Where the project lives: the repository URL, named once in ``pyproject.toml`` ``[project.urls]``.

A source checkout reads ``pyproject.toml`` next to the package; an installed wheel reads the same
value from its metadata (``Project-URL: Repository, ...``). The book's ``_config.yml`` must agree
(``tests/test_install.py`` checks it), and the Colab setup cell installs from :func:`install_spec`.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

URL_LABEL = "Repository"


def _from_pyproject() -> str | None:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: fall back to the installed metadata
        return None
    urls = tomllib.loads(pyproject.read_text()).get("project", {}).get("urls", {})
    return urls.get(URL_LABEL)


def _from_metadata() -> str | None:
    try:
        entries = metadata.metadata("lacy").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in entries:
        label, _, url = entry.partition(",")
        if label.strip() == URL_LABEL:
            return url.strip()
    return None


def project_url() -> str:
    """The GitHub repository, e.g. ``https://github.com/OWNER/lacy`` (no trailing slash or ``.git``)."""
    url = _from_pyproject() or _from_metadata()
    if not url:
        raise RuntimeError(f"no [project.urls] {URL_LABEL} in pyproject.toml or in the installed lacy metadata; "
                           "reinstall lacy (pip install -e .) or add it to pyproject.toml")
    return url.rstrip("/").removesuffix(".git")


def install_spec(branch: str = "main") -> str:
    """The pip requirement that installs lacy from the repository, e.g. for the Colab setup cell."""
    return f"lacy @ git+{project_url()}.git@{branch}"
