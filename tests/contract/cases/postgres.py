"""Contract case: ``postgres`` on a fresh PostgreSQL database (tables created on first connect)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from tests.contract.harness import ContractCase


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_config(prefix: str, password_key: str = "passwd"):
    def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
        db = fx["pg_db"]
        return {f"{prefix}.host": db["host"], f"{prefix}.port": db["port"], f"{prefix}.user": db["user"],
                f"{prefix}.{password_key}": "not-used-with-trust", f"{prefix}.db": db["db"],
                f"{prefix}.create_schema": True}
    return config


def pg_unreachable(prefix: str, password_key: str = "passwd"):
    def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
        return {**pg_config(prefix, password_key)(fx, tmp), f"{prefix}.port": closed_port(),
                f"{prefix}.connect_timeout": 3}
    return config


CASES = [
    ContractCase(name="postgres", fixtures=("pg_db",), config=pg_config("returner.postgres"),
                 unreachable=pg_unreachable("returner.postgres")),
]
