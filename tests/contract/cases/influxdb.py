"""Contract case: ``influxdb`` on the InfluxDB 1.6 that scripts/services.sh starts (127.0.0.1:8086).

Each case writes to its own database (``saline_t_<digest of its tmp folder>``), created by the
returner.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from influxdb import InfluxDBClient

from saline.returners.influxdb import quote_str
from tests.conftest import require_port
from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase

HOST, PORT = "127.0.0.1", int(os.environ.get("SALINE_TEST_INFLUXDB_PORT", 8086))


def database(tmp: Path) -> str:
    return "saline_t_" + hashlib.sha1(str(tmp).encode()).hexdigest()[:12]


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    require_port("InfluxDB", HOST, PORT)
    return {"influxdb.host": HOST, "influxdb.port": PORT, "influxdb.db": database(tmp)}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"influxdb.port": closed_port(), "influxdb.user": "salt", "influxdb.password": "Influx-Secret-3",
            "influxdb.timeout": 3}


def count_returns(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    client = InfluxDBClient(HOST, PORT, database=database(tmp))
    try:
        rows = list(client.query(f"SELECT count(full_ret) FROM returns WHERE jid = {quote_str(jid)}").get_points())
        return int(rows[0]["count"]) if rows else 0
    finally:
        client.close()


CASES = [ContractCase(name="influxdb", fixtures=(), config=config, unreachable=unreachable,
                      extra={"count": count_returns, "duplicates": "ignored"})]
