"""Run the benchmark suite and write the results table.

    python bench/run.py [--smoke] [--only cli,fanout,returns,events,latency] [--out bench/results]
    python bench/run.py --docs          # docs/performance.md from bench/results/latest.json

Writes ``<out>/latest.json`` and ``<out>/latest.md`` (``make bench``: full mode; ``make
bench-smoke``: small N, to ``bench/results/smoke``). ``bench/results/baseline.json``, when present,
gives the "before" column (the figures measured before the optimisations).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import ROOT, dump, fmt, machine_info  # noqa: E402

RESULTS = BENCH / "results"


def run(smoke: bool, only: list[str], out: Path, merge: bool = False) -> dict[str, Any]:
    from benchmarks import ALL

    info = machine_info()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    rows: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    started = time.time()
    for name in only or list(ALL):
        print(f"== {name}{' (smoke)' if smoke else ''}", flush=True)
        begin = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"saline-bench-{name}-") as tmp:
            try:
                got = ALL[name](smoke, Path(tmp))
                for r in got:
                    r["bench"] = name
                rows += got
            except Exception as exc:  # one broken benchmark must not hide the others' figures
                errors[name] = f"{type(exc).__name__}: {exc}"
                print(f"  FAILED: {errors[name]}", flush=True)
                traceback.print_exc()
        print(f"   ({time.monotonic() - begin:.0f} s)", flush=True)
    from benchmarks import SUSTAIN

    result = {"mode": "smoke" if smoke else "full", "sustain_s": SUSTAIN["seconds"], "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
              "seconds": round(time.time() - started, 1), "machine": info, "rows": rows, "errors": errors}
    out.mkdir(parents=True, exist_ok=True)
    if merge and (out / "latest.json").exists():
        # keep the other benchmarks' rows of the last run; this run's benchmarks replace theirs, in place
        old = json.loads((out / "latest.json").read_text())
        fresh = {r["bench"] for r in rows} | set(errors)
        merged: list[dict[str, Any]] = []
        for r in old["rows"]:
            if r.get("bench") in fresh:
                if r["bench"] not in {m.get("bench") for m in merged}:
                    merged += [x for x in rows if x["bench"] == r["bench"]]
            else:
                merged.append(r)
        merged += [x for x in rows if x["bench"] not in {m.get("bench") for m in merged}]
        order = {name: k for k, name in enumerate(ALL)}
        merged.sort(key=lambda r: order.get(r.get("bench"), len(order)))
        result = {**old, "rows": merged, "errors": {**old.get("errors", {}), **errors},
                  "merged": sorted(set(old.get("merged", [])) | fresh), "machine": info}
    dump(out / "latest.json", result)
    (out / "latest.md").write_text(markdown(result, _baseline()))
    print(f"wrote {out / 'latest.md'} and {out / 'latest.json'}", flush=True)
    return result


def _baseline() -> dict[str, Any] | None:
    path = RESULTS / "baseline.json"
    return json.loads(path.read_text()) if path.exists() else None


def markdown(result: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    info = result["machine"]
    before = {r["name"]: r for r in (baseline or {}).get("rows", []) if not r.get("scale")}
    lines = [f"Mode: **{result['mode']}**, run {result['started']} ({result['seconds']:.0f} s), commit {info.get('git')}.",
             *([f"Rerun later and merged in (at the commit above): {', '.join(result['merged'])}.", ""]
               if result.get("merged") else []),
             f"Machine: {info['cores']} cores ({info['cpu']}), {info['memory_mb']:,} MB memory, {info['os']}.",
             "",
             "Versions: " + ", ".join(f"{k} {info[k]}" for k in
                                     ("python", "pyzmq", "libzmq", "msgpack", "sqlite", "mariadb", "postgresql",
                                      "redis", "PyMySQL", "psycopg", "redis-py")) + ".",
             "",
             "| figure | goal | " + ("before | " if baseline else "") + "now (median) | met | floor | runs | notes |",
             "|---|---|" + ("---|" if baseline else "") + "---|---|---|---|---|"]
    for r in result["rows"]:
        if r.get("scale"):
            continue
        met = "yes" if r["met"] else "**no**" if r["met"] is not None else ""
        floor = f"{fmt(r['floor'], r['unit'])} ({r['floor_what']})" if r.get("floor") is not None else ""
        runs = ", ".join(fmt(v, r["unit"]) for v in r.get("runs") or []) if len(r.get("runs") or []) > 1 else ""
        prev = before.get(r["name"])
        cells = [r["name"], r["goal"]]
        if baseline:
            cells.append(fmt(prev["value"], prev["unit"]) if prev else "")
        cells += [fmt(r["value"], r["unit"]), met, floor, runs, r.get("note", "")]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    fan = [r for r in result["rows"] if r.get("scale") and "fanout_s" in r]
    if fan:
        lines += ["", "How the costs grow with N minions (fan-out of test.ping, medians):", "",
                  "| N | fan-out | bare pyzmq floor | per minion | master RSS | swarm MB/minion | lost | swarm ready |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in fan:
            lines.append(f"| {r['n']:,} | {r['fanout_s']:.3f} s | {r['floor_s']:.3f} s | "
                         f"{r['fanout_s'] / r['n'] * 1000:.2f} ms | {r['master_rss_mb']:.0f} MB | "
                         f"{r['swarm_mb_per_minion']:.2f} | {r['lost']} | {r['ready_s']:.1f} s |")
    burst = [r for r in result["rows"] if r.get("scale") and "burst_s" in r]
    if burst:
        lines += ["", "How the costs grow with N returns (a burst of N returns of one job, from the first send to "
                      "all N rows visible in MySQL):", "", "| N | time | returns/s |", "|---|---|---|"]
        for r in burst:
            lines.append(f"| {r['n']:,} | {r['burst_s']:.3f} s | {r['burst_rate']:,.0f}/s |")
    if result.get("errors"):
        lines += ["", "Benchmarks that failed:", ""] + [f"- {k}: {v}" for k, v in result["errors"].items()]
    return "\n".join(lines) + "\n"


def docs() -> None:
    result = json.loads((RESULTS / "latest.json").read_text())
    notes = (BENCH / "performance_notes.md").read_text()
    head = ("# Performance\n\n"
            "Generated by `make bench` (`bench/run.py`; `python bench/run.py --docs` rebuilds this page from "
            "`bench/results/latest.json` and the hand-written `bench/performance_notes.md`). "
            "Each figure is the median of its runs; the floor beside it is what the same work costs "
            "without saline (the interpreter, bare pyzmq, the database driver's own bulk path).\n\n"
            "## The figures\n\n")
    (ROOT / "docs" / "performance.md").write_text(head + markdown(result, _baseline()) + "\n" + notes)
    print(f"wrote {ROOT / 'docs' / 'performance.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="small N, a few seconds per benchmark")
    parser.add_argument("--only", default="", help="comma-separated: cli, fanout, returns, returns_jobcache, returns_mongo, events, latency")
    parser.add_argument("--out", default=None)
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of sustained load per run (full mode)")
    parser.add_argument("--docs", action="store_true", help="write docs/performance.md from the latest results")
    parser.add_argument("--merge", action="store_true", help="replace only these benchmarks' rows in latest.json")
    args = parser.parse_args()
    if args.docs:
        docs()
        return
    import benchmarks

    benchmarks.SUSTAIN["seconds"] = args.seconds
    out = Path(args.out) if args.out else (RESULTS / "smoke" if args.smoke else RESULTS)
    result = run(args.smoke, [x for x in args.only.split(",") if x], out, args.merge)
    if result["errors"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
