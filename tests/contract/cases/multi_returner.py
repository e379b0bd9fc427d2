"""Contract case: multi_returner fanning out to saline_cache and sqlite3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.contract.harness import ContractCase, path_under_a_file, sqlite_count


def _paths(tmp_path: Path) -> tuple[str, str]:
    return str(tmp_path / "multi" / "jobs.db"), str(tmp_path / "multi" / "salt.db")


def _config(values: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    cache, salt = _paths(tmp_path)
    return {"multi_returner": ["saline_cache", "sqlite3"], "saline_cache.database": cache, "sqlite3.database": salt}


def _count(values: dict[str, Any], tmp_path: Path, jid: str) -> int:
    # both must hold the returns: the smaller count is what every returner has
    cache, salt = _paths(tmp_path)
    return min(sqlite_count(cache, "SELECT COUNT(*) FROM records WHERE kind = 0 AND cached = 1 AND jid = ?", jid),
               sqlite_count(salt, "SELECT COUNT(*) FROM salt_returns WHERE jid = ?", jid))


def _count_events(values: dict[str, Any], tmp_path: Path, jid: str) -> int:
    cache, salt = _paths(tmp_path)
    return min(sqlite_count(cache, "SELECT COUNT(*) FROM records WHERE kind = 2 AND mid LIKE ?", f"%{jid}%"),
               sqlite_count(salt, "SELECT COUNT(*) FROM salt_events WHERE tag LIKE ?", f"%{jid}%"))


CASES = [
    ContractCase(
        name="multi_returner",
        fixtures=(),
        config=_config,
        unreachable=lambda values, tmp_path: {"sqlite3.database": path_under_a_file(tmp_path, "salt.db")},
        extra={"count": _count, "count_events": _count_events, "duplicates": "ignored",
               # --return_kwargs naming only the reachable returner makes the broken config work
               "kwargs": lambda values, tmp_path: {"multi_returner": ["saline_cache"]}},
    ),
]
