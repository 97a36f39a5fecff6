"""One install path: the repository URL named once, and lacy installed from a built wheel works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from lacy.project import install_spec, project_url

ROOT = Path(__file__).resolve().parent.parent


def test_book_config_names_the_same_repository():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"]["url"].rstrip("/") == project_url(), (
        "_config.yml repository.url must equal pyproject.toml [project.urls] Repository")


def test_install_spec_points_at_the_repository():
    assert project_url().startswith("https://github.com/")
    assert install_spec("dev") == f"lacy @ git+{project_url()}.git@dev"


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path):
    """Build the wheel, install it (no dependencies, no index) into a fresh venv that borrows this
    environment's dependencies through a .pth line, then run the ``lacy`` entry point from it."""
    source, dist = tmp_path / "source", tmp_path / "dist"  # build from a copy: setuptools leaves build/ behind
    shutil.copytree(ROOT / "lacy", source / "lacy", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)],
                   check=True, capture_output=True, text=True)
    wheel = next(dist.glob("lacy-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # A plain path line (not site.addsitedir): the dependencies resolve, the editable lacy finder does not load;
    # pip then sees this environment's lacy, so --ignore-installed installs the wheel without touching it.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)], check=True,
                   capture_output=True, text=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(LACY_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    where = subprocess.run([python, "-c", "import lacy, lacy.project; print(lacy.__file__); print(lacy.project.project_url())"],
                           check=True, capture_output=True, text=True, env=env, cwd=tmp_path).stdout.split()
    assert where[0].startswith(str(site)), f"lacy imported from {where[0]}, not the wheel"
    assert where[1] == project_url()  # read from the wheel's metadata (no pyproject.toml next to it)
    lacy = venv / "bin" / "lacy"
    assert "plan" in subprocess.run([lacy, "--help"], check=True, capture_output=True, text=True, env=env, cwd=tmp_path).stdout
    done = subprocess.run([lacy, "data", "--profile", "smoke"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"corpus": "synthbio"' in done.stdout
