"""Contract case: saline_cache, saline's embedded SQLite job cache, in a file of its own (as a
returner delivered to; the master's default, its outbox read in place, is what every e2e test uses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.contract.harness import ContractCase, path_under_a_file, sqlite_count


def _db(tmp_path: Path) -> str:
    return str(tmp_path / "saline_cache" / "jobs.db")


def _count(values: dict[str, Any], tmp_path: Path, jid: str) -> int:
    return sqlite_count(_db(tmp_path), "SELECT COUNT(*) FROM records WHERE kind = 0 AND cached = 1 AND jid = ?",
                        jid)


def _count_events(values: dict[str, Any], tmp_path: Path, jid: str) -> int:
    return sqlite_count(_db(tmp_path), "SELECT COUNT(*) FROM records WHERE kind = 2 AND mid LIKE ?", f"%{jid}%")


CASES = [
    ContractCase(
        name="saline_cache",
        fixtures=(),
        config=lambda values, tmp_path: {"saline_cache.database": _db(tmp_path)},
        unreachable=lambda values, tmp_path: {"saline_cache.database": path_under_a_file(tmp_path, "jobs.db")},
        extra={"count": _count, "count_events": _count_events, "duplicates": "ignored"},
    ),
]
