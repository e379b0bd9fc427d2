"""Contract case: rawfile_json, one JSON object per line appended to a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.contract.harness import ContractCase, path_under_a_file


def json_lines(text: str) -> list[dict[str, Any]]:
    """The objects of a one-JSON-object-per-line text (split on newlines only, not on U+2028)."""
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def _file(tmp_path: Path) -> Path:
    return tmp_path / "rawfile" / "events.json"


def _records(tmp_path: Path) -> list[dict[str, Any]]:
    path = _file(tmp_path)
    return json_lines(path.read_text(encoding="utf-8")) if path.exists() else []


def _count(values: dict[str, Any], tmp_path: Path, jid: str) -> int:
    return sum(1 for r in _records(tmp_path) if "tag" not in r and r.get("jid") == jid)


def _count_events(values: dict[str, Any], tmp_path: Path, jid: str) -> int:
    return sum(1 for r in _records(tmp_path) if set(r) == {"tag", "data"} and jid in r["tag"])


def _fetch(values: dict[str, Any], tmp_path: Path, jid: str) -> dict[str, Any]:
    return {r["id"]: r["return"] for r in _records(tmp_path) if "tag" not in r and r.get("jid") == jid}


CASES = [
    ContractCase(
        name="rawfile_json",
        fixtures=(),
        config=lambda values, tmp_path: {"rawfile_json.filename": str(_file(tmp_path))},
        unreachable=lambda values, tmp_path: {"rawfile_json.filename": path_under_a_file(tmp_path, "events.json")},
        # an append-only log: a retried batch is appended again (documented)
        extra={"count": _count, "count_events": _count_events, "fetch": _fetch, "duplicates": "kept"},
    ),
]
