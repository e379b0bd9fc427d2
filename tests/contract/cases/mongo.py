"""Contract case: ``mongo`` on SecantusDB (MongoDB wire protocol), the session's server that
tests/conftest.py starts on a free port; each case has a database of its own (``mongo_db``).

The case reaches it through ``mongo.uri`` (``mongo_return``'s case uses host and port), so both
ways of naming the server go through the whole suite.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pymongo

from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    db = fx["mongo_db"]
    return {"mongo.uri": f"mongodb://{db['host']}:{db['port']}/{db['db']}", "mongo.timeout": 10}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"mongo.uri": f"mongodb://salt:Mongo-Secret-3@127.0.0.1:{closed_port()}/salt", "mongo.timeout": 1}


def database(fx: dict[str, Any]) -> Any:
    db = fx["mongo_db"]
    return pymongo.MongoClient(db["host"], db["port"], serverSelectionTimeoutMS=5000), db["db"]


def count_returns(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    """Documents of ``jid`` in ``saltReturns``, read with pymongo."""
    client, name = database(fx)
    with client:
        return client[name]["saltReturns"].count_documents({"jid": jid})


def count_events(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    client, name = database(fx)
    with client:
        return client[name]["events"].count_documents({"tag": {"$regex": re.escape(jid)}})


CASES = [ContractCase(name="mongo", fixtures=("mongo_db",), config=config, unreachable=unreachable,
                      extra={"count": count_returns, "count_events": count_events, "duplicates": "ignored"})]
