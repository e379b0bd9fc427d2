"""Contract case: local, which prints each return and event as a JSON line on standard output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.contract.harness import ContractCase


def json_lines(text: str) -> list[dict[str, Any]]:
    """The objects of a one-JSON-object-per-line text (split on newlines only, not on U+2028)."""
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def _records(values: dict[str, Any]) -> list[dict[str, Any]]:
    # pytest's capsys is the "backend": keep what was read, reading consumes it
    seen = values.setdefault("_stdout", [])
    seen.append(values["capsys"].readouterr().out)
    return json_lines("".join(seen))


def _count(values: dict[str, Any], tmp_path: Path, jid: str) -> int:
    return sum(1 for r in _records(values) if "tag" not in r and r.get("jid") == jid)


def _count_events(values: dict[str, Any], tmp_path: Path, jid: str) -> int:
    return sum(1 for r in _records(values) if set(r) == {"tag", "data"} and jid in r["tag"])


def _fetch(values: dict[str, Any], tmp_path: Path, jid: str) -> dict[str, Any]:
    return {r["id"]: r["return"] for r in _records(values) if "tag" not in r and r.get("jid") == jid}


CASES = [
    ContractCase(
        name="local",
        fixtures=("capsys",),
        config=lambda values, tmp_path: {},
        unreachable=None,  # standard output is always there
        extra={"count": _count, "count_events": _count_events, "fetch": _fetch, "duplicates": "kept"},
    ),
]
