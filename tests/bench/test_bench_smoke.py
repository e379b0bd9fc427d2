"""Each benchmark of bench/ in smoke mode: small N, a few seconds. Benchmarks are not tests: this
only checks that each one runs against the real processes and servers and produces its figures
(no timing is asserted)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from common import fmt  # noqa: E402
from run import markdown, registry  # noqa: E402

#: bench/benchmarks.py's and bench/scale_out.py's (masters on a three-node NATS cluster, about 30 s)
ALL = registry()

pytestmark = pytest.mark.timeout(180)


def _numbers(rows: list[dict]) -> None:
    assert rows
    for row in rows:
        values = [row["value"]] if "value" in row else [v for k, v in row.items() if k.endswith(("_s", "_mb", "rate"))]
        assert values, row
        for v in values:
            assert isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, row


@pytest.mark.parametrize("name", sorted(ALL))
def test_benchmark_smoke(name: str, tmp_path: Path) -> None:
    rows = ALL[name](True, tmp_path)
    _numbers(rows)
    figures = [r for r in rows if not r.get("scale")]
    for r in figures:
        assert r["value"] > 0, r
        if r.get("floor") is not None:
            assert r["floor"] > 0, r
    result = {"mode": "smoke", "started": "now", "seconds": 1, "sustain_s": 3,
              "machine": {k: "?" for k in ("cores", "cpu", "os", "git", "python", "pyzmq", "libzmq", "msgpack", "sqlite",
                                           "mariadb", "postgresql", "redis", "PyMySQL", "psycopg", "redis-py")}
              | {"memory_mb": 1},
              "rows": rows, "errors": {}}
    table = markdown(result)
    for r in figures:
        assert r["name"] in table
    cpu = [r for r in rows if "cpu_ms_per_1000" in r]  # scale_out: CPU per return of each component
    for r in cpu:
        assert all(math.isfinite(v) and v >= 0 for v in r["cpu_ms_per_1000"].values()), r
        assert r["cpu_ms_per_1000"]["master"] > 0 and f"| {r['setup']} |" in table, r


# -- the same run with a commit's code beside (bench/run.py --baseline) --------------------------------
ROOT = BENCH.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def compare_run(out: Path, *args: str) -> dict:
    """``bench/run.py --smoke --only returns_jobcache`` with ``args`` (``--baseline ...``), its latest.json."""
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--smoke", "--only", "returns_jobcache",
                           "--out", str(out), *args], capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "latest.json").read_text())


def check_compare(result: dict, out: Path, baseline: str, current_root: Path | None) -> None:
    """Both columns filled, from processes that ran the code they should have."""
    code = result["compare"]
    assert code["baseline"]["commit"] == baseline
    base_pkg = Path(code["baseline"]["saline"])
    assert not base_pkg.is_relative_to(ROOT), base_pkg  # a worktree of its own, not this checkout
    assert not base_pkg.exists()  # and removed after the run
    assert str(base_pkg.parent) not in _git("worktree", "list")
    for side in ("baseline", "current"):
        # each process recorded, at start-up, the saline it imported (it refuses to run otherwise)
        assert code[side]["processes"].get("saline.cli.master", 0) >= 1, code[side]
        assert code[side]["processes"].get("saline.master.returner_process", 0) >= 1, code[side]
    if current_root is not None:
        assert Path(code["current"]["saline"]) == current_root / "saline"
    rows = {r["name"]: r for r in result["rows"]}
    floor = next(r for r in rows.values() if r.get("transport"))
    assert floor["value"] > 0 and "baseline" not in floor  # no saline in it: one figure for both sides
    row = next(r for name, r in rows.items() if name.startswith("returns delivered per second to mysql"))
    assert row["value"] > 0 and row["baseline"]["value"] > 0, row
    assert row["ratio"] == pytest.approx(row["value"] / row["baseline"]["value"])
    assert row["of_transport"] == pytest.approx(row["value"] / floor["value"])
    assert row["baseline"]["of_transport"] == pytest.approx(row["baseline"]["value"] / floor["value"])
    table = (out / "latest.md").read_text()
    assert f"before (commit {baseline[:7]}, same run)" in table
    line = next(x for x in table.splitlines() if x.startswith(f"| {row['name']} |"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[2] == fmt(row["baseline"]["value"], "/s") and cells[3] == fmt(row["value"], "/s"), cells


def test_compare_with_a_commit(tmp_path: Path) -> None:
    """``--baseline HEAD``: the committed code in a temporary worktree beside the working tree
    (HEAD rather than an older commit: a shallow clone has no other, and an older commit may not
    run at all)."""
    head = _git("rev-parse", "HEAD")
    result = compare_run(tmp_path / "out", "--baseline", "HEAD")
    check_compare(result, tmp_path / "out", head, ROOT)


def test_code_guard_refuses_other_code(tmp_path: Path) -> None:
    """A process under a CodeTree whose saline would come from elsewhere refuses to start, in
    one line; one that gets the tree's saline records itself."""
    from codetree import CodeTree

    empty = CodeTree("baseline", "0" * 40, tmp_path / "empty", tmp_path / "empty.log")
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-c", "print('ran')"], env={**os.environ, **empty.env()},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 97 and "ran" not in proc.stdout
    assert f"not from {tmp_path / 'empty' / 'saline'}" in proc.stderr and len(proc.stderr.splitlines()) == 1
    good = CodeTree("baseline", "0" * 40, tmp_path / "tree", tmp_path / "tree.log")
    (tmp_path / "tree" / "saline").mkdir(parents=True)
    (tmp_path / "tree" / "saline" / "__init__.py").write_text("")
    proc = subprocess.run([sys.executable, "-c", "import saline; print(saline.__file__)"],
                          env={**os.environ, **good.env()}, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.strip() == str(tmp_path / "tree" / "saline" / "__init__.py")
    assert good.verify(need=("-c",)) == {"-c": 1}


def test_rounds_combined() -> None:
    """Medians per side, floors pooled over both sides, the transport floor one figure."""
    from compare import combine

    def rnd(k: int, value: float, floor: float, transport: float) -> list[dict]:
        return [{"name": "floor", "value": transport, "unit": "/s", "runs": [transport], "transport": True,
                 "floor": None, "met": None, "note": "", "round": k},
                {"name": "returns x", "value": value, "unit": "/s", "runs": [value], "floor": floor, "met": False,
                 "note": f"v {value}; CPU (% of one core, 1 % in all): master 1 %",
                 "cpu": [{"master": value}], "round": k}]

    rows = combine([rnd(1, 30, 100, 1000), rnd(2, 10, 300, 900), rnd(3, 20, 200, 1100)],
                   [rnd(1, 5, 400, 800), rnd(3, 10, 600, 1000), rnd(2, 15, 500, 1200)])
    floor, row = rows
    assert floor["value"] == 1000 and sorted(floor["runs"]) == [800, 900, 1000, 1000, 1100, 1200]
    assert row["value"] == 20 and row["runs"] == [30, 10, 20] and row["baseline"]["value"] == 10
    assert row["ratio"] == 2.0 and row["floor"] == 350 and len(row["floor_runs"]) == 6
    assert row["round_ratios"] == [6.0, 10 / 15, 2.0]  # round by round, whatever order they came in
    assert row["of_transport"] == 0.02 and row["baseline"]["of_transport"] == 0.01
    assert row["note"].startswith("v 20; CPU") and "master 20 %" in row["note"]  # pooled: 30, 10, 20
