"""Contract case: saline_cache, saline's embedded SQLite job cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.contract.harness import ContractCase, path_under_a_file, sqlite_count


def _db(tmp_path: Path) -> str:
    return str(tmp_path / "saline_cache" / "jobs.db")


def _count(values: dict[str, Any], tmp_path: Path, jid: str) -> int:
    return sqlite_count(_db(tmp_path), "SELECT COUNT(*) FROM returns WHERE jid = ?", jid)


def _count_events(values: dict[str, Any], tmp_path: Path, jid: str) -> int:
    return sqlite_count(_db(tmp_path), "SELECT COUNT(*) FROM events WHERE tag LIKE ?", f"%{jid}%")


CASES = [
    ContractCase(
        name="saline_cache",
        fixtures=(),
        config=lambda values, tmp_path: {"saline_cache.database": _db(tmp_path)},
        unreachable=lambda values, tmp_path: {"saline_cache.database": path_under_a_file(tmp_path, "jobs.db")},
        extra={"count": _count, "count_events": _count_events, "duplicates": "ignored"},
    ),
]
