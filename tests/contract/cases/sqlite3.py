"""Contract case: sqlite3, Salt's tables in a local SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.contract.harness import ContractCase, path_under_a_file, sqlite_count


def _db(tmp_path: Path) -> str:
    return str(tmp_path / "sqlite3" / "salt.db")


def _count(values: dict[str, Any], tmp_path: Path, jid: str) -> int:
    return sqlite_count(_db(tmp_path), "SELECT COUNT(*) FROM salt_returns WHERE jid = ?", jid)


def _count_events(values: dict[str, Any], tmp_path: Path, jid: str) -> int:
    return sqlite_count(_db(tmp_path), "SELECT COUNT(*) FROM salt_events WHERE tag LIKE ?", f"%{jid}%")


CASES = [
    ContractCase(
        name="sqlite3",
        fixtures=(),
        config=lambda values, tmp_path: {"sqlite3.database": _db(tmp_path)},
        unreachable=lambda values, tmp_path: {"sqlite3.database": path_under_a_file(tmp_path, "salt.db")},
        extra={"count": _count, "count_events": _count_events, "duplicates": "ignored"},
    ),
]
