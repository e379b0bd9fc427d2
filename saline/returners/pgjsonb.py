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
    """Salt's ``pgjsonb`` returner: returns, loads and events in PostgreSQL as jsonb, GIN-indexed.

    Tables (Salt's DDL; ``saline-run returners.init pgjsonb``, or ``create_schema: true``,
    creates what is missing; tables made from Salt's documentation work as they are)::

        jids(jid varchar(255) PRIMARY KEY, load jsonb NOT NULL)
          -- idx_jids_jsonb: GIN (load) WITH (fastupdate=on)
        salt_returns(fun varchar(50), jid varchar(255), return jsonb, id varchar(255),
                     success varchar(10), full_ret jsonb, alter_time timestamptz DEFAULT now())
          -- idx_salt_returns_id, _jid, _fun (btree); _return, _full_ret (GIN, fastupdate=on)
        salt_events(id bigint UNIQUE DEFAULT nextval('seq_salt_events_id'), tag varchar(255),
                    data jsonb, alter_time timestamptz DEFAULT now(), master_id varchar(255))
          -- idx_salt_events_tag (btree), idx_salt_events_data (GIN, fastupdate=on)

    Values, as Salt writes them: ``return`` is the return value, ``full_ret`` the whole return
    load, ``success`` the text ``true``/``false``, ``jids.load`` the job's load,
    ``salt_events.data`` the event data with ``master_id`` the master's id; ``alter_time`` is
    the time of the return or event (its ``_stamp``, when the master received it). jsonb
    cannot hold U+0000 nor NaN/Infinity: U+0000 is stored as U+FFFD and non-finite floats as
    the strings ``"nan"``, ``"inf"``, ``"-inf"``; bytes are stored as text and values JSON has
    no form for (sets, objects) as lists or their ``repr``, so an odd return never fails a batch.
    A ``fun``, ``id`` or ``tag`` longer than its column is cut to fit (``full_ret`` keeps it).

    Options are read under ``returner.pgjsonb.*`` as in Salt (the password's key is ``pass``,
    its ``--return_kwargs`` name ``passwd`` or ``pass``), and also under ``pgjsonb.*`` (the
    spelling Salt's documentation showed and its code never read).

    Differences from Salt: the first load of a jid is kept, the publish load with its target and
    arguments; Salt upserted the load with every return, so ``jids.load`` ended up holding the
    last minion's return and ``jobs.list_jobs`` showed ``unknown-target`` (salt#47327). A
    return delivered twice (same ``jid`` and ``id``) is stored once. ``get_fun`` returns, per
    minion, the return with the highest jid; ``get_jids_filter`` exists; ``clean_old_jobs``
    never purges a job whose returns are still arriving (salt#69060) and with ``archive_jobs``
    moves rows into ``*_archive`` tables. Failures are not "dropping return" log lines: they are
    one-line errors the outbox retries or keeps as dead letters.

    One connection per returner, opened on first use, kept, and opened again when the server
    dropped it; a batch is one transaction written with ``COPY``.

    Example queries (the three of the README)::

        -- every failed return
        SELECT id, jid FROM salt_returns WHERE full_ret @> '{"success": false}';
        -- minions whose pkg.version answered nginx 1.22.1-9
        SELECT id FROM salt_returns WHERE fun = 'pkg.version' AND return @> '{"nginx": "1.22.1-9"}';
        -- keys accepted by the master
        SELECT data->>'id', alter_time FROM salt_events
         WHERE tag = 'salt/key' AND data @> '{"act": "accept"}';
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
               doc="create the tables and indexes (IF NOT EXISTS) on first connect (saline)"),
    )

    jsonb = True
    json_type = "jsonb"
    ddl = DDL
    ssl_keys = ("sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl")

    def _find_job_filter(self) -> tuple[str, tuple[object, ...]]:
        return "NOT load @> %s::jsonb", ('{"fun": "saltutil.find_job"}',)
