"""Contract case: ``nats`` as a cluster's job cache, on the session's real three-node NATS JetStream
cluster (TLS, a password user): the records stream ``SALINE_<cluster id>`` of a cluster id of this
session's own, written and read through the returner, counted on a connection of the test's own.
(Publishing JSON for other consumers, the returner's other side, is tested in
tests/integration/test_returner_nats.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
import nats.errors

from saline import recordlog
from saline.cluster.config import escape_token
from tests.conftest import nats_cluster_config, unique_name
from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase

CLUSTER_ID = unique_name("contract")


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    c = nats_cluster_config(fx["nats_cluster"], CLUSTER_ID)
    return {"cluster_id": c.cluster_id, "nats_servers": list(c.servers), "nats_user": c.user,
            "nats_password": c.password, "nats_tls_ca": c.tls_ca, "nats_tls_cert": c.tls_cert,
            "nats_tls_key": c.tls_key, "master_job_cache": "nats",
            # the same connection, spelt as the returner's own options (so --return_config and
            # --return_kwargs have keys to override)
            "nats.servers": list(c.servers), "nats.user": c.user, "nats.password": c.password}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"nats.servers": [f"tls://127.0.0.1:{closed_port()}"], "nats.password": "Nats-Secret-0",
            "nats.timeout": 2}


async def _connect(fx: dict[str, Any]) -> Any:
    cluster = fx["nats_cluster"]
    return await nats.connect(**cluster.connect_options("admin", inbox_prefix=f"_INBOX_{CLUSTER_ID}"))


def count_returns(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    """Messages stored under the job's return subjects (a duplicate would show here)."""
    async def body() -> int:
        nc = await _connect(fx)
        try:
            info = await nc.jetstream().stream_info(f"SALINE_{CLUSTER_ID}",
                                                    subjects_filter=f"saline.{CLUSTER_ID}.rec.ret.{escape_token(jid)}.*")
            return sum((info.state.subjects or {}).values())
        finally:
            await nc.close()
    return asyncio.run(body())


def count_events(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    async def body() -> int:
        nc = await _connect(fx)
        try:
            sub = await nc.jetstream().subscribe(f"saline.{CLUSTER_ID}.rec.event", stream=f"SALINE_{CLUSTER_ID}",
                                                 ordered_consumer=True)
            found = 0
            while True:
                try:
                    msg = await sub.next_msg(timeout=2)
                except nats.errors.TimeoutError:
                    return found
                found += jid in str(recordlog.unpack(msg.data).get("tag"))
                if msg.metadata.num_pending == 0:
                    return found
        finally:
            await nc.close()
    return asyncio.run(body())


CASES = [ContractCase(name="nats", fixtures=("nats_cluster",), config=config, unreachable=unreachable,
                      extra={"count": count_returns, "count_events": count_events, "duplicates": "ignored",
                             "expires": True})]  # the stream's age limit is keep_jobs
