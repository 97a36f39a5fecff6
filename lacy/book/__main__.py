"""``python -m lacy.book {execute,build,smoke,check-browser,check-outputs}`` (see :mod:`lacy.book`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import lacy.book
from lacy.book.build import build, copy_book, smoke
from lacy.book.checks import check_browser, output_problems
from lacy.book.execute import execute
from lacy.book.layout import COMMITTED_PROFILES, BookError, find_root, log, toc_notebooks
from lacy.profiles import PROFILES, ConfigError, parse_overrides

# --- command line ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lacy.book", description=lacy.book.__doc__.split("\n", 1)[0])
    parser.add_argument("--root", default=".", help="book root holding _config.yml and _toc.yml (default: .)")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("execute", help="execute the chapters with papermill")
    run.add_argument("--profile", default="cpu", choices=list(PROFILES))
    run.add_argument("--seed", type=int, default=0)
    target = run.add_mutually_exclusive_group(required=True)
    target.add_argument("--in-place", action="store_true", help="replace the committed chapters with the executed ones")
    target.add_argument("--output-dir", type=Path, help="execute a copy of the book in this folder instead")
    run.add_argument("--chapters", nargs="+", help="only these chapters (e.g. 04_cascade), in _toc.yml order")
    run.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                     help="override a profile setting in every chapter, e.g. --set train.precision=32 (repeatable)")

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
            report = execute(book, args.profile, args.seed, chapters=args.chapters, timings_dir=root / "_build",
                             overrides=parse_overrides(args.overrides))
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
    except (BookError, ConfigError) as error:
        log(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
