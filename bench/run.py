"""Run the benchmark suite and write the results table.

    python bench/run.py [--smoke] [--only cli,fanout,returns,events,latency] [--out bench/results] [--merge]
    python bench/run.py --baseline 67b7203 [--only returns [--backends mysql]] [--rounds 3] [--current HEAD]
    python bench/run.py --baseline 67b7203 --baseline-only [--only returns]
    python bench/run.py --docs [--out bench/results]   # docs/performance.md from <out>/latest.json

Writes ``<out>/latest.json`` and ``<out>/latest.md`` (``make bench``: full mode; ``make
bench-smoke``: small N, to ``bench/results/smoke``).

The "before" column: with ``--baseline COMMIT``, the same run measures every selected benchmark
with that commit's code too, checked out into a temporary git worktree (``bench/codetree.py``),
alternating (baseline round 1, current round 1, baseline round 2, ...; each sustained benchmark
does one run per round), so drift of the machine weighs on both; the load generator, the floors
and the measuring code are always this tree's ``bench/``. ``--baseline-only`` measures only the
commit. Without ``--baseline``, ``bench/results/baseline.json``, when present, gives the "before"
column (figures of an earlier run, such as a ``--baseline-only`` run's ``latest.json``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
from codetree import CodeTree, CodeTreeError, commit_tree, current_tree, resolve  # noqa: E402
from common import REST as REST_LABEL  # noqa: E402
from common import ROOT, dump, fmt, machine_info  # noqa: E402

RESULTS = BENCH / "results"
Rows = list[dict[str, Any]]
#: benchmarks whose figures are returns on the wire, to be set beside the transport floor
RETURNS_LIKE = ("returns", "returns_jobcache", "returns_mongo", "events")


#: ``--backends``: the backends of the ``returns`` benchmark (empty: all four)
BACKENDS: list[str] = []


def registry() -> dict[str, Callable[[bool, Path], Rows]]:
    """Every benchmark by name, in the table's order: ``bench/benchmarks.py``'s, then the
    scale-out ones (``bench/scale_out.py``: masters on a NATS JetStream cluster)."""
    import benchmarks
    import scale_out

    return {**benchmarks.ALL, "scale_out": scale_out.bench_scale_out}


def _benchmarks() -> dict[str, Callable[[bool, Path], Rows]]:
    import benchmarks

    chosen = {**registry(), "transport": lambda smoke, _folder: benchmarks.transport_floor(smoke)}
    if BACKENDS:
        chosen["returns"] = lambda smoke, folder: benchmarks.bench_returns(smoke, folder, tuple(BACKENDS))
    return chosen


def _order(name: str) -> float:
    """Where a benchmark's rows go in the table (the transport floor just before the returns)."""
    names = list(registry())
    if name == "transport":
        return names.index("returns") - 0.5 if "returns" in names else -1
    return names.index(name) if name in names else len(names)


def _one(name: str, smoke: bool) -> Rows:
    with tempfile.TemporaryDirectory(prefix=f"saline-bench-{name}-") as tmp:
        rows = _benchmarks()[name](smoke, Path(tmp))
    for r in rows:
        r["bench"] = name
    return rows


def collect(smoke: bool, names: list[str]) -> tuple[Rows, dict[str, str]]:
    """Each benchmark once, with the installed saline (this tree)."""
    rows: Rows = []
    errors: dict[str, str] = {}
    for name in names:
        print(f"== {name}{' (smoke)' if smoke else ''}", flush=True)
        begin = time.monotonic()
        try:
            rows += _one(name, smoke)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            errors[name] = f"{type(exc).__name__}: {exc}"
            print(f"  FAILED: {errors[name]}", flush=True)
            traceback.print_exc()
        print(f"   ({time.monotonic() - begin:.0f} s)", flush=True)
    from compare import transport_shares

    return transport_shares(rows), errors


def collect_sides(smoke: bool, names: list[str], trees: list[CodeTree],
                  rounds: int) -> tuple[Rows, dict[str, str], dict[str, dict[str, Any]]]:
    """Each benchmark ``rounds`` times per code tree, alternating the trees within each round; the
    transport floor (no saline in it) once per round. Returns the combined rows, the errors, and
    per tree what its processes were checked to have run."""
    import benchmarks

    benchmarks.SUSTAIN["runs"] = 1  # one run per round and side: the rounds are the runs
    try:
        return _collect_sides(smoke, names, trees, rounds)
    finally:
        benchmarks.SUSTAIN["runs"] = 0


