"""Contract case: ``couchdb`` on the PouchDB Server (CouchDB HTTP API) that scripts/services.sh
starts (127.0.0.1:5984). Each case writes to its own database (``saline_t_<digest>``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import require_port
from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase

HOST, PORT = "127.0.0.1", int(os.environ.get("SALINE_TEST_COUCHDB_PORT", 5984))
URL = f"http://{HOST}:{PORT}/"


def database(tmp: Path) -> str:
    return "saline_t_" + hashlib.sha1(str(tmp).encode()).hexdigest()[:12]


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    require_port("PouchDB Server (CouchDB API)", HOST, PORT)
    return {"couchdb.url": URL, "couchdb.db": database(tmp)}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"couchdb.url": f"http://salt:Couch-Secret-5@127.0.0.1:{closed_port()}/", "couchdb.timeout": 3}


def count_returns(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    """Return documents of ``jid``: the ``_all_docs`` range of ids ``<jid>-…``."""
    found = httpx.get(f"{URL}{database(tmp)}/_all_docs",
                      params={"startkey": json.dumps(f"{jid}-"), "endkey": json.dumps(f"{jid}-\ufff0")}).json()
    return len(found.get("rows", []))


CASES = [ContractCase(name="couchdb", fixtures=(), config=config, unreachable=unreachable,
                      # JSON documents: NaN and U+0000 are stored as "nan" and U+FFFD (as in pgjsonb)
                      extra={"count": count_returns, "duplicates": "ignored", "jsonb": True})]
