"""The ``pgjsonb`` returner: Salt's PostgreSQL tables with ``jsonb`` columns and GIN indexes."""

from __future__ import annotations

from typing import ClassVar

from saline.returners.base import Option
from saline.returners.postgres import SSL_OPTIONS, PostgresReturner

# Salt's DDL (salt/returners/pgjsonb.py), made re-runnable; index names as Salt's.
DDL = (
    "CREATE TABLE IF NOT EXISTS jids (jid varchar(255) NOT NULL PRIMARY KEY, load jsonb NOT NULL)",
    "CREATE INDEX IF NOT EXISTS idx_jids_jsonb ON jids USING gin (load) WITH (fastupdate=on)",
    """CREATE TABLE IF NOT EXISTS salt_returns (
        fun varchar(50) NOT NULL, jid varchar(255) NOT NULL, return jsonb NOT NULL,
        id varchar(255) NOT NULL, success varchar(10) NOT NULL, full_ret jsonb NOT NULL,
        alter_time TIMESTAMP WITH TIME ZONE DEFAULT NOW())""",
    "CREATE INDEX IF NOT EXISTS idx_salt_returns_id ON salt_returns (id)",
    "CREATE INDEX IF NOT EXISTS idx_salt_returns_jid ON salt_returns (jid)",
    "CREATE INDEX IF NOT EXISTS idx_salt_returns_fun ON salt_returns (fun)",
    "CREATE INDEX IF NOT EXISTS idx_salt_returns_return ON salt_returns USING gin (return) WITH (fastupdate=on)",
    "CREATE INDEX IF NOT EXISTS idx_salt_returns_full_ret ON salt_returns USING gin (full_ret) WITH (fastupdate=on)",
    "CREATE SEQUENCE IF NOT EXISTS seq_salt_events_id",
    """CREATE TABLE IF NOT EXISTS salt_events (
        id BIGINT NOT NULL UNIQUE DEFAULT nextval('seq_salt_events_id'), tag varchar(255) NOT NULL,
        data jsonb NOT NULL, alter_time TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
        master_id varchar(255) NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_salt_events_tag ON salt_events (tag)",
    "CREATE INDEX IF NOT EXISTS idx_salt_events_data ON salt_events USING gin (data) WITH (fastupdate=on)",
)


class PgjsonbReturner(PostgresReturner):
    """Writes each return as a row of ``salt_returns`` with ``return`` (the function's result)
    and ``full_ret`` (the whole return) as ``jsonb``, ``success`` as the text ``true``/``false``
    and ``alter_time`` the time of the return (its ``_stamp``); each job's load into
    ``jids.load`` (jsonb) and events into ``salt_events.data`` (jsonb), all with GIN indexes
    (``fastupdate=on``) so containment queries are fast.

    Options are read under ``returner.pgjsonb.*`` as in Salt, and also under ``pgjsonb.*``
    (Salt's docs showed that spelling; its code never read it). One connection per returner,
    opened on first use and reused; a batch is one transaction written with COPY. A return
    delivered twice (same ``jid`` and ``id``) is stored once.

    Example queries::

        -- every failed return
        SELECT id, jid FROM salt_returns WHERE full_ret @> '{"success": false}';
        -- minions whose pkg.version answered nginx 1.22.1-9
        SELECT id FROM salt_returns WHERE fun = 'pkg.version' AND return @> '{"nginx": "1.22.1-9"}';
        -- keys accepted by the master
        SELECT data->>'id', alter_time FROM salt_events
         WHERE tag = 'salt/key' AND data @> '{"act": "accept"}';

    Differences from Salt: the first load of a jid is kept (the publish load, with its target
    and arguments). Salt upserted it with every return, so ``jids.load`` ended up holding the
    last minion's return and ``jobs.list_jobs`` showed ``unknown-target`` (salt#47327).
    jsonb cannot hold U+0000: such characters are stored as U+FFFD; ``NaN``/``Infinity``
    floats are stored as the strings ``"nan"``/``"inf"``. ``get_fun`` returns each minion's
    return with the highest jid, and ``clean_old_jobs`` never purges a job whose returns are
    still arriving (salt#69060).
    """

    name = "pgjsonb"
    prefix = "returner.pgjsonb"
    alt_prefixes: ClassVar[tuple[str, ...]] = ("pgjsonb",)
    summary = "PostgreSQL: Salt's jids / salt_returns / salt_events tables, jsonb with GIN indexes"
    options = (
        Option("host", default="localhost", doc="server host name or address"),
        Option("user", default="salt", doc="user name"),
        Option("passwd", key="pass", default="salt", secret=True, doc="password (config key `pass`)"),
        Option("db", default="salt", doc="database name"),
        Option("port", int, default=5432, doc="server port"),
        Option("connect_timeout", int, default=10, doc="seconds to wait for a connection"),
        *SSL_OPTIONS,
        Option("sslcrl", doc="certificate revocation list file"),
        Option("create_schema", bool, default=False,
               doc="create the tables and indexes (IF NOT EXISTS) on first connect"),
    )

    jsonb = True
    json_type = "jsonb"
    ddl = DDL
    ssl_keys = ("sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl")

    def _find_job_filter(self) -> tuple[str, tuple[object, ...]]:
        return "NOT load @> %s::jsonb", ('{"fun": "saltutil.find_job"}',)
