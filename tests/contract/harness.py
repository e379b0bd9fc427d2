"""The contract every returner must pass: how a returner joins the suite.

Each file ``tests/contract/cases/<name>.py`` exposes ``CASES: list[ContractCase]``. The suite in
``tests/contract/test_contract.py`` runs every test against every case, on the real server.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class ContractCase:
    #: the returner's registry name (``mysql``)
    name: str
    #: names of pytest fixtures the case needs (``("mysql_db",)``); their values reach ``config``
    fixtures: tuple[str, ...]
    #: (fixture values by name, tmp_path) -> the master config keys that point the returner at
    #: its fresh backend (``{"mysql.host": ..., "mysql.db": ...}``)
    config: Callable[[dict[str, Any], Path], dict[str, Any]]
    #: (fixture values, tmp_path) -> config keys that make the backend unreachable (a closed
    #: port, a missing folder): used to check the one-line error and BackendUnavailable
    unreachable: Callable[[dict[str, Any], Path], dict[str, Any]] | None = None
    #: whether the returner stores the full return value (so a read-back must equal what was
    #: written); notification-style returners set False and check their own output instead
    lossless: bool = True
    #: free-form notes the harness may use (e.g. {"no_events": True})
    extra: dict[str, Any] = field(default_factory=dict)


def path_under_a_file(tmp_path: Path, name: str) -> str:
    """A path no process can create: its parent is a regular file."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be\n")
    return str(blocker / name)


def sqlite_count(database: str, sql: str, *args: Any) -> int:
    conn = sqlite3.connect(database)
    try:
        return int(conn.execute(sql, args).fetchone()[0])
    finally:
        conn.close()
