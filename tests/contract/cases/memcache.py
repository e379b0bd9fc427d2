"""Contract case: ``memcache`` on the memcached that scripts/services.sh starts (127.0.0.1:11211).

memcached has one key space: each case starts from an empty server (``flush_all``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pymemcache.client.base import Client

from saline.returners.memcache import make_key, parse_list
from tests.conftest import require_port
from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase

HOST, PORT = "127.0.0.1", int(os.environ.get("SALINE_TEST_MEMCACHED_PORT", 11211))


def client() -> Client:
    return Client((HOST, PORT), allow_unicode_keys=True, encoding="utf-8", default_noreply=False, timeout=5)


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    require_port("memcached", HOST, PORT)
    c = client()
    try:
        c.flush_all(noreply=False)
    finally:
        c.close()
    return {"memcache.host": HOST, "memcache.port": PORT}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"memcache.port": closed_port(), "memcache.socket_timeout": 3}


def count_returns(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    c = client()
    try:
        minions = parse_list((c.get("minions") or b"").decode())
        keys = [make_key(jid, m) for m in minions]
        return sum(len(c.get_many(keys[i:i + 200])) for i in range(0, len(keys), 200))
    finally:
        c.close()


CASES = [ContractCase(name="memcache", fixtures=(), config=config, unreachable=unreachable,
                      # <jid>:<minion> and <jid> expire after keep_jobs_seconds as well
                      extra={"count": count_returns, "duplicates": "ignored", "expires": True})]
