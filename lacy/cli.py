"""The ``lacy`` command line: ``lacy data | train | generate | evaluate | sweep | serve | bench``.

Every command validates its choices up front and fails with the list of valid values; results are
printed (and written with ``--out``) as JSON or CSV so scripts and the book can read them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from lacy.cascade.policies import POLICIES
from lacy.cascade.specs import HELPER_SPECS
from lacy.profiles import CORPORA, METHODS, PROFILES, ConfigError, get_profile, parse_overrides

BENCHES = ("annotate", "train", "cascade", "remote")


def _print_json(obj: Any, out: str | None = None) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    if out:
        from lacy.data.cache import write_json_atomic

        write_json_atomic(Path(out), obj)
    print(text)


def _common(p: argparse.ArgumentParser, corpus: bool = True) -> None:
    if corpus:
        p.add_argument("--corpus", default="synthbio", help=f"one of {', '.join(CORPORA)}")
    p.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile setting, e.g. --set train.max_steps=200 (repeatable)")
    p.add_argument("--cache", default=None, help="cache folder (default $LACY_CACHE or ~/.cache/lacy)")


def _cascade_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a folder written by `lacy train` (…/model) or save_pretrained")
    p.add_argument("--helper", default="doc", help=" | ".join(HELPER_SPECS))
    p.add_argument("--policy", default="budget", help=f"one of {', '.join(POLICIES)}")
    p.add_argument("--tau", type=float, default=None, help="threshold on P(<CALL>) for --policy threshold")
    p.add_argument("--budget", type=float, default=None, help="target call rate for --policy budget (default: profile eval.budget)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lacy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="build the token-aligned cache of a corpus and print its summary")
    _common(p)
    p.add_argument("--out", default=None, help="cache folder (same as --cache)")

    p = sub.add_parser("train", help="pretrain an SLM with a token-selection method")
    _common(p)
    p.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    p.add_argument("--out", required=True, help="run folder: model/, metrics.csv, summary.json")
    p.add_argument("--reference", default=None, help="reference model folder for --method rho/judge (default: a cached standard run)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("generate", help="generate with the SLM in cascade with a helper")
    _common(p)
    _cascade_options(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--subject", default=None, help="subject for the document helper (default: the prompt)")
    p.add_argument("--max-new-tokens", type=int, default=None)

    p = sub.add_parser("evaluate", help="FactScore of the SLM in cascade on a fixed set of subjects")
    _common(p)
    _cascade_options(p)
    p.add_argument("--out", required=True, help="JSON file")

    p = sub.add_parser("sweep", help="FactScore vs calibrated call rate (Co-LLM style sweep)")
    _common(p)
    _cascade_options(p)
    p.add_argument("--out", required=True, help="CSV file")

    p = sub.add_parser("serve", help="serve a helper over an OpenAI-compatible completions API")
    p.add_argument("--helper", required=True, help=" | ".join(spec for spec in HELPER_SPECS if spec.startswith(("hf:", "smollm2"))))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key-env", default=None, help="name of an environment variable holding a bearer token")

    p = sub.add_parser("bench", help="benchmarks against a baseline run side by side (JSON)")
    p.add_argument("which", help=f"one of {', '.join(BENCHES)}")
    p.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--out", default=None, help="also write the JSON here")
    return parser


def _check(kind: str, value: str | None, choices: Sequence[str]) -> None:
    from lacy.profiles import check_choice

    if value is not None:
        check_choice(kind, value, tuple(choices))


def run(args: argparse.Namespace) -> Any:
    cmd = args.command
    if cmd == "bench":
        _check("bench", args.which, BENCHES)
        _check("profile", args.profile, tuple(PROFILES))
        import importlib

        result = importlib.import_module(f"lacy.bench.{args.which}").run(profile=args.profile)
        _print_json(result, args.out)
        return result
    if cmd == "serve":
        from lacy.serve import serve

        import os

        api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
        if args.api_key_env and not api_key:
            raise ConfigError(f"--api-key-env {args.api_key_env}: that environment variable is empty or unset")
        return serve(args.helper, host=args.host, port=args.port, api_key=api_key)

    _check("corpus", args.corpus, CORPORA)
    profile = get_profile(args.profile, parse_overrides(args.overrides))
    if cmd == "data":
        from lacy.data.cache import build_cache

        cache = build_cache(args.corpus, profile, args.seed, args.out or args.cache, log=lambda m: print(m, file=sys.stderr))
        _print_json(cache.summary)
        return cache.summary
    if cmd == "train":
        _check("method", args.method, METHODS)
        from lacy.train.run import train

        summary = train(args.corpus, args.method, profile, args.seed, Path(args.out), cache_root=args.cache,
                        reference=Path(args.reference) if args.reference else None, progress=not args.no_progress)
        _print_json(summary)
        return summary

    _check("policy", args.policy, POLICIES)
    from lacy.evaluate import run as evaluation

    if cmd == "generate":
        gen = evaluation.generate(args.model, args.corpus, profile, args.seed, helper=args.helper, policy=args.policy,
                                  tau=args.tau, budget=args.budget, prompt=args.prompt, subject=args.subject,
                                  max_new_tokens=args.max_new_tokens, cache_root=args.cache)
        print(gen.prompt + gen.marked())
        print(json.dumps({"n_calls": gen.n_calls, "unresolved_calls": gen.unresolved_calls,
                          "slm_tokens": gen.slm_tokens, "helper_tokens": gen.helper_tokens,
                          "seconds": round(gen.seconds, 3)}), file=sys.stderr)
        return gen
    if cmd == "evaluate":
        result = evaluation.evaluate(args.model, args.corpus, profile, args.seed, helper=args.helper, policy=args.policy,
                                     tau=args.tau, budget=args.budget, cache_root=args.cache).summary()
        _print_json(result, args.out)
        return result
    if cmd == "sweep":
        table = evaluation.sweep(args.model, args.corpus, profile, args.seed, helper=args.helper, cache_root=args.cache)
        from lacy.io import atomic_write

        with atomic_write(args.out) as fh:
            table.to_csv(fh, index=False)
        print(table.to_string(index=False))
        return table
    raise AssertionError(cmd)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"lacy {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
