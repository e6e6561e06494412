"""`lab scenario list` and `lab scenario run NAME [--plot FILE.png] [-o json]` (docs/scenarios.md)."""
from __future__ import annotations

import shutil
import sys

from lab import scenarios
from lab.cli.common import CliError, columns
from lab.scenarios.framework import table


def cmd_scenario(args, client) -> int:
    action = getattr(args, "scenario_verb", None)
    if action in (None, "list", "ls"):
        rows = [["NAME", "SUMMARY"]] + [[s.name, s.summary] for s in scenarios.SCENARIOS]
        print(columns(rows))
        return 0
    try:
        scenario = scenarios.get(args.name)
    except KeyError as e:
        raise CliError(f"error: {e.args[0]}") from None
    quiet = args.output == "json"

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)
    try:
        result = scenarios.run_scenario(client, scenario, None if quiet and not sys.stderr.isatty() else log)
    except KeyboardInterrupt:
        print(f"scenario {scenario.name} interrupted; what it changed was put back", file=sys.stderr)
        return 130
    plotted = None
    if args.plot:
        from lab.scenarios.plot import plot
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

