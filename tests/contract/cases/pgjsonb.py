"""Contract case: ``pgjsonb`` on a fresh PostgreSQL database (tables created on first connect)."""

from __future__ import annotations

from tests.contract.cases.postgres import count_events, count_returns, pg_config, pg_unreachable
from tests.contract.harness import ContractCase

CASES = [
    ContractCase(name="pgjsonb", fixtures=("pg_db",), config=pg_config("returner.pgjsonb", "pass"),
                 unreachable=pg_unreachable("returner.pgjsonb", "pass"),
                 # jsonb holds neither U+0000 nor NaN: they come back as U+FFFD and "nan"
                 extra={"count": count_returns, "count_events": count_events, "duplicates": "ignored",
                        "jsonb": True}),
]
