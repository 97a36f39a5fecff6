"""Fault injection: every failure a hostile user or a bad day can cause ends in one clear line or the
right behaviour — never a traceback, a hang or a silently wrong result.

Classes covered: runs (kill -9 and resume, other settings, finished runs), weights (flipped bytes,
truncated checkpoints), caches (missing/malformed/partial manifests, replaced arrays, stale temporary
folders, concurrent builders), the remote helper (trickling and dead servers), the helper server
(client mistakes, exposure, slow headers), the CLI boundary (validation, unwritable outputs) and
file permissions. Smoke profile, loopback servers, bounded waits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from lacy import cli
from lacy.cascade.remote import RemoteHelper, RemoteHelperUnavailable
from lacy.data import cache as cache_module
from lacy.data.cache import CorpusCache, build_cache
from lacy.io import CHECKSUM_FILE, IntegrityError, atomic_write, check_writable, make_temp_dir
from lacy.profiles import ConfigError
from lacy.serve import background_server, create_app
from lacy.train.model import load_model
from lacy.train.run import train
from lacy.train.run_folder import checkpoint_is_intact, resume_checkpoint

CORPUS = "synthbio"
LOOPBACK = "http://127.0.0.1:"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``lacy ARGV`` in process: (exit code, stdout, stderr); argparse errors are caught as exits."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("lacy ") and "error" in last, err
    for fragment in fragments:
        assert fragment in last, (fragment, last)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_root):
    """A finished smoke run, trained by the ``lacy`` command in a subprocess (progress bars on)."""
    out = tmp_path_factory.mktemp("runs") / "standard"
    result = subprocess.run([sys.executable, "-m", "lacy.cli", "train", "--profile", "smoke", "--method", "standard",
                             "--out", str(out), "--cache", str(cache_root)], env=_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return {"out": out, "stdout": result.stdout, "stderr": result.stderr}


def _env() -> dict[str, str]:
    """The environment of a subprocess that imports this checkout's lacy."""
    return {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}


# --- runs ----------------------------------------------------------------------------------------


def test_train_prints_only_json_on_stdout(trained):
    summary = json.loads(trained["stdout"])  # nothing but the summary: no log lines, no progress bars
    assert summary["method"] == "standard" and summary["steps"] > 0
    assert "Traceback" not in trained["stderr"]


def test_a_run_folder_refuses_other_settings_with_the_command_to_start_fresh(trained, cache_root, capsys):
    out = trained["out"]
    weights = (out / "model" / "model.safetensors").read_bytes()
    code, stdout, err = run_cli(capsys, "train", "--profile", "smoke", "--method", "lacy", "--seed", "3",
                                "--set", "train.max_steps=12", "--out", str(out), "--cache", str(cache_root))
    assert_one_line_error(code, err, "other settings", "method: 'standard' -> 'lacy'", "seed: 0 -> 3",
                          "train.max_steps: 6 -> 12", f"rm -rf {out}")
    assert stdout == ""
    assert (out / "model" / "model.safetensors").read_bytes() == weights  # nothing continued or overwritten


def test_rerunning_a_finished_run_is_a_no_op_that_prints_its_summary(trained, cache_root, capsys):
    out = trained["out"]
    before = (out / "model" / "model.safetensors").stat().st_mtime_ns
    code, stdout, err = run_cli(capsys, "train", "--profile", "smoke", "--method", "standard", "--out", str(out),
                                "--cache", str(cache_root))
    assert code == 0 and "already holds this run" in err
    assert json.loads(stdout) == json.loads((out / "summary.json").read_text())
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == before


def test_a_folder_with_checkpoints_but_no_record_is_not_resumed(tmp_path, smoke_profile, cache_root):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="no record"):
        train(CORPUS, "standard", smoke_profile, 0, tmp_path, cache_root=cache_root, progress=False)


