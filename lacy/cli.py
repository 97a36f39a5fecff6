"""The ``lacy`` command line: ``lacy data | train | knowledge | generate | evaluate | sweep | compare | compare-rates | serve | bench | plan``.

Every command validates its choices, numbers and outputs up front and fails with the list of valid
values; results are printed (and written with ``--out``) as JSON or CSV so scripts and the book can
read them. Every expected failure ends in one line on stderr and exit code 2 (``LACY_DEBUG=1``
shows the traceback); stdout carries only results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from lacy.cascade.policies import POLICIES
from lacy.cascade.specs import HELPER_SPECS
from lacy.profiles import CORPORA, METHODS, PROFILES, ConfigError, get_profile, parse_overrides

BENCHES = ("annotate", "train", "cascade", "remote", "runs")


def _print_json(obj: Any, out: str | None = None) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    if out:
        from lacy.io import write_json_atomic

        write_json_atomic(Path(out), obj)
    print(text)


def _number(kind: type, low: float | None = None, high: float | None = None) -> Any:
    """An argparse ``type`` accepting a ``kind`` number in ``[low, high]`` (finite), with a clear error."""
    bounds = " and ".join(f"{word} {bound}" for word, bound in (("at least", low), ("at most", high)) if bound is not None)

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if value != value or value in (float("inf"), float("-inf")) or (low is not None and value < low) \
                or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range: expected a number {bounds}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _common(p: argparse.ArgumentParser, corpus: bool = True) -> None:
    if corpus:
        p.add_argument("--corpus", default="synthbio", help=f"one of {', '.join(CORPORA)}")
    p.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--seed", type=_number(int, 0, 2**32 - 1), default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile setting, e.g. --set train.max_steps=200 (repeatable)")
    p.add_argument("--cache", default=None, help="cache folder (default $LACY_CACHE or ~/.cache/lacy)")


def _cascade_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a folder written by `lacy train` (…/model) or save_pretrained")
    p.add_argument("--helper", default="doc", help=" | ".join(HELPER_SPECS) + " (doc is the oracle: handed the gold subject's documents)")
    p.add_argument("--policy", default=None, help=f"one of {', '.join(POLICIES)} (default budget; not for sweep)")
    p.add_argument("--tau", type=_number(float, 0, 1), default=None, help="threshold on P(<CALL>) for --policy threshold")
    p.add_argument("--budget", type=_number(float, 0, 1), default=None,
                   help="target call rate for --policy budget or threshold (default: profile eval.budget)")
    p.add_argument("--helper-fallback", action="store_true",
                   help="with a remote helper (http://…): count calls it cannot answer as unresolved instead of failing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lacy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="build the token-aligned cache of a corpus and print its summary")
    _common(p)
    p.add_argument("--out", default=None, help="cache folder (same as --cache)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="annotate only shard I of N (0-based) into its own part; join the parts with --merge N")
    p.add_argument("--merge", type=int, default=None, metavar="N", help="join the N parts written by --shard into the cache")

    p = sub.add_parser("train", help="pretrain an SLM with a token-selection method")
    _common(p)
    p.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    p.add_argument("--out", required=True, help="run folder: model/, metrics.csv, summary.json")
    p.add_argument("--reference", default=None, help="reference model folder for --method rho/judge (default: a cached standard run)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("knowledge", help="recall of the SLM alone per exposure tier (synthbio knowledge curve, JSON)")
    _common(p)
    p.add_argument("--model", required=True, help="a folder written by `lacy train` (…/model) or save_pretrained")
    p.add_argument("--per-tier", type=int, default=0, help="people per tier, a sample drawn with --seed (default 0: everyone)")
    p.add_argument("--out", default=None, help="also write the JSON here, and the per-fact table beside it (OUT with suffix .facts.csv)")

    p = sub.add_parser("generate", help="generate with the SLM in cascade with a helper")
    _common(p)
    _cascade_options(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--subject", default=None, help="subject for the oracle document helper (default: the prompt)")
    p.add_argument("--max-new-tokens", type=_number(int, 1), default=None, help="default: profile eval.max_new_tokens")

    p = sub.add_parser("evaluate", help="FactScore of the SLM in cascade on a fixed set of subjects")
    _common(p)
    _cascade_options(p)
    p.add_argument("--out", required=True, help="JSON file")

    p = sub.add_parser("sweep", help="FactScore vs calibrated call rate (Co-LLM style sweep)")
    _common(p)
    _cascade_options(p)
    p.add_argument("--out", required=True, help="CSV file")

    p = sub.add_parser("compare", help="A - B on the same subjects: paired bootstrap 95%% intervals (JSON)")
    p.add_argument("a", help="a `lacy evaluate` JSON result (or a JSON list of them, one per training seed)")
    p.add_argument("b", help="the result to compare against, on the same subjects")
    p.add_argument("--metrics", default="precision,recall", help="comma-separated metrics (default: precision,recall)")
    p.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--out", default=None, help="also write the JSON here")

    p = sub.add_parser("compare-rates", help="A - B at equal achieved call rates, pooled over training seeds (JSON)")
    _common(p)
    p.add_argument("--a", nargs="+", required=True, metavar="RUN", help="run (or model) folders of method A, one per training seed")
    p.add_argument("--b", nargs="+", required=True, metavar="RUN", help="run (or model) folders of method B, one per training seed")
    p.add_argument("--helper", default="doc", help=" | ".join(HELPER_SPECS) + " (doc is the oracle: handed the gold subject's documents)")
    p.add_argument("--rates", default="0.1,0.22,0.4", help="achieved call rates to compare at, comma-separated (default 0.1,0.22,0.4)")
    p.add_argument("--out", default=None, help="also write the JSON here")

    p = sub.add_parser("serve", help="serve a helper over an OpenAI-compatible completions API")
    p.add_argument("--helper", required=True, help=" | ".join(spec for spec in HELPER_SPECS if spec.startswith(("hf:", "smollm2"))))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_number(int, 1, 65535), default=8000)
    p.add_argument("--api-key-env", default=None, help="name of an environment variable holding a bearer token")

    p = sub.add_parser("bench", help="benchmarks against a baseline run side by side (JSON)")
    p.add_argument("which", help=f"one of {', '.join(BENCHES)}")
    p.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile setting, e.g. --set train.precision=32 (benches that take settings)")

    p = sub.add_parser("plan", help="FLOPs and expected wall time of every chapter on T4 / A100 / H100 and this machine")
    p.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile setting, e.g. --set train.max_steps=200 (repeatable)")
    p.add_argument("--no-measure", action="store_true", help="skip measuring this machine's GEMM peak")
    p.add_argument("--out", default=None, help="also write the table as JSON here")
    return parser


def _read_result(path: str) -> Any:
    """A JSON file written by ``lacy evaluate --out`` (or a list of them), with a clear error otherwise."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no result file {path}; write one with `lacy evaluate ... --out {path}`")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON ({error}); pass a file written by `lacy evaluate --out`") from None


