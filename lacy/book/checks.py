"""Checks of the book: committed outputs (profile, errors) and every built page in headless Chromium."""

from __future__ import annotations

import functools
import http.server
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import nbformat

from lacy.book.layout import COMMITTED_PROFILES, SUMMARY_CHAPTER, BookError, log, one_line, toc_notebooks
from lacy.provenance import OUTPUT_METADATA_KEY, PROFILE_LINE_PREFIX

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,900",
)

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
                problems.append(f"{page}: could not load ({one_line(error)})")
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
            broken[target] = one_line(error)
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