def _collect_sides(smoke: bool, names: list[str], trees: list[CodeTree],
                   rounds: int) -> tuple[Rows, dict[str, str], dict[str, dict[str, Any]]]:
    from compare import combine, transport_shares

    if "returns" not in names and any(n in RETURNS_LIKE for n in names):
        names = ["transport", *names]  # the floor of their own run
    rows: Rows = []
    errors: dict[str, str] = {}
    seen: dict[str, dict[str, int]] = {t.label: {} for t in trees}
    for name in names:
        sides: list[CodeTree | None] = [None] if name == "transport" else list(trees)
        got: dict[str | None, list[Rows]] = {(t.label if t else None): [] for t in sides}
        for k in range(rounds):
            for tree in sides:
                what = f"{name}, round {k + 1}/{rounds}" + (f", {tree.label} code ({tree.describe()})" if tree else "")
                print(f"== {what}{' (smoke)' if smoke else ''}", flush=True)
                begin = time.monotonic()
                try:
                    if tree is not None:
                        tree.reset()
                        common.CODE["tree"] = tree
                    part = _one(name, smoke)
                    for r in part:
                        r["round"] = k + 1
                    if tree is not None:  # the processes really ran this tree's saline, or no figures
                        for kind, n in tree.verify().items():
                            seen[tree.label][kind] = seen[tree.label].get(kind, 0) + n
                    got[tree.label if tree else None].append(part)
                except Exception as exc:
                    msg = f"{what}: {type(exc).__name__}: " + " / ".join(str(exc).split("\n")).strip(" /")
                    errors[name] = f"{errors[name]}; {msg}" if name in errors else msg
                    print(f"  FAILED: {msg}", flush=True)
                    traceback.print_exc()
                finally:
                    common.CODE["tree"] = None
                print(f"   ({time.monotonic() - begin:.0f} s)", flush=True)
        if name == "transport":
            part = combine(got[None] or None, None)
        else:
            base = got.get("baseline") or None
            part = combine(got["current"] or None, base) if "current" in got else combine(None, base)
        for r in part:
            r["bench"] = name
            if "baseline" in r:
                r["baseline"]["commit"] = trees[0].short
        rows += part
    checked = {t.label: t.summary(seen[t.label]) for t in trees}
    return transport_shares(rows), errors, checked


def run(smoke: bool, only: list[str], out: Path, merge: bool = False, baseline: str | None = None,
        baseline_only: bool = False, rounds: int = 0, current: str | None = None) -> dict[str, Any]:
    from benchmarks import SUSTAIN

    known = registry()
    names = only or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"bench/run.py: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for commit in (baseline, current):
        if commit:
            resolve(commit)  # a typo is one line now, not after the machine's versions
    if merge and (out / "latest.json").exists():
        _check_mergeable(json.loads((out / "latest.json").read_text()), baseline, baseline_only)
    info = machine_info()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    started = time.time()
    compared: dict[str, Any] = {}
    with ExitStack() as stack:
        if baseline:
            rounds = rounds or (1 if smoke else 3)
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="saline-bench-code-")))
            trees = [stack.enter_context(commit_tree(baseline, "baseline"))]
            if not baseline_only:
                trees.append(stack.enter_context(commit_tree(current, "current")) if current
                             else current_tree(scratch))
            print("code: " + "; ".join(f"{t.label} {t.describe()} ({t.package})" for t in trees), flush=True)
            rows, errors, checked = collect_sides(smoke, names, trees, rounds)
            compared = {"rounds": rounds, **checked}
        else:
            rows, errors = collect(smoke, names)
    if BACKENDS and "returns" in names:  # the other backends' rows of an earlier run stay, on --merge
        result_extra: dict[str, Any] = {"partial": ["returns"], "backends": list(BACKENDS)}
    else:
        result_extra = {}
    result: dict[str, Any] = {**result_extra, "mode": "smoke" if smoke else "full", "sustain_s": SUSTAIN["seconds"],
                              "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
                              "seconds": round(time.time() - started, 1), "machine": info, "rows": rows,
                              "errors": errors}
    if compared:
        result["compare"] = compared
    out.mkdir(parents=True, exist_ok=True)
    if merge and (out / "latest.json").exists():
        result = _merge(json.loads((out / "latest.json").read_text()), result)
    dump(out / "latest.json", result)
    (out / "latest.md").write_text(markdown(result, _baseline()))
    print(f"wrote {out / 'latest.md'} and {out / 'latest.json'}", flush=True)
    return result