def _rates(text: str) -> list[float]:
    """``--rates 0.1,0.22``: call rates in [0, 1) (0 is the SLM alone; 1, the helper alone, has no sweep point to mix)."""
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--rates {text!r}: give call rates as comma-separated numbers, e.g. 0.1,0.22,0.4") from None
    if not rates or any(not 0 <= rate < 1 for rate in rates):
        raise ConfigError(f"--rates {text!r}: every rate must be in [0, 1) (1 means the helper alone), e.g. 0.1,0.22,0.4")
    return rates


def _check(kind: str, value: str | None, choices: Sequence[str]) -> None:
    from lacy.profiles import check_choice

    if value is not None:
        check_choice(kind, value, tuple(choices))


def _refuse_unused(args: argparse.Namespace) -> None:
    """Refuse options the command would ignore, saying what they apply to."""
    cmd = args.command
    unused: list[str] = []
    if cmd == "sweep":
        unused = [f"--{name}" for name in ("policy", "tau", "budget") if getattr(args, name) is not None]
        if unused:
            raise ConfigError(f"{', '.join(unused)} do(es) not apply to sweep: it runs a threshold policy at each call "
                              "rate of eval.sweep_rates (set them with --set eval.sweep_rates=0,0.5,1)")
    if cmd in ("generate", "evaluate"):
        policy = args.policy or "budget"
        applies = {"tau": ("threshold",), "budget": ("budget", "threshold")}
        unused = [f"--{name}" for name, policies in applies.items() if getattr(args, name) is not None and policy not in policies]
        if unused:
            raise ConfigError(f"{', '.join(unused)} do(es) not apply to --policy {policy}: --tau is for threshold, "
                              "--budget for budget or threshold")
    if cmd in ("generate", "evaluate", "sweep") and args.helper_fallback and not args.helper.startswith(("http://", "https://")):
        raise ConfigError("--helper-fallback applies to a remote helper (--helper http://HOST:PORT) only")
    if cmd == "train" and args.reference and not _needs_reference(args.method, args.corpus):
        raise ConfigError(f"--reference does not apply to --method {args.method} on {args.corpus}: "
                          "it is used by --method rho and rho_excess, and by --method judge on vitalwiki")
    if cmd == "data" and args.out and args.cache and Path(args.out) != Path(args.cache):
        raise ConfigError("pass the cache folder once: --out and --cache name the same thing for `lacy data`")
    for name in ("prompt", "subject"):
        value = getattr(args, name, None)
        try:
            (value or "").encode("utf-8")
        except UnicodeEncodeError as err:
            raise ConfigError(f"--{name} is not valid UTF-8 text (bytes {err.object[err.start:err.end]!r} at position "
                              f"{err.start}); pass UTF-8 text") from None


