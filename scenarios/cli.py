"""`lab scenario list`, `lab scenario run NAME [--plot FILE.png] [-o json]` and `lab scenario run --all
--report DIR` (docs/scenarios.md)."""

from __future__ import annotations

import os
import shutil
import sys

import scenarios
from lab.cli.common import CliError, columns
from scenarios.framework import table


def add_run_arguments(parser) -> None:
    """The flags of `lab scenario run`: NAME, or --all with --report DIR; --plot; -o json."""
    parser.add_argument("name", metavar="NAME", nargs="?", help="a scenario (lab scenario list)")
    parser.add_argument("--all", action="store_true", help="run every scenario, in order (with --report DIR)")
    parser.add_argument("--report", metavar="DIR", help="with --all: write DIR/report.md and a PNG per scenario")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the timeline (or bars) into FILE.png")
    parser.add_argument("-o", "--output", choices=["json"], help="json: the rows, raw figures and timelines")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_run_all(args, client) -> int:
    """`run --all --report DIR`: every scenario, one Markdown page (scenarios.report)."""
    from scenarios import report

    if not getattr(args, "report", None):
        raise CliError("error: --all needs --report DIR (the Markdown page and the plots go there)")
    if getattr(args, "name", None) or getattr(args, "plot", None) or getattr(args, "output", None):
        raise CliError("error: --all runs every scenario; it takes --report DIR only (no NAME, --plot or -o)")
    try:
        results, path = report.run_all(client, args.report, log=_log)
    except KeyboardInterrupt:
        print(
            f"interrupted; what the running scenario changed was put back; partial report: "
            f"{os.path.join(args.report, 'report.md')}",
            file=sys.stderr,
        )
        return 130
    total = sum(r.wall_s for r in results)
    for r in results:
        print(f"{r.scenario:24} {report.verdicts(r):40} {r.wall_s:6.1f}s")
    print(f"{'total':24} {'':40} {total:6.1f}s\nreport: {path}")
    failed = [r.scenario for r in results if r.error or r.cleanup_errors]
    if failed:
        print(f"error: could not run (or put back) {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_scenario(args, client) -> int:
    action = getattr(args, "scenario_verb", None)
    if action in (None, "list", "ls"):
        rows = [["NAME", "SUMMARY"]] + [[s.name, s.summary] for s in scenarios.SCENARIOS]
        print(columns(rows))
        return 0
    if getattr(args, "all", False):
        return cmd_run_all(args, client)
    if getattr(args, "report", None):
        raise CliError("error: --report DIR goes with --all")
    if not getattr(args, "name", None):
        raise CliError("error: a scenario NAME is required, or --all --report DIR (lab scenario list)")
    try:
        scenario = scenarios.get(args.name)
    except KeyError as e:
        raise CliError(f"error: {e.args[0]}") from None
    quiet = args.output == "json"
    try:
        result = scenarios.run_scenario(client, scenario, None if quiet and not sys.stderr.isatty() else _log)
    except KeyboardInterrupt:
        print(f"scenario {scenario.name} interrupted; what it changed was put back", file=sys.stderr)
        return 130
    plotted = None
    if args.plot:
        from scenarios.plot import plot

        plotted = plot(result, args.plot)
    if args.output == "json":
        print(result.to_json())
    else:
        print(f"scenario {result.scenario}: {result.summary} ({result.wall_s:.1f}s)\n")
        if result.rows:
            print(table(result.rows, min(140, max(90, shutil.get_terminal_size((118, 20)).columns - 2))))
        for n in result.notes:
            print(f"\nnote: {n}")
        if plotted:
            print(f"\nplot: {plotted}")
    if result.cleanup_errors:
        print("could not put everything back: " + "; ".join(result.cleanup_errors), file=sys.stderr)
    if result.error:
        print(f"error: scenario {scenario.name}: {result.error}", file=sys.stderr)
        return 1
    return 1 if result.cleanup_errors else 0


def add_cli_verbs(sub, _sub) -> None:
    """The `lab scenario` verb (lab/addons.py calls this)."""
    sp = _sub(sub, "scenario", "failure modes and the article's claims, one command each: scenario list | run NAME")
    ssub = sp.add_subparsers(dest="scenario_verb", metavar="ACTION", title="actions")
    _sub(ssub, "list", "the scenarios: NAME SUMMARY", aliases=["ls"])
    s_run = _sub(ssub, "run", "run a scenario: build, load, break, measure, restore; CLAIM OBSERVED VERDICT")
    add_run_arguments(s_run)
    sp.set_defaults(fn=cmd_scenario)