def _check_mergeable(old: dict[str, Any], baseline: str | None, baseline_only: bool) -> None:
    """A table has one "now": rows of a --baseline-only run (another commit's code) join only the
    rows of the same commit's --baseline-only runs."""
    def only_of(result: dict[str, Any]) -> str | None:
        comp = result.get("compare") or {}
        return comp["baseline"]["commit"] if comp.get("baseline") and not comp.get("current") else None

    mine = resolve(baseline) if baseline and baseline_only else None
    if only_of(old) != mine:
        raise CodeTreeError("--merge: the latest.json there measures "
                            + (f"only commit {only_of(old)[:7]}" if only_of(old) else "the current code")
                            + ", this run " + (f"only commit {mine[:7]}" if mine else "the current code")
                            + "; give this run an --out of its own")


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The last run's rows, with this run's benchmarks (and any row of the same name) replaced."""
    fresh = ({r["bench"] for r in new["rows"]} | set(new["errors"])) - set(new.get("partial", []))
    names = {r["name"] for r in new["rows"]}
    kept = [r for r in old["rows"] if r.get("bench") not in fresh and r["name"] not in names]
    rows = sorted(kept + new["rows"], key=lambda r: _order(r.get("bench", "")))  # stable: each run's own order
    merged = {**old, "rows": rows, "errors": {**{k: v for k, v in old.get("errors", {}).items() if k not in fresh},
                                              **new["errors"]},
              "merged": sorted(set(old.get("merged", [])) | fresh | set(new.get("partial", []))),
              "machine": new["machine"]}
    merged.pop("partial", None)
    merged.pop("backends", None)
    if "compare" in new:
        merged["compare"] = new["compare"]
    return merged


def _baseline() -> dict[str, Any] | None:
    path = RESULTS / "baseline.json"
    return json.loads(path.read_text()) if path.exists() else None


def _pct(value: float | None) -> str:
    return f"{value:.0%}" if value is not None else "-"


def _runs(values: list[float] | None, unit: str) -> str:
    return ", ".join(fmt(v, unit) for v in values or []) if len(values or []) > 1 else ""


def markdown(result: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    info = result["machine"]
    comp = result.get("compare") or {}
    base_c, cur_c = comp.get("baseline"), comp.get("current")
    paired = bool(base_c and cur_c)  # both codes measured in this run
    if base_c:
        baseline = None  # the same run's figures replace baseline.json's
    before = {r["name"]: r for r in (baseline or {}).get("rows", []) if not r.get("scale")}
    rows = result["rows"]
    shares = any(r.get("of_transport") is not None for r in rows)
    if base_c and not cur_c:
        code = f"commit {base_c['short']} (checked out in a temporary git worktree)"
    elif cur_c:
        code = cur_c["describe"]
        if cur_c["short"] != info.get("git"):
            code += f" (bench/ at commit {info.get('git')})"
    else:
        code = f"commit {info.get('git')}"
    lines = [f"Mode: **{result['mode']}**, run {result['started']} ({result['seconds']:.0f} s), {code}.",
             *([f"Rerun later and merged in (at the commit above): {', '.join(result['merged'])}.", ""]
               if result.get("merged") else []),
             f"Machine: {info['cores']} cores ({info['cpu']}), {info['memory_mb']:,} MB memory, {info['os']}.",
             "",
             "Versions: " + ", ".join(f"{k} {info[k]}" for k in
                                     ("python", "pyzmq", "libzmq", "msgpack", "sqlite", "mariadb", "postgresql",
                                      "redis", "PyMySQL", "psycopg", "redis-py")) + ".",
             ""]
    if base_c:
        lines += [_code_line(comp), ""]
    if paired:
        head = ["figure", "goal", f"before (commit {base_c['short']}, same run)", "now (median)", "now / before",
                "met", "floor"]
    else:
        head = ["figure", "goal"] + (["before"] if baseline else []) + \
               [f"commit {base_c['short']} (median)" if base_c else "now (median)", "met", "floor"]
    if shares:
        head.append("of the transport floor" + (" (before → now)" if paired else ""))
    head += ["runs" + (" (before; now)" if paired else ""), "notes"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("scale"):
            continue
        unit = r["unit"]
        met = "yes" if r["met"] else "**no**" if r["met"] is not None else ""
        floor = f"{fmt(r['floor'], unit)} ({r['floor_what']})" if r.get("floor") is not None else ""
        b = r.get("baseline") or {}
        cells = [r["name"], r["goal"]]
        if paired:
            other = f" (commit {b['commit']})" if b.get("commit") and b["commit"] != base_c["short"] else ""
            ratio = f"×{r['ratio']:.2f}" if r.get("ratio") else ""
            if ratio and len(r.get("round_ratios") or []) > 1:
                ratio += " (rounds " + ", ".join(f"×{x:.2f}" for x in r["round_ratios"]) + ")"
            cells += [fmt(b["value"], unit) + other if b else "", fmt(r["value"], unit), ratio, met, floor]
        else:
            if baseline:
                prev = before.get(r["name"])
                cells.append(fmt(prev["value"], prev["unit"]) if prev else "")
            cells += [fmt(r["value"], unit), met, floor]
        if shares:
            now = _pct(r.get("of_transport")) if r.get("of_transport") is not None else ""
            cells.append(f"{_pct(b.get('of_transport'))} → {now}" if paired and b.get("of_transport") else now)
        if paired and b:
            runs = "; ".join(f"{side}: {_runs(x.get('runs'), unit)}" for side, x in (("before", b), ("now", r))
                             if _runs(x.get("runs"), unit))
            note = r.get("note", "") + (f" — before: {b['note']}" if b.get("note") else "")
        else:
            runs, note = _runs(r.get("runs"), unit), r.get("note", "")
        cells += [runs, note]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    lines += _scale_tables(rows, paired)
    if result.get("errors"):
        lines += ["", "Benchmarks that failed:", ""] + [f"- {k}: {v}" for k, v in result["errors"].items()]
    return "\n".join(lines) + "\n"


def _code_line(comp: dict[str, Any]) -> str:
    """Which code each side ran, and how that was checked."""
    def ran(side: dict[str, Any]) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in side["processes"].items()) or "no process"
        return f"{side['saline']} ({kinds})"

    base, cur = comp["baseline"], comp.get("current")
    text = (f"Before: commit {base['short']}, checked out into a temporary git worktree. Each process the "
            f"benchmarks started checked at start-up where it imported saline from "
            f"(`bench/codeshim/sitecustomize.py`): the baseline's from {ran(base)}")
    if cur:
        text = (f"Before and now measured in the same run: {comp['rounds']} round(s), in each round every benchmark "
                f"ran first with the code of commit {base['short']}, then with {cur['describe']}; the load generator, "
                f"the floors and the measuring code were this tree's `bench/` for both. " + text +
                f"; the current ones from {ran(cur)}")
    return text + "."


def _scale_tables(rows: Rows, paired: bool) -> list[str]:
    lines: list[str] = []
    fan = [r for r in rows if r.get("scale") and "fanout_s" in r]
    if fan:
        lines += ["", "How the costs grow with N minions (fan-out of test.ping, medians):", "",
                  "| N | fan-out |" + (" before |" if paired else "") +
                  " bare pyzmq floor | per minion | master RSS | swarm MB/minion | lost | swarm ready |",
                  "|---|---|" + ("---|" if paired else "") + "---|---|---|---|---|---|"]
        for r in fan:
            prev = (r.get("baseline") or {}).get("fanout_s")
            lines.append(f"| {r['n']:,} | {r['fanout_s']:.3f} s | " +
                         (f"{prev:.3f} s | " if prev is not None else "| " if paired else "") +
                         f"{r['floor_s']:.3f} s | {r['fanout_s'] / r['n'] * 1000:.2f} ms | "
                         f"{r['master_rss_mb']:.0f} MB | {r['swarm_mb_per_minion']:.2f} | {r['lost']} | "
                         f"{r['ready_s']:.1f} s |")
    burst = [r for r in rows if r.get("scale") and "burst_s" in r]
    if burst:
        lines += ["", "How the costs grow with N returns (a burst of N returns of one job, from the first send to "
                      "all N rows visible in MySQL):", "",
                  "| N | time | returns/s |" + (" before |" if paired else ""),
                  "|---|---|---|" + ("---|" if paired else "")]
        for r in burst:
            prev = (r.get("baseline") or {}).get("burst_rate")
            lines.append(f"| {r['n']:,} | {r['burst_s']:.3f} s | {r['burst_rate']:,.0f}/s |" +
                         (f" {prev:,.0f}/s |" if prev is not None else " |" if paired else ""))
    cpu = [r for r in rows if r.get("scale") and "cpu_ms_per_1000" in r]
    if cpu:
        parts = list(cpu[0]["cpu_ms_per_1000"])
        lines += ["", "CPU per 1,000 returns into MySQL, in CPU-milliseconds, per component (scale-out, medians of the "
                      "runs; each run from the measured window to the last row stored):", "",
                  "| set-up | rows/s | " + " | ".join(parts) + " | deployed (all but load generator and rest) |",
                  "|---|---|" + "---|" * len(parts) + "---|"]
        for r in cpu:
            ms = r["cpu_ms_per_1000"]
            deployed = sum(v for k, v in ms.items() if k not in ("load generator", REST_LABEL))
            lines.append(f"| {r['setup']} | {r['rate']:,.0f}/s | " + " | ".join(f"{ms.get(k, 0.0):.0f}" for k in parts)
                         + f" | {deployed:.0f} |")
    return lines


def docs(out: Path = RESULTS) -> None:
    result = json.loads((out / "latest.json").read_text())
    notes = (BENCH / "performance_notes.md").read_text()
    source = (out / "latest.json").resolve()
    source_name = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
    option = "" if out.resolve() == RESULTS else f" --out {out}"
    head = ("# Performance\n\n"
            f"Generated by `make bench` (`bench/run.py`; `python bench/run.py --docs{option}` rebuilds this page "
            f"from `{source_name}` and the hand-written `bench/performance_notes.md`). "
            "Each figure is the median of its runs; the floor beside it is what the same work costs "
            "without saline (the interpreter, bare pyzmq, the database driver's own bulk path).\n\n"
            "## The figures\n\n")
    (ROOT / "docs" / "performance.md").write_text(head + markdown(result, _baseline()) + "\n" + notes)
    print(f"wrote {ROOT / 'docs' / 'performance.md'}")


def _terminate(signum: int, _frame: Any) -> None:
    # `timeout` and Ctrl-C alike: unwind, so clusters stop and the baseline worktree is removed
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="small N, a few seconds per benchmark")
    parser.add_argument("--only", default="", help="comma-separated: cli, fanout, returns, returns_jobcache, "
                                                   "returns_mongo, events, latency, api, scale_out")
    parser.add_argument("--out", default=None, help="folder of latest.json/latest.md (default bench/results, "
                                                    "bench/results/smoke with --smoke)")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of sustained load per run (full mode)")
    parser.add_argument("--docs", action="store_true", help="write docs/performance.md from <out>/latest.json")
    parser.add_argument("--merge", action="store_true", help="replace only these benchmarks' rows in latest.json")
    parser.add_argument("--baseline", metavar="COMMIT", default=None,
                        help="also measure COMMIT's code, in the same run, alternating with the current code")
    parser.add_argument("--baseline-only", action="store_true", help="measure only the --baseline commit's code")
    parser.add_argument("--current", metavar="COMMIT", default=None,
                        help="with --baseline: the 'now' side is COMMIT (a worktree too), not the working tree")
    parser.add_argument("--backends", default="", help="comma-separated backends of the returns benchmark "
                                                        "(mysql, postgres, sqlite3, redis; default all)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="with --baseline: rounds of each benchmark per side (default 3, 1 with --smoke)")
    args = parser.parse_args()
    if args.docs:
        docs(Path(args.out) if args.out else RESULTS)
        return
    if (args.baseline_only or args.current or args.rounds) and not args.baseline:
        parser.error("--baseline-only, --current and --rounds go with --baseline COMMIT")
    if args.rounds < 0:
        parser.error("--rounds must be 1 or more")
    BACKENDS[:] = [b for b in args.backends.split(",") if b]
    wrong = [b for b in BACKENDS if b not in ("mysql", "postgres", "sqlite3", "redis")]
    if wrong:
        parser.error(f"--backends: unknown {', '.join(wrong)}; known: mysql, postgres, sqlite3, redis")
    import benchmarks

    benchmarks.SUSTAIN["seconds"] = args.seconds
    out = Path(args.out) if args.out else (RESULTS / "smoke" if args.smoke else RESULTS)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        result = run(args.smoke, [x for x in args.only.split(",") if x], out, args.merge, args.baseline,
                     args.baseline_only, args.rounds, args.current)
    except CodeTreeError as exc:
        raise SystemExit(f"bench/run.py: {exc}")
    if result["errors"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