def _check_outputs(args: argparse.Namespace) -> None:
    """Fail before the work if an output cannot be written (the results would be lost after it)."""
    from lacy.io import check_writable

    out = getattr(args, "out", None)
    if args.command in ("train", "data"):
        from lacy.data.cache import default_cache_root

        cache = (out if args.command == "data" else None) or args.cache or default_cache_root()
        check_writable(cache, directory=True)
        if args.command == "train":
            check_writable(out, directory=True)
    elif out:
        check_writable(out)


def _needs_reference(method: str, corpus: str) -> bool:
    """Whether ``lacy train --method METHOD --corpus CORPUS`` uses a reference model (``--reference``)."""
    from lacy.data.corpora import get_corpus
    from lacy.train.selection import JUDGES, get_method

    return get_method(method).needs_reference(JUDGES[get_corpus(corpus).judge])


def run(args: argparse.Namespace) -> Any:
    cmd = args.command
    _refuse_unused(args)
    _check_outputs(args)
    if cmd == "bench":
        _check("bench", args.which, BENCHES)
        _check("profile", args.profile, tuple(PROFILES))
        import importlib
        import inspect

        bench_run = importlib.import_module(f"lacy.bench.{args.which}").run
        kwargs = {}
        if args.overrides:
            if "overrides" not in inspect.signature(bench_run).parameters:
                raise ConfigError(f"lacy bench {args.which} takes no --set settings; run it without --set")
            kwargs["overrides"] = parse_overrides(args.overrides)
        with contextlib.redirect_stdout(sys.stderr):
            result = bench_run(profile=args.profile, **kwargs)
        _print_json(result, args.out)
        return result
    if cmd == "compare":
        from lacy.evaluate.stats import N_BOOTSTRAP, compare

        n_boot = N_BOOTSTRAP if args.n_boot is None else args.n_boot
        if n_boot < 100:
            raise ConfigError(f"--n-boot must be >= 100 for a 95% interval, got {n_boot}")
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        result = compare(_read_result(args.a), _read_result(args.b), metrics, n_boot=n_boot, seed=args.seed)
        _print_json(result, args.out)
        return result
    if cmd == "serve":
        from lacy.serve import serve

        import os

        api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
        if args.api_key_env and not api_key:
            raise ConfigError(f"--api-key-env {args.api_key_env}: that environment variable is empty or unset")
        return serve(args.helper, host=args.host, port=args.port, api_key=api_key)

    if cmd == "plan":
        from lacy import plan

        settings = get_profile(args.profile, parse_overrides(args.overrides))
        peak, dtype = (None, None) if args.no_measure else plan.machine_peak()
        plans = plan.plan(settings, peak)
        print(plan.render(plans, dtype))
        if args.out:
            from lacy.io import write_json_atomic

            write_json_atomic(Path(args.out), plan.plan_table(plans))
        return plans

    _check("corpus", args.corpus, CORPORA)
    profile = get_profile(args.profile, parse_overrides(args.overrides))
    if cmd == "data":
        from lacy.data import shards

        with contextlib.redirect_stdout(sys.stderr):  # progress bars and library chatter: stdout is for results
            summary = shards.data_command(args.corpus, profile, args.seed, args.out or args.cache, shard=args.shard,
                                          merge=args.merge, log=lambda m: print(m, file=sys.stderr))
        _print_json(summary)
        return summary
    if cmd == "train":
        _check("method", args.method, METHODS)
        from lacy.train.run import train

        with contextlib.redirect_stdout(sys.stderr):
            summary = train(args.corpus, args.method, profile, args.seed, Path(args.out), cache_root=args.cache,
                            reference=Path(args.reference) if args.reference else None, progress=not args.no_progress)
        _print_json(summary)
        return summary

    if cmd == "knowledge":
        from lacy.data.corpora import get_corpus

        if get_corpus(args.corpus).world(profile, args.seed) is None:
            raise ConfigError(f"lacy knowledge needs --corpus synthbio (a corpus with a world and its knowledge base), got {args.corpus!r}")
        from lacy.evaluate.knowledge import knowledge

        frame, summary = knowledge(args.model, profile, per_tier=args.per_tier, seed=args.seed)
        if args.out:
            from lacy.io import atomic_write

            with atomic_write(Path(args.out).with_suffix(".facts.csv")) as fh:
                frame.to_csv(fh, index=False)
        _print_json(summary, args.out)
        return summary

    if cmd == "compare-rates":
        from lacy.evaluate.grid import compare_at_achieved_rates

        rates = _rates(args.rates)
        with contextlib.redirect_stdout(sys.stderr):
            table = compare_at_achieved_rates({"A": args.a, "B": args.b}, {args.helper: args.helper}, args.corpus, profile,
                                              args.seed, method="A", rates=rates, cache_root=args.cache)
        result = {"rates": rates, "n_seeds": {"A": len(args.a), "B": len(args.b)},
                  "rows": json.loads(table.drop(columns=["helper", "baseline"]).to_json(orient="records"))}
        _print_json(result, args.out)
        return result

    _check("policy", args.policy, POLICIES)
    policy = args.policy or "budget"
    from lacy.evaluate import run as evaluation

    if cmd == "generate":
        gen = evaluation.generate(args.model, args.corpus, profile, args.seed, helper=args.helper, policy=policy,
                                  tau=args.tau, budget=args.budget, prompt=args.prompt, subject=args.subject,
                                  max_new_tokens=args.max_new_tokens, cache_root=args.cache,
                                  helper_fallback=args.helper_fallback)
        print(gen.prompt + gen.marked())
        print(json.dumps({"n_calls": gen.n_calls, "unresolved_calls": gen.unresolved_calls,
                          "slm_tokens": gen.slm_tokens, "helper_tokens": gen.helper_tokens,
                          "seconds": round(gen.seconds, 3)}), file=sys.stderr)
        return gen
    if cmd == "evaluate":
        with contextlib.redirect_stdout(sys.stderr):
            result = evaluation.evaluate(args.model, args.corpus, profile, args.seed, helper=args.helper, policy=policy,
                                         tau=args.tau, budget=args.budget, cache_root=args.cache,
                                         helper_fallback=args.helper_fallback).summary()
        _print_json(result, args.out)
        return result
    if cmd == "sweep":
        with contextlib.redirect_stdout(sys.stderr):
            table = evaluation.sweep(args.model, args.corpus, profile, args.seed, helper=args.helper,
                                     cache_root=args.cache, helper_fallback=args.helper_fallback)
        from lacy.io import atomic_write

        with atomic_write(args.out) as fh:
            table.to_csv(fh, index=False)
        print(table.to_string(index=False))
        return table
    raise AssertionError(cmd)


def expected_errors() -> tuple[type[BaseException], ...]:
    """The failures a user can cause and fix (bad input, files, servers, missing packages).

    Library-specific classes are only looked up in modules already imported: an error of a module
    that was never imported cannot have been raised.
    """
    types: list[type[BaseException]] = [ValueError, OSError, ImportError]
    for module, name in (("lacy.cascade.remote", "RemoteHelperError"), ("safetensors", "SafetensorError")):
        if module in sys.modules:
            types.append(getattr(sys.modules[module], name))
    return tuple(types)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the CLI's single error boundary (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if os.environ.get("LACY_DEBUG", "") not in ("", "0"):
        run(args)
        return 0
    try:
        run(args)
    except KeyboardInterrupt:
        print(f"lacy {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the boundary: one line instead of a traceback
        message = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, expected_errors()):
            print(f"lacy {args.command}: error: {message}", file=sys.stderr)
            return 2
        print(f"lacy {args.command}: internal error: {type(err).__name__}: {message} "
              "(run again with LACY_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
