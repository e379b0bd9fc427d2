"""The ``postgres`` returner: Salt's PostgreSQL tables with JSON kept as text."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

import psycopg

from saline.returners import _json, _pg
from saline.returners._sql import FIND_JOB_LIKE, jids_filter_listing, jids_listing, prepare_returns
from saline.returners.base import Option, Returner

# Salt's DDL (salt/returners/postgres.py), made re-runnable. ``jids.jid`` is varchar(20) as in
# Salt: jids with ``unique_jid`` (``_<pid>``) need ``ALTER TABLE jids ALTER jid TYPE varchar(255)``.
DDL = (
    "CREATE TABLE IF NOT EXISTS jids (jid varchar(20) PRIMARY KEY, load text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS salt_returns (
        fun varchar(50) NOT NULL, jid varchar(255) NOT NULL, return text NOT NULL, full_ret text,
        id varchar(255) NOT NULL, success varchar(10) NOT NULL,
        alter_time TIMESTAMP WITH TIME ZONE DEFAULT now())""",
    "CREATE INDEX IF NOT EXISTS idx_salt_returns_id ON salt_returns (id)",
    "CREATE INDEX IF NOT EXISTS idx_salt_returns_jid ON salt_returns (jid)",
    "CREATE INDEX IF NOT EXISTS idx_salt_returns_fun ON salt_returns (fun)",
    "CREATE INDEX IF NOT EXISTS idx_salt_returns_updated ON salt_returns (alter_time)",
    "CREATE SEQUENCE IF NOT EXISTS seq_salt_events_id",
    """CREATE TABLE IF NOT EXISTS salt_events (
        id BIGINT NOT NULL UNIQUE DEFAULT nextval('seq_salt_events_id'), tag varchar(255) NOT NULL,
        data text NOT NULL, alter_time TIMESTAMP WITH TIME ZONE DEFAULT now(),
        master_id varchar(255) NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS idx_salt_events_tag ON salt_events (tag)",
)

TABLES = ("jids", "salt_returns", "salt_events")

SSL_OPTIONS = (
    Option("sslmode", doc="libpq sslmode: disable, allow, prefer, require, verify-ca, verify-full"),
    Option("sslcert", doc="client certificate file"),
    Option("sslkey", doc="client key file"),
    Option("sslrootcert", doc="CA certificate file to verify the server against"),
)

#: Salt's connection options of ``postgres`` (and ``postgres_local_cache``), plus saline's
CONNECTION_OPTIONS = (
    Option("host", default="localhost", doc="server host name or address"),
    Option("user", default="salt", doc="user name"),
    Option("passwd", default="salt", secret=True, doc="password"),
    Option("db", default="salt", doc="database name"),
    Option("port", int, default=5432, doc="server port"),
    *SSL_OPTIONS,
    Option("connect_timeout", int, default=10, doc="seconds to wait for a connection"),
    Option("create_schema", bool, default=False,
           doc="create the tables and indexes (IF NOT EXISTS) on first connect (saline)"),
)


class PostgresReturner(_pg.Schema, Returner):
    """Salt's ``postgres`` returner: job returns, loads and events in PostgreSQL, JSON as text.

    Tables (Salt's DDL; ``saline-run returners.init postgres``, or ``create_schema: true``,
    creates what is missing; tables made from Salt's documentation work as they are)::

        jids(jid varchar(20) PRIMARY KEY, load text NOT NULL)
        salt_returns(fun varchar(50), jid varchar(255), return text, full_ret text,
                     id varchar(255), success varchar(10),
                     alter_time timestamptz DEFAULT now())
          -- indexes idx_salt_returns_id, _jid, _fun, _updated (alter_time)
        salt_events(id bigint UNIQUE DEFAULT nextval('seq_salt_events_id'), tag varchar(255),
                    data text, alter_time timestamptz DEFAULT now(), master_id varchar(255))
          -- index idx_salt_events_tag

    Values, as Salt writes them: ``salt_returns.return`` is the JSON of the return value
    (``true`` for ``test.ping``), ``full_ret`` the JSON of the whole return load (``id``,
    ``jid``, ``fun``, ``fun_args``, ``return``, ``retcode``, ``success``, ``_stamp`` …),
    ``success`` the text ``true`` or ``false``; ``jids.load`` the JSON of the job's load;
    ``salt_events.data`` the JSON of the event data and ``master_id`` the master's id. JSON is
    Salt's (``ensure_ascii=False``, default spacing); bytes are stored as text and values JSON
    has no form for (sets, objects) as lists or their ``repr``, so an odd return never fails a
    batch. ``alter_time`` is when the master received the return or event (its ``_stamp``),
    so a batch delivered late by the outbox keeps its real time. A ``fun`` longer than its
    column (a multi-function job, joined with commas) and an ``id`` or ``tag`` longer than
    theirs are cut to fit rather than failing the batch; ``full_ret`` keeps them whole.

    Options are read under ``returner.postgres.*`` as in Salt, and also under ``postgres.*``
    (the main spelling wins when both are set). ``jids.jid`` is ``varchar(20)`` as in Salt:
    jids made with ``unique_jid: true`` (``<20 digits>_<pid>``) do not fit and fail with one
    line saying so; ``ALTER TABLE jids ALTER COLUMN jid TYPE varchar(255)`` lets them in.

    Differences from Salt, all compatible with its tables: the first load of a jid is kept (the
    publish load; Salt's did the same by swallowing the duplicate-key error); a return delivered
    twice (same ``jid`` and ``id``: a retried batch) is stored once (looked up only for a batch
    that may have been sent before: ``returns_first`` writes one sent for the first time without
    the lookup); ``get_fun`` works on PostgreSQL (Salt's used MySQL back-ticks) and returns, per
    minion, the return with the highest jid; ``get_jids_filter`` exists; ``clean_old_jobs``
    exists (Salt's postgres returner kept everything): rows older than ``keep_jobs_seconds`` are
    deleted, or with ``archive_jobs`` moved into ``jids_archive``, ``salt_returns_archive`` and
    ``salt_events_archive`` (created ``LIKE`` the originals), and a job goes only when none of
    its returns is newer (salt#69060). sslmode/sslcert/sslkey/sslrootcert and connect_timeout
    are saline's (passed to libpq).

    One connection per returner, opened on first use, kept, and opened again (once, at once)
    when the server dropped it (a restart); a batch is one transaction written with ``COPY``.
    Errors are one line: ``BackendUnavailable`` when the server cannot be reached (the outbox
    retries), ``ReturnerError`` naming the cause otherwise (wrong password, missing role,
    database or table, TLS refused) and never a password.

    Example query, the latest ``state.apply`` of every minion::

        SELECT DISTINCT ON (id) id, jid, success, return::json
          FROM salt_returns WHERE fun = 'state.apply'
         ORDER BY id, jid DESC;
    """

    name = "postgres"
    prefix = "returner.postgres"
    alt_prefixes: ClassVar[tuple[str, ...]] = ("postgres",)
    extra = "postgres"
    summary = "PostgreSQL: Salt's jids / salt_returns / salt_events tables, JSON as text"
    options = CONNECTION_OPTIONS

    #: what the read side parses: JSON text here, jsonb in pgjsonb
    jsonb: ClassVar[bool] = False
    json_type: ClassVar[str] = "text"
    ddl: ClassVar[tuple[str, ...]] = DDL
    tables: ClassVar[tuple[str, ...]] = TABLES
    password_option: ClassVar[str] = "passwd"
    ssl_keys: ClassVar[tuple[str, ...]] = ("sslmode", "sslcert", "sslkey", "sslrootcert")

    def __init__(self, options: dict[str, Any], master_opts: dict[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        setup = self._create if self.opts.get("create_schema") else None
        params = _pg.conn_params(self.opts, self.password_option, self.ssl_keys)
        self.link = _pg.PgLink(self.name, params, _pg.secrets_of(type(self), self.opts), setup)

    # -- write side --------------------------------------------------------------------------------
    def _dumps(self, value: Any) -> str:
        return _pg.dumps_jsonb(value) if self.jsonb else _pg.dumps(value)

    def _return_row(self, ret: dict[str, Any]) -> tuple[Any, ...]:
        _pg.required(ret, self.name)
        if self.jsonb:
            full, value = _pg.dumps_jsonb(ret), _pg.dumps_jsonb(ret.get("return"))
        else:
            full, value = _json.dumps_ret(ret)
        return (_pg.text(ret.get("fun")), _pg.text(ret["jid"]), value, full, _pg.text(ret["id"]),
                "true" if ret.get("success") else "false", _pg.stamp_time(ret))

    def returns(self, rets: list[dict[str, Any]], check: bool = True) -> None:
        """``check``: first look up the returns of the batch's jobs already stored (it may have
        been sent before) and leave them out; copies inside the batch are left out either way."""
        rets = prepare_returns(self, rets)
        if not rets:
            return
        rows = [self._return_row(r) for r in rets]

        def write(conn: psycopg.Connection) -> None:
            width = self.link.widths(conn, "salt_returns")
            cut = [(_pg.fit(r[0], width.get("fun")), *r[1:4], _pg.fit(r[4], width.get("id")), *r[5:]) for r in rows]
            with conn.transaction():
                # A redelivered return (same jid and minion) is stored once: the outbox delivers
                # at least once, and a minion may resend a return it was not sure had arrived.
                seen: set[tuple[Any, ...]] = set()
                if check:
                    jids = sorted({row[1] for row in cut})
                    seen = set(conn.execute("SELECT jid, id FROM salt_returns WHERE jid = ANY(%s)", (jids,)).fetchall())
                with conn.cursor().copy("COPY salt_returns (fun, jid, return, full_ret, id, success, alter_time) "
                                        "FROM STDIN") as copy:
                    for row in cut:
                        if (row[1], row[4]) not in seen:
                            seen.add((row[1], row[4]))
                            copy.write_row(row)

        self.link.run(write)

    def returns_first(self, rets: list[dict[str, Any]]) -> None:
        self.returns(rets, check=False)

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        first: dict[str, str] = {}
        for jid, load, _minions in loads:
            if _pg.text(jid) not in first:
                first[_pg.text(jid)] = self._dumps(load)
        if not first:
            return
        # The first load of a jid stays (the publish load); later ones (Salt saves the load again
        # with every return) are ignored. Works on tables created by hand without the primary key.
        sql = (f"INSERT INTO jids (jid, load) SELECT %(jid)s::varchar, %(load)s::{self.json_type} "
               "WHERE NOT EXISTS (SELECT 1 FROM jids WHERE jid = %(jid)s::varchar) ON CONFLICT DO NOTHING")

        def write(conn: psycopg.Connection) -> None:
            with conn.transaction():
                conn.cursor().executemany(sql, [{"jid": j, "load": l} for j, l in first.items()])

        self.link.run(write)

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        master_id = _pg.text(self.master_id)
        rows = [(_pg.text(ev.get("tag")), self._dumps(ev.get("data")), master_id, _pg.stamp_time(ev.get("data")))
                for ev in events]

        def write(conn: psycopg.Connection) -> None:
            width = self.link.widths(conn, "salt_events")
            with conn.transaction():
                with conn.cursor().copy("COPY salt_events (tag, data, master_id, alter_time) FROM STDIN") as copy:
                    for tag, data, master, when in rows:
                        copy.write_row((_pg.fit(tag, width.get("tag")), data, _pg.fit(master, width.get("master_id")),
                                        when))

        self.link.run(write)

    # -- read side ---------------------------------------------------------------------------------
    def _fetch(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.link.run(lambda conn: conn.execute(sql, params).fetchall())

    def get_load(self, jid: str) -> dict[str, Any]:
        rows = self._fetch("SELECT load FROM jids WHERE jid = %s", (jid,))
        load = _pg.loads(rows[0][0], {}) if rows else {}
        return load if isinstance(load, dict) else {}

    def get_jid(self, jid: str) -> dict[str, Any]:
        rows = self._fetch("SELECT id, full_ret FROM salt_returns WHERE jid = %s ORDER BY alter_time", (jid,))
        return {minion: _pg.loads(full) for minion, full in rows}

    def get_fun(self, fun: str) -> dict[str, Any]:
        rows = self._fetch("SELECT DISTINCT ON (id) id, full_ret FROM salt_returns WHERE fun = %s "
                           "ORDER BY id, jid DESC, alter_time DESC", (fun,))
        return {minion: _pg.loads(full) for minion, full in rows}

    def get_jids(self) -> dict[str, Any]:
        return jids_listing(self._fetch("SELECT jid, load FROM jids ORDER BY jid"))

    def _find_job_filter(self) -> tuple[str, tuple[Any, ...]]:
        return "load NOT LIKE %s", (FIND_JOB_LIKE,)

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        where, params = self._find_job_filter() if filter_find_job else ("TRUE", ())
        rows = self._fetch(f"SELECT jid, load FROM jids WHERE {where} ORDER BY jid DESC LIMIT %s", (*params, int(count)))
        return jids_filter_listing(rows)

    def get_minions(self) -> list[str]:
        return [row[0] for row in self._fetch("SELECT DISTINCT id FROM salt_returns ORDER BY id")]

    # -- housekeeping ------------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        keep = self.keep_jobs_seconds
        if keep <= 0:
            return  # 0 keeps jobs forever
        cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=keep)
        archive = bool(self.master_opts.get("archive_jobs"))
        self.link.run(lambda conn: _pg.purge_jobs(
            conn, cutoff, archive, jids_older="j.jid ~ '^[0-9]{20}' AND j.jid < %(cutoff_jid)s",
            returns_time="alter_time"))
