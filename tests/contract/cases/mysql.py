"""Contract case: mysql, Salt's tables on the MariaDB server of the test machine.

The returner connects as a dedicated account with a password (an empty password means "unset"
in Salt's option rules, so root's empty one cannot be configured): ``saline_contract``, allowed
on the throwaway test databases ``saline_t_*`` only. ``case(driver)`` gives the same case with
``mysql.driver`` forced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pymysql

from tests.contract.harness import ContractCase

USER = "saline_contract"
PASSWORD = "contract-Pw-4c1e9d"
UNREACHABLE_PASSWORD = "never-shown-7a2b"


def _root(values: dict[str, Any], database: str | None = None) -> pymysql.connections.Connection:
    db = values["mysql_db"]
    return pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["pass"],
                           database=database, autocommit=True)


def _config(values: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    db = values["mysql_db"]
    conn = _root(values)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (USER, PASSWORD))
            cur.execute("ALTER USER %s@'%%' IDENTIFIED BY %s", (USER, PASSWORD))
            cur.execute(f"GRANT ALL PRIVILEGES ON `saline\\_t\\_%`.* TO '{USER}'@'%'")
    finally:
        conn.close()
    return {"mysql.host": db["host"], "mysql.port": db["port"], "mysql.user": USER, "mysql.pass": PASSWORD,
            "mysql.db": db["db"], "mysql.connect_timeout": 3}


def _scalar(values: dict[str, Any], sql: str, *args: Any) -> int:
    conn = _root(values, values["mysql_db"]["db"])
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def _count(values: dict[str, Any], tmp_path: Path, jid: str) -> int:
    return _scalar(values, "SELECT COUNT(*) FROM salt_returns WHERE jid = %s", jid)


def _count_events(values: dict[str, Any], tmp_path: Path, jid: str) -> int:
    return _scalar(values, "SELECT COUNT(*) FROM salt_events WHERE tag LIKE %s", f"%{jid}%")


def case(driver: str = "auto") -> ContractCase:
    """The mysql case with ``mysql.driver`` set to ``driver``."""

    def config(values: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
        return {**_config(values, tmp_path), "mysql.driver": driver}

    return ContractCase(
        name="mysql",
        fixtures=("mysql_db",),
        config=config,
        # nothing listens on port 1; the password must never appear in the error
        unreachable=lambda values, tmp_path: {"mysql.port": 1, "mysql.pass": UNREACHABLE_PASSWORD},
        extra={"count": _count, "count_events": _count_events, "duplicates": "ignored"},
    )


# The whole table runs on the driver a user gets (auto: mysqlclient, installed by the test
# extra); tests/integration/test_mysql_drivers.py runs the table again on PyMySQL, but for
# test_clean_old_jobs (seconds of waiting; its SQL runs on both drivers in test_returner_mysql.py).
CASES = [case("auto")]
