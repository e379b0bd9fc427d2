"""Contract case: ``redis`` on the shared Redis server, database 13 (emptied before and after)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    db = fx["redis_db"]
    return {"redis.host": db["host"], "redis.port": db["port"], "redis.db": db["db"]}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"redis.port": closed_port(), "redis.password": "Redis-Secret-0", "redis.socket_timeout": 3}


def _client(fx: dict[str, Any]) -> redis.Redis:
    db = fx["redis_db"]
    return redis.Redis(host=db["host"], port=db["port"], db=db["db"], decode_responses=True)


def count_returns(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    with _client(fx) as client:
        return int(client.hlen(f"ret:{jid}"))


def count_events(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    with _client(fx) as client:
        return sum(1 for item in client.lrange("salt_events", 0, -1) if jid in json.loads(item)["tag"])


CASES = [ContractCase(name="redis", fixtures=("redis_db",), config=config, unreachable=unreachable,
                      # keys expire after keep_jobs_seconds (Salt's TTL) as well as by clean_old_jobs
                      extra={"count": count_returns, "count_events": count_events, "duplicates": "ignored",
                             "expires": True})]
