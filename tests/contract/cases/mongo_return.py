"""Contract case: ``mongo_return`` on the session's SecantusDB (see ``mongo``), through
``mongo.host``/``mongo.port``/``mongo.db``. It has no read side: what it stored is read back
from ``saltReturns`` with pymongo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.contract.cases.mongo import count_returns, database
from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    db = fx["mongo_db"]
    return {"mongo.host": db["host"], "mongo.port": db["port"], "mongo.db": db["db"]}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"mongo.port": closed_port(), "mongo.timeout": 1}


def fetch(fx: dict[str, Any], tmp: Path, jid: str) -> dict[str, Any]:
    """``{minion: return}`` of ``jid`` as stored (Salt's ``return`` field)."""
    client, name = database(fx)
    with client:
        return {d["minion"]: d["return"] for d in client[name]["saltReturns"].find({"jid": jid}, {"_id": 0})}


CASES = [ContractCase(name="mongo_return", fixtures=("mongo_db",), config=config, unreachable=unreachable,
                      extra={"count": count_returns, "fetch": fetch, "duplicates": "ignored"})]
