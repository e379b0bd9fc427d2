"""Contract case: ``elasticsearch`` on the osmem-server (OpenSearch-compatible REST) that
scripts/services.sh starts (127.0.0.1:9200).

Each case has its own load and event indices; return indices (``salt-<fun>``) are shared and
told apart by jid. ``index_data: False``: the suite writes returns of different shapes for one
function (a map, then a string), which a server's dynamic mapping refuses (see the class doc).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch

from tests.conftest import require_port
from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase

HOST, PORT = "127.0.0.1", int(os.environ.get("SALINE_TEST_OPENSEARCH_PORT", 9200))


def tag(tmp: Path) -> str:
    return hashlib.sha1(str(tmp).encode()).hexdigest()[:12]


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    require_port("osmem-server (OpenSearch API)", HOST, PORT)
    return {"elasticsearch.hosts": [f"{HOST}:{PORT}"], "elasticsearch.index_data": False,
            "elasticsearch.master_job_cache_index": f"saline-t-{tag(tmp)}-jobs",
            "elasticsearch.master_event_index": f"saline-t-{tag(tmp)}-events"}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"elasticsearch.hosts": [f"127.0.0.1:{closed_port()}"], "elasticsearch.username": "salt",
            "elasticsearch.password": "Es-Secret-4", "elasticsearch.timeout": 3}


def _count(index: str, query: dict[str, Any]) -> int:
    client = OpenSearch(hosts=[f"{HOST}:{PORT}"])
    try:
        if not client.indices.exists(index=index) and "*" not in index:
            return 0
        client.indices.refresh(index=index)
        return int(client.count(index=index, body={"query": query})["count"])
    finally:
        client.close()


def count_returns(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    return _count("salt-*", {"bool": {"filter": [{"match": {"jid": jid}}, {"exists": {"field": "minion"}}]}})


def count_events(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    return _count(f"saline-t-{tag(tmp)}-events", {"match": {"tag": jid}})


CASES = [ContractCase(name="elasticsearch", fixtures=(), config=config, unreachable=unreachable,
                      # JSON documents: NaN and U+0000 are stored as "nan" and U+FFFD (as in pgjsonb)
                      extra={"count": count_returns, "count_events": count_events, "duplicates": "ignored",
                             "jsonb": True})]
