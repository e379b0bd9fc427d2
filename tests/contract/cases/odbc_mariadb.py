"""Contract case: ``odbc`` through the MariaDB ODBC driver (DSN-less) on a fresh MariaDB database.

The returner logs in as a dedicated account with a password, ``saline_odbc``, allowed on the
throwaway test databases ``saline_t_*`` only.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import pymysql

from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase

USER = "saline_odbc"
PASSWORD = "Odbc-Contract-Pw-51"


def driver(name: str) -> str:
    """The driver library of the Debian package (``odbc-mariadb``, ``libsqliteodbc``)."""
    found = sorted(glob.glob(f"/usr/lib/*/odbc/{name}") + glob.glob(f"/usr/lib/odbc/{name}"))
    if not found:
        raise RuntimeError(f"ODBC driver {name} is not installed; run scripts/services.sh")
    return found[0]


def _root(fx: dict[str, Any], database: str | None = None) -> pymysql.connections.Connection:
    db = fx["mysql_db"]
    return pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["pass"],
                           database=database, autocommit=True)


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    db = fx["mysql_db"]
    conn = _root(fx)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (USER, PASSWORD))
            cur.execute("ALTER USER %s@'%%' IDENTIFIED BY %s", (USER, PASSWORD))
            cur.execute(f"GRANT ALL PRIVILEGES ON `saline\\_t\\_%`.* TO '{USER}'@'%'")
    finally:
        conn.close()
    dsn = f"DRIVER={driver('libmaodbc.so')};SERVER={db['host']};PORT={db['port']};DATABASE={db['db']}"
    return {"returner.odbc.dsn": dsn, "returner.odbc.user": USER, "returner.odbc.passwd": PASSWORD,
            "returner.odbc.create_schema": True, "returner.odbc.connect_timeout": 5}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    dsn = f"DRIVER={driver('libmaodbc.so')};SERVER=127.0.0.1;PORT={closed_port()};DATABASE={fx['mysql_db']['db']}"
    return {"returner.odbc.dsn": dsn, "returner.odbc.passwd": "Never-Shown-Odbc-9", "returner.odbc.connect_timeout": 3}


def _scalar(fx: dict[str, Any], sql: str, *args: Any) -> int:
    conn = _root(fx, fx["mysql_db"]["db"])
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def count_returns(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    return _scalar(fx, "SELECT COUNT(*) FROM salt_returns WHERE jid = %s", jid)


def count_events(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    return _scalar(fx, "SELECT COUNT(*) FROM salt_events WHERE LOCATE(%s, tag) > 0", jid)


CASES = [ContractCase(name="odbc", fixtures=("mysql_db",), config=config, unreachable=unreachable,
                      extra={"count": count_returns, "count_events": count_events, "duplicates": "ignored"})]