KILL_AFTER_CHECKPOINT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from lightning.pytorch.callbacks import Callback
    from lacy.profiles import get_profile
    from lacy.train.run import train

    class KillAt(Callback):  # kill -9 once the step-3 checkpoint and validation are on disk
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 4:
                os.kill(os.getpid(), signal.SIGKILL)

    train("synthbio", "standard", get_profile("smoke"), 0, Path(sys.argv[1]), cache_root=sys.argv[2],
          progress=False, callbacks=[KillAt()])
    """
)


@pytest.mark.slow
def test_kill_9_then_resume_keeps_the_metrics_and_skips_a_truncated_checkpoint(tmp_path, trained, cache_root, capsys,
                                                                                monkeypatch):
    out = tmp_path / "killed"
    result = subprocess.run([sys.executable, "-c", KILL_AFTER_CHECKPOINT, str(out), str(cache_root)], env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert not (out / "summary.json").exists()
    last = out / "checkpoints" / "last.ckpt"
    assert checkpoint_is_intact(last)
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # as if killed while writing it
    assert not checkpoint_is_intact(last)
    builds = []
    real = cache_module.build_cache
    monkeypatch.setattr("lacy.data.datamodule.build_cache", lambda *a, **k: builds.append(1) or real(*a, **k))

    code, stdout, err = run_cli(capsys, "train", "--profile", "smoke", "--method", "standard", "--out", str(out),
                                "--cache", str(cache_root), "--no-progress")
    assert code == 0, err
    assert f"checkpoint {last} is damaged" in err
    summary = json.loads(stdout)
    assert summary["resumed_from_step"] == 3 and summary["steps"] == 6
    assert builds == [1]  # verifying a cache hashes all of it: once per train()
    metrics = pd.read_csv(out / "metrics.csv")
    whole = pd.read_csv(trained["out"] / "metrics.csv")
    # The validation row logged before the kill survives the merge of both sessions' logs.
    assert metrics["val/loss"].notna().sum() == whole["val/loss"].notna().sum() == 2
    assert metrics["step"].is_unique and metrics["train/loss"].notna().sum() == 6


def test_resume_checkpoint_without_any_intact_one_starts_from_zero(tmp_path):
    messages: list[str] = []
    (tmp_path / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "step-3.ckpt").write_bytes(b"")
    assert resume_checkpoint(tmp_path, messages.append) is None
    assert len(messages) == 3 and "training from step 0" in messages[-1]


# --- weights -------------------------------------------------------------------------------------


def _flip_bytes(path: Path, count: int = 100) -> None:
    data = bytearray(path.read_bytes())
    for i in range(count):
        data[len(data) // 2 + i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_the_weights_are_refused_by_load_cli_and_server(trained, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(trained["out"] / "model", model)
    assert (model / CHECKSUM_FILE).is_file()
    load_model(model)  # intact: loads
    _flip_bytes(model / "model.safetensors")
    with pytest.raises(IntegrityError, match="model.safetensors does not match"):
        load_model(model)
    code, _, err = run_cli(capsys, "generate", "--profile", "smoke", "--model", str(model), "--prompt", "Ada")
    assert_one_line_error(code, err, "corrupt")
    code, _, err = run_cli(capsys, "serve", "--helper", f"hf:{model}", "--port", "1")
    assert_one_line_error(code, err, "corrupt")


def test_a_model_folder_without_weights_is_one_line(trained, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(trained["out"] / "model", model)
    (model / "model.safetensors").unlink()
    code, _, err = run_cli(capsys, "generate", "--profile", "smoke", "--model", str(model), "--prompt", "Ada")
    assert_one_line_error(code, err, "no model.safetensors")


# --- caches --------------------------------------------------------------------------------------


@pytest.fixture
def cache_copy(smoke_datamodule, tmp_path):
    """A private copy of the verified smoke cache: (root, folder, key)."""
    source = smoke_datamodule.cache.path
    root = tmp_path / "cache"
    shutil.copytree(source, root / source.name)
    return root, root / source.name, smoke_datamodule.cache.key


def _corrupt_manifest(folder: Path, how: str) -> None:
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if how == "deleted":
        manifest_path.unlink()
    elif how == "not json":
        manifest_path.write_text("{ not json")
    elif how == "not an object":
        manifest_path.write_text("[1, 2]")
    elif how == "files not a mapping":
        manifest_path.write_text(json.dumps({**manifest, "files": ["train.ids.npy"]}))
    elif how == "entry dropped, array replaced":  # the manifest no longer vouches for the replaced file
        del manifest["files"]["train.ids.npy"]
        manifest_path.write_text(json.dumps(manifest))
        shutil.copy(folder / "val.ids.npy", folder / "train.ids.npy")
    elif how == "array flipped":
        _flip_bytes(folder / "train.fact.npy", 10)
    elif how == "array missing":
        (folder / "val.doc.npy").unlink()
    elif how == "other key":
        manifest_path.write_text(json.dumps({**manifest, "key": "0" * 16}))


MANIFEST_FAULTS = ("deleted", "not json", "not an object", "files not a mapping", "entry dropped, array replaced",
                   "array flipped", "array missing", "other key")


@pytest.mark.parametrize("how", MANIFEST_FAULTS)
def test_every_damaged_cache_is_detected(cache_copy, how):
    _, folder, key = cache_copy
    CorpusCache.open_verified(folder, key)
    _corrupt_manifest(folder, how)
    with pytest.raises((ValueError, OSError)):
        CorpusCache.open_verified(folder, key)


@pytest.mark.parametrize("how", ["deleted", "entry dropped, array replaced"])
def test_a_damaged_cache_is_rebuilt_exactly_once(cache_copy, smoke_profile, monkeypatch, how):
    root, folder, key = cache_copy
    _corrupt_manifest(folder, how)
    stale = make_temp_dir(root, prefix=f".{folder.name}.")  # left behind by a killed builder
    builds, messages = [], []
    real = cache_module._build_cache_folder

    def counting(*args, **kwargs):
        builds.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_module, "_build_cache_folder", counting)
    cache = build_cache(CORPUS, smoke_profile, 0, root, log=messages.append)
    assert builds == [1] and cache.key == key and len(messages) == 1 and "rebuilding" in messages[0]
    assert not stale.exists()
    build_cache(CORPUS, smoke_profile, 0, root, log=messages.append)
    assert builds == [1]  # verified now: loaded, not rebuilt again


CONCURRENT_BUILD = "from lacy.cli import main; raise SystemExit(main(['data', '--profile', 'smoke', '--cache', {root!r}]))"


@pytest.mark.slow
def test_concurrent_builders_serialise_and_share_one_cache(tmp_path):
    root = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_BUILD.format(root=str(root))], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1000:] for _, err in outputs]
    keys = {json.loads(out)["cache_key"] for out, _ in outputs}
    assert len(keys) == 1
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == [f"{CORPUS}-{keys.pop()}"]


# --- the remote helper ---------------------------------------------------------------------------


class TricklingServer:
    """A loopback socket server answering every connection one byte at a time, forever (bounded by
    the test: it stops when closed). ``part``: trickle the ``headers`` or, after complete headers, the ``body``."""

    def __init__(self, part: str, interval: float = 0.1) -> None:
        self.part, self.interval = part, interval
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.url = f"{LOOPBACK}{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            if self.part == "body":
                conn.sendall(head)
                head = b"{" + b" " * 100000
            for byte in head:
                if self.stop.wait(self.interval):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_trickling_server_cannot_hold_a_call_past_its_deadline(part):
    server = TricklingServer(part)
    try:
        started = time.monotonic()
        with RemoteHelper(server.url, timeout=1.0, deadline=1.5, retries=2, backoff=0.05) as helper:
            with pytest.raises(RemoteHelperUnavailable, match="deadline of 1.5 s"):
                helper.session().continue_text("Ada", max_new_tokens=2, until_word_boundary=True)
        assert time.monotonic() - started < 3.0  # a per-read timeout alone would wait forever
    finally:
        server.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_server_is_one_line_or_an_unresolved_call_with_helper_fallback(trained, capsys):
    url = f"{LOOPBACK}{_free_port()}"  # nothing listens there
    base = ["generate", "--profile", "smoke", "--model", str(trained["out"]), "--prompt", "Ada", "--helper", url,
            "--policy", "threshold", "--tau", "0", "--max-new-tokens", "3"]
    code, stdout, err = run_cli(capsys, *base)
    assert_one_line_error(code, err, "unavailable", "--helper-fallback")
    assert stdout == ""
    code, stdout, err = run_cli(capsys, *base, "--helper-fallback")
    assert code == 0, err
    assert json.loads(err.strip().splitlines()[-1])["unresolved_calls"] >= 1


def test_client_errors_are_not_retried(monkeypatch):
    hits = []

    class Refusing:
        name = "refusing"

        def session(self, subject=None):
            hits.append(1)
            raise ValueError("no room for that")

    with background_server(create_app(Refusing())) as url:
        with RemoteHelper(url, retries=3, backoff=0.01) as helper:
            with pytest.raises(Exception, match="HTTP 400.*no room for that") as info:
                helper.session().continue_text("Ada", max_new_tokens=2, until_word_boundary=True)
    assert not isinstance(info.value, RemoteHelperUnavailable) and hits == [1]


def test_hub_ids_load_from_the_local_cache_only(monkeypatch):
    from lacy.cascade import helpers, specs

    seen = {}

    def spy(cls, path_or_id, **kwargs):
        seen.update(kwargs)
        raise OSError("not in the local cache")

    monkeypatch.setattr(helpers.LMHelper, "from_pretrained", classmethod(spy))
    with pytest.raises(FileNotFoundError, match="never downloads.*hf download SOME/HUB_ID"):
        specs.build_helper("hf:SOME/HUB_ID")
    assert seen.get("local_files_only") is True


# --- the helper server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm_app_helper(trained):
    from lacy.cascade.helpers import LMHelper

    return LMHelper.from_pretrained(str(trained["out"] / "model"))


def test_server_answers_client_mistakes_with_4xx_and_names_the_model_publicly(lm_app_helper, trained):
    with background_server(create_app(lm_app_helper, max_tokens_limit=256)) as url:
        health = httpx.get(f"{url}/health", timeout=10).json()
        assert health["model"] == f"{trained['out'].name}/model" and not health["model"].startswith("/")
        # within the API limit but beyond the 64 positions of the smoke helper
        too_long = httpx.post(f"{url}/v1/completions", json={"prompt": "Ada", "max_tokens": 200}, timeout=10)
        assert too_long.status_code == 400 and "no room" in too_long.json()["error"]["message"]
        lone_surrogate = b'{"prompt": "Ada \\ud800", "max_tokens": 2}'
        bad_text = httpx.post(f"{url}/v1/completions", content=lone_surrogate, timeout=10,
                              headers={"Content-Type": "application/json"})
        assert 400 <= bad_text.status_code < 500
        wrong = httpx.post(f"{url}/v1/completions", json={"prompt": "Ada", "model": "/etc"}, timeout=10).json()
        assert str(trained["out"]) not in json.dumps(wrong)


def test_docs_are_off_when_an_api_key_is_set(lm_app_helper):
    with background_server(create_app(lm_app_helper, api_key="k")) as url:
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert httpx.get(f"{url}{path}", timeout=10).status_code == 404
    with background_server(create_app(lm_app_helper)) as url:
        assert httpx.get(f"{url}/openapi.json", timeout=10).status_code == 200


def test_a_client_that_sends_its_headers_too_slowly_is_disconnected(lm_app_helper):
    with background_server(create_app(lm_app_helper), header_timeout=0.5) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            started = time.monotonic()
            assert conn.recv(1024) == b""  # closed by the server
            assert time.monotonic() - started < 3
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # prompt clients are unaffected


# --- the CLI boundary ----------------------------------------------------------------------------


BAD_INVOCATIONS = {
    "negative steps": (["train", "--method", "standard", "--out", "{tmp}/r", "--cache", "{tmp}/c", "--set", "train.max_steps=-1"], "train.max_steps"),
    "zero steps": (["train", "--method", "standard", "--out", "{tmp}/r", "--cache", "{tmp}/c", "--set", "train.max_steps=0"], "train.max_steps"),
    "zero interval": (["train", "--method", "standard", "--out", "{tmp}/r", "--cache", "{tmp}/c", "--set", "train.val_every=0"], "train.val_every"),
    "zero batch": (["data", "--cache", "{tmp}/c", "--set", "train.batch_size=0"], "train.batch_size"),
    "nan lr": (["data", "--cache", "{tmp}/c", "--set", "train.lr=nan"], "train.lr"),
    "zero tokens": (["generate", "--model", "{tmp}", "--prompt", "x", "--max-new-tokens", "0"], "--max-new-tokens"),
    "negative seed": (["data", "--cache", "{tmp}/c", "--seed", "-1"], "--seed"),
    "port 0": (["serve", "--helper", "smollm2", "--port", "0"], "--port"),
    "tau above 1": (["generate", "--model", "{tmp}", "--prompt", "x", "--policy", "threshold", "--tau", "2"], "--tau"),
    "sweep budget": (["sweep", "--model", "{tmp}", "--out", "{tmp}/s.csv", "--budget", "0.3"], "--budget"),
    "tau with budget policy": (["generate", "--model", "{tmp}", "--prompt", "x", "--tau", "0.5"], "--tau"),
    "fallback without remote": (["generate", "--model", "{tmp}", "--prompt", "x", "--helper-fallback"], "--helper-fallback"),
    "reference for standard": (["train", "--method", "standard", "--out", "{tmp}/r", "--cache", "{tmp}/c", "--reference", "{tmp}"], "--reference"),
    "serve doc": (["serve", "--helper", "doc"], "cannot be served"),
    "non-UTF-8 prompt": (["generate", "--model", "{tmp}", "--prompt", os.fsdecode(b"Ada \xff\xfe")], "UTF-8"),
}


@pytest.mark.parametrize("case", BAD_INVOCATIONS)
def test_bad_input_is_one_clear_line(case, tmp_path, capsys, monkeypatch):
    from lacy.evaluate import run as evaluation

    for name in ("generate", "evaluate", "sweep"):
        monkeypatch.setattr(evaluation, name, lambda *a, **k: pytest.fail("the work started despite bad input"))
    argv, fragment = BAD_INVOCATIONS[case]
    code, stdout, err = run_cli(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2 and "Traceback" not in err and fragment in err, err
    assert stdout == ""


@pytest.mark.parametrize("target", ["a file's child", "a folder"])
def test_unwritable_outputs_fail_before_the_work(target, trained, tmp_path, capsys, monkeypatch):
    from lacy.evaluate import run as evaluation

    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: pytest.fail("evaluated although --out is unwritable"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "result.json" if target == "a file's child" else tmp_path
    code, _, err = run_cli(capsys, "evaluate", "--profile", "smoke", "--model", str(trained["out"]), "--out", str(out))
    assert_one_line_error(code, err, str(out.parent if target == "a file's child" else out))
    code, _, err = run_cli(capsys, "train", "--profile", "smoke", "--method", "standard", "--out", str(blocker),
                           "--cache", str(tmp_path / "cache"))
    assert_one_line_error(code, err, "not a folder")


@pytest.mark.parametrize(("error", "code", "kind"), [
    (PermissionError(13, "Permission denied", "/x"), 2, "error"),
    (IsADirectoryError(21, "Is a directory", "/x"), 2, "error"),
    (ModuleNotFoundError("no module named gguf"), 2, "error"),
    (RuntimeError("a bug"), 1, "internal error"),
])
def test_the_error_boundary_turns_failures_into_one_line(error, code, kind, capsys, monkeypatch):
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "run", fail)
    monkeypatch.delenv("LACY_DEBUG", raising=False)
    got, stdout, err = run_cli(capsys, "data", "--profile", "smoke")
    assert got == code and len(err.strip().splitlines()) == 1 and f": {kind}:" in err and "Traceback" not in err
    monkeypatch.setenv("LACY_DEBUG", "1")
    with pytest.raises(type(error)):
        cli.main(["data", "--profile", "smoke"])


def test_safetensors_errors_are_expected_failures():
    from safetensors import SafetensorError

    assert SafetensorError in cli.expected_errors()


# --- files ---------------------------------------------------------------------------------------


def test_files_and_folders_respect_the_umask(tmp_path, trained):
    previous = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.json") as fh:
            fh.write("{}")
        folder = make_temp_dir(tmp_path, prefix="x")
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    finally:
        os.umask(previous)
    model = trained["out"] / "model"
    assert stat.S_IMODE(model.stat().st_mode) & 0o055 == 0o055  # group/world can list and read
    for file in model.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) & 0o044 == 0o044, file


def test_check_writable_names_the_problem(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        check_writable(tmp_path / "f", directory=True)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_writable(tmp_path)
    with pytest.raises(OSError, match="cannot write"):
        check_writable(tmp_path / "f" / "x.json")
    assert check_writable(tmp_path / "new" / "x.json") == tmp_path / "new" / "x.json"
