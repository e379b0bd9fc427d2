"""Contract case: ``odbc`` through the SQLite ODBC driver (DSN-less), a database file in tmp_path."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.contract.cases.odbc_mariadb import driver
from tests.contract.harness import ContractCase


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"returner.odbc.dsn": f"DRIVER={driver('libsqlite3odbc.so')};Database={tmp / 'salt-odbc.db'}",
            "returner.odbc.create_schema": True}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    # a folder that does not exist: the driver cannot open (or create) the file
    return {"returner.odbc.dsn": f"DRIVER={driver('libsqlite3odbc.so')};Database={tmp / 'no' / 'such' / 'salt.db'}",
            "returner.odbc.passwd": "Never-Shown-Sqlite-3"}


def _scalar(tmp: Path, sql: str, *args: Any) -> int:
    conn = sqlite3.connect(tmp / "salt-odbc.db", timeout=10)
    try:
        return int(conn.execute(sql, args).fetchone()[0])
    finally:
        conn.close()


def count_returns(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    return _scalar(tmp, "SELECT COUNT(*) FROM salt_returns WHERE jid = ?", jid)


def count_events(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    return _scalar(tmp, "SELECT COUNT(*) FROM salt_events WHERE instr(tag, ?) > 0", jid)


CASES = [ContractCase(name="odbc", fixtures=(), config=config, unreachable=unreachable,
                      extra={"count": count_returns, "count_events": count_events, "duplicates": "ignored"})]
