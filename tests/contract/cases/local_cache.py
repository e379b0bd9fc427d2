"""Contract case: local_cache, Salt's on-disk job cache (msgpack files)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tests.contract.harness import ContractCase, path_under_a_file


def _cachedir(tmp_path: Path) -> Path:
    return tmp_path / "local_cache"


def _count(values: dict[str, Any], tmp_path: Path, jid: str) -> int:
    digest = hashlib.sha256(jid.encode()).hexdigest()
    job = _cachedir(tmp_path) / "jobs" / digest[:2] / digest[2:]
    return len(list(job.glob("*/return.p"))) if job.is_dir() else 0


CASES = [
    ContractCase(
        name="local_cache",
        fixtures=(),
        config=lambda values, tmp_path: {"local_cache.cachedir": str(_cachedir(tmp_path))},
        unreachable=lambda values, tmp_path: {"local_cache.cachedir": path_under_a_file(tmp_path, "cache")},
        # msgpack with use_bin_type: bytes are stored as bytes, not decoded to text
        extra={"count": _count, "duplicates": "ignored", "bytes": "kept"},
    ),
]
