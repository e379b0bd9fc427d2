"""Each benchmark of bench/ in smoke mode: small N, a few seconds. Benchmarks are not tests: this
only checks that each one runs against the real processes and servers and produces its figures
(no timing is asserted)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import benchmarks  # noqa: E402
from run import markdown  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def _numbers(rows: list[dict]) -> None:
    assert rows
    for row in rows:
        values = [row["value"]] if "value" in row else [v for k, v in row.items() if k.endswith(("_s", "_mb", "rate"))]
        assert values, row
        for v in values:
            assert isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, row


@pytest.mark.parametrize("name", sorted(benchmarks.ALL))
def test_benchmark_smoke(name: str, tmp_path: Path) -> None:
    rows = benchmarks.ALL[name](True, tmp_path)
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
