"""Contract case: ``postgres_local_cache`` on a fresh PostgreSQL database."""

from __future__ import annotations

from tests.contract.cases.postgres import count_events, count_returns, pg_config, pg_unreachable
from tests.contract.harness import ContractCase

CASES = [
    ContractCase(name="postgres_local_cache", fixtures=("pg_db",), config=pg_config("master_job_cache.postgres"),
                 unreachable=pg_unreachable("master_job_cache.postgres"),
                 # Salt's layout keeps of a load only jid, tgt_type, cmd, tgt, kwargs, ret, user,
                 # arg and fun, and of a return only return, retcode and success.
                 extra={"count": count_returns, "count_events": count_events, "duplicates": "ignored",
                        "load_keys": ("jid", "tgt_type", "cmd", "tgt", "kwargs", "ret", "user", "arg", "fun"),
                        "ret_keys": ("return", "retcode", "success")}),
]
