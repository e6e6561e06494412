"""`lab scenario run --all --report DIR`: every scenario in order, one Markdown page.

`run_all(client, out_dir)` runs each scenario of `SCENARIOS` (each one puts the lab back before
the next starts), draws each result that has a timeline or bars into `DIR/<scenario>.png`, and
writes `DIR/report.md`: the lab's version and the machine's core count, a summary table (verdicts
and wall time per scenario, and the total), then per scenario its CLAIM / OBSERVED / VERDICT
table, its notes and its plot. Ctrl-C stops the run after the current scenario has put the lab
back; the page then covers the scenarios that ran and says it was interrupted.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime, timezone
from typing import Callable

from scenarios.framework import Result, Scenario, run_scenario

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lab_version(repo: str = REPO) -> str:
    """`git describe --always --dirty --tags` of the checkout, else the pyproject version."""
    try:
        r = subprocess.run(
            ["git", "-C", repo, "describe", "--always", "--dirty", "--tags"], capture_output=True, text=True, timeout=10
        )
        if r.returncode == 0 and r.stdout.strip():
            return f"git {r.stdout.strip()}"
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        import tomllib

        with open(os.path.join(repo, "pyproject.toml"), "rb") as f:
            return f'{tomllib.load(f)["project"]["version"]} (pyproject)'
    except (OSError, KeyError, ValueError):
        return "unknown"


def cell(text: object) -> str:
    """TEXT fit for one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def verdicts(result: Result) -> str:
    """'3 agree', '2 agree, 1 differs', 'error: ...' or 'interrupted'."""
    if result.interrupted:
        return "interrupted"
    if result.error:
        return f"error: {cell(result.error)[:120]}"
    agree = sum(r.agrees for r in result.rows)
    differ = len(result.rows) - agree
    parts = [f"{agree} agree"] + ([f"{differ} differ" + ("s" if differ == 1 else "")] if differ else [])
    return ", ".join(parts)


def render(results: list[Result], plots: dict[str, str], meta: dict) -> str:
    """The Markdown page. META: version, cores, lab, started (text), total_s, interrupted (bool)."""
    out = [
        "# ambient-lab scenarios",
        "",
        f"- lab version: {meta.get('version', 'unknown')}",
        f"- machine: {meta.get('cores', '?')} cores",
        f"- lab: `{meta.get('lab', '?')}`, run started {meta.get('started', '?')}",
        f"- total wall time: {meta.get('total_s', 0):.1f} s for {len(results)} scenarios"
        + (" (interrupted: the scenarios after the last one below did not run)" if meta.get("interrupted") else ""),
        "",
        "| scenario | verdicts | wall time (s) |",
        "|---|---|---|",
    ]
    for r in results:
        out.append(f"| [{r.scenario}](#{r.scenario}) | {verdicts(r)} | {r.wall_s:.1f} |")
    out.append(f"| **total** | | **{meta.get('total_s', 0):.1f}** |")
    for r in results:
        out += ["", f"## {r.scenario}", "", f"{cell(r.summary)} — {r.wall_s:.1f} s", ""]
        if r.rows:
            out += ["| CLAIM | OBSERVED | VERDICT | SOURCE |", "|---|---|---|---|"]
            out += [
                f"| {cell(row.claim)} | {cell(row.observed)} | {cell(row.verdict)} | {cell(row.source)} |"
                for row in r.rows
            ]
        if r.error:
            out += ["", f"**error:** {cell(r.error)}"]
        if r.interrupted:
            out += ["", "**interrupted** (the lab was put back)"]
        if r.cleanup_errors:
            out += ["", "**could not put everything back:** " + cell("; ".join(r.cleanup_errors))]
        for n in r.notes:
            out += ["", f"> {cell(n)}"]
        if r.scenario in plots:
            out += ["", f"![{r.scenario}]({plots[r.scenario]})"]
    return "\n".join(out) + "\n"


def plottable(result: Result) -> bool:
    return bool(result.timelines or result.bars)


def run_all(
    client, out_dir: str, scenarios: list[Scenario] | None = None, log: Callable[[str], None] | None = None
) -> tuple[list[Result], str]:
    """Runs SCENARIOS (default: all) in order and writes OUT_DIR/report.md and the plots beside it;
    returns (results, the report's path). KeyboardInterrupt is re-raised after the page is written."""
    import scenarios as registry
    from scenarios.plot import plot

    todo = list(registry.SCENARIOS if scenarios is None else scenarios)
    os.makedirs(out_dir, exist_ok=True)
    say = log or (lambda msg: None)
    results: list[Result] = []
    plots: dict[str, str] = {}
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    t0 = time.monotonic()
    interrupted = False
    try:
        for i, sc in enumerate(todo, 1):
            say(f"== [{i}/{len(todo)}] {sc.name}")
            result = run_scenario(client, sc, log)
            results.append(result)
            say(f"== {sc.name}: {verdicts(result)} ({result.wall_s:.1f}s)")
            if plottable(result):
                name = f"{sc.name}.png"
                try:
                    plot(result, os.path.join(out_dir, name))
                    plots[sc.name] = name
                except Exception as e:  # noqa: BLE001 - a plot must not lose the report
                    result.notes.append(f"plot failed: {e}")
    except KeyboardInterrupt:
        interrupted = True
    meta = {
        "version": lab_version(),
        "cores": os.cpu_count(),
        "lab": getattr(client, "name", "?"),
        "started": started,
        "total_s": round(time.monotonic() - t0, 2),
        "interrupted": interrupted,
    }
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write(render(results, plots, meta))
    if interrupted:
        raise KeyboardInterrupt()
    return results, path
