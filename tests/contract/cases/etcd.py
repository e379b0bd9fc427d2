"""Contract case: ``etcd`` on the etcd (v2 API) that scripts/services.sh starts (127.0.0.1:2379).

Each case writes under its own ``etcd.returner_root`` (``/saline_t/<digest of its tmp folder>``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import require_port
from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase

HOST, PORT = "127.0.0.1", int(os.environ.get("SALINE_TEST_ETCD_PORT", 2379))


def root(tmp: Path) -> str:
    return "/saline_t/" + hashlib.sha1(str(tmp).encode()).hexdigest()[:12]


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    require_port("etcd", HOST, PORT)
    return {"etcd.host": HOST, "etcd.port": PORT, "etcd.returner_root": root(tmp)}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"etcd.port": closed_port(), "etcd.username": "root", "etcd.password": "Etcd-Secret-7", "etcd.timeout": 3}


def count_returns(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    """Minion folders under ``<root>/jobs/<jid>``, read with plain HTTP."""
    answer = httpx.get(f"http://{HOST}:{PORT}/v2/keys{root(tmp)}/jobs/{jid}").json()
    return sum(1 for node in (answer.get("node") or {}).get("nodes") or [] if node.get("dir"))


CASES = [ContractCase(name="etcd", fixtures=(), config=config, unreachable=unreachable,
                      extra={"count": count_returns, "duplicates": "ignored"})]
