"""Contract case: ``postgres`` on a fresh PostgreSQL database (tables created on first connect)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Callable

import psycopg

from tests.contract.harness import ContractCase


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_config(prefix: str, password_key: str = "passwd") -> Callable[[dict[str, Any], Path], dict[str, Any]]:
    def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
        db = fx["pg_db"]
        return {f"{prefix}.host": db["host"], f"{prefix}.port": db["port"], f"{prefix}.user": db["user"],
                f"{prefix}.{password_key}": "Not-Asked-By-Trust-1", f"{prefix}.db": db["db"],
                f"{prefix}.create_schema": True}
    return config


def pg_unreachable(prefix: str, password_key: str = "passwd") -> Callable[[dict[str, Any], Path], dict[str, Any]]:
    def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
        return {f"{prefix}.port": closed_port(), f"{prefix}.{password_key}": "Never-Shown-Pg-2",
                f"{prefix}.connect_timeout": 3}
    return config


def pg_scalar(fx: dict[str, Any], sql: str, *args: Any) -> int:
    db = fx["pg_db"]
    with psycopg.connect(host=db["host"], port=db["port"], user=db["user"], dbname=db["db"], autocommit=True) as conn:
        row = conn.execute(sql, args).fetchone()
    return int(row[0]) if row else 0


def count_returns(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    return pg_scalar(fx, "SELECT count(*) FROM salt_returns WHERE jid = %s", jid)


def count_events(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    return pg_scalar(fx, "SELECT count(*) FROM salt_events WHERE strpos(tag, %s) > 0", jid)


CASES = [
    ContractCase(name="postgres", fixtures=("pg_db",), config=pg_config("returner.postgres"),
                 unreachable=pg_unreachable("returner.postgres"),
                 extra={"count": count_returns, "count_events": count_events, "duplicates": "ignored"}),
]
