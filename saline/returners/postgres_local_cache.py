"""The ``postgres_local_cache`` returner: Salt's PostgreSQL master job cache, its own layout."""

from __future__ import annotations

import ast
import datetime as dt
from typing import Any

import psycopg

from saline.jid import format_jid_instance, format_jid_instance_ext, gen_jid, jid_to_datetime
from saline.returners import _pg
from saline.returners._sql import prepare_returns
from saline.returners.base import Option, Returner
from saline.returners.postgres import CONNECTION_OPTIONS

# Salt's DDL (salt/returners/postgres_local_cache.py), made re-runnable. The unnamed indexes of
# Salt's script get the names PostgreSQL gives them, so running this after Salt's script adds
# nothing. One change: Salt's btree index on salt_events.data rejects any event whose data is
# over ~2.7 kB; here it is a hash index (same equality lookups, any size).
DDL = (
    """CREATE TABLE IF NOT EXISTS jids (
        jid varchar(20) PRIMARY KEY, started TIMESTAMP WITH TIME ZONE DEFAULT now(),
        tgt_type text NOT NULL, cmd text NOT NULL, tgt text NOT NULL, kwargs text NOT NULL,
        ret text NOT NULL, username text NOT NULL, arg text NOT NULL, fun text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS salt_returns (
        added TIMESTAMP WITH TIME ZONE DEFAULT now(), fun text NOT NULL, jid varchar(20) NOT NULL,
        return text NOT NULL, id text NOT NULL, success boolean)""",
    "CREATE INDEX IF NOT EXISTS salt_returns_added_idx ON salt_returns (added)",
    "CREATE INDEX IF NOT EXISTS salt_returns_id_idx ON salt_returns (id)",
    "CREATE INDEX IF NOT EXISTS salt_returns_jid_idx ON salt_returns (jid)",
    "CREATE INDEX IF NOT EXISTS salt_returns_fun_idx ON salt_returns (fun)",
    """CREATE TABLE IF NOT EXISTS salt_events (
        id SERIAL, tag text NOT NULL, data text NOT NULL,
        alter_time TIMESTAMP WITH TIME ZONE DEFAULT now(), master_id text NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS salt_events_tag_idx ON salt_events (tag)",
    "CREATE INDEX IF NOT EXISTS salt_events_data_idx ON salt_events USING hash (data)",
    "CREATE INDEX IF NOT EXISTS salt_events_id_idx ON salt_events (id)",
    "CREATE INDEX IF NOT EXISTS salt_events_master_id_idx ON salt_events (master_id)",
)

TABLES = ("jids", "salt_returns", "salt_events")
_LOAD_COLUMNS = ("tgt_type", "cmd", "tgt", "kwargs", "ret", "username", "arg", "fun")


class PostgresLocalCacheReturner(_pg.Schema, Returner):
    """Salt's ``postgres_local_cache``: a master job cache in PostgreSQL, with its own tables.

    Tables (Salt's DDL; ``saline-run returners.init postgres_local_cache``, or
    ``create_schema: true``, creates what is missing; Salt's script's unnamed indexes get the
    names PostgreSQL gives them, so running both adds nothing)::

        jids(jid varchar(20) PRIMARY KEY, started timestamptz DEFAULT now(),
             tgt_type text, cmd text, tgt text, kwargs text, ret text, username text,
             arg text, fun text)                                   -- all NOT NULL
        salt_returns(added timestamptz DEFAULT now(), fun text, jid varchar(20),
                     return text, id text, success boolean)        -- success may be NULL
          -- indexes on added, id, jid, fun
        salt_events(id serial, tag text, data text, alter_time timestamptz DEFAULT now(),
                    master_id text)
          -- indexes on tag, data, id, master_id

    Values, as Salt writes them: ``jids`` holds one row per job, ``tgt_type``, ``cmd``,
    ``tgt``, ``kwargs``, ``ret``, ``username`` (the load's ``user``) and ``fun`` as the text
    Python's ``str()`` gives (``'None'`` when the load has no such key; a list target reads
    ``['m1', 'm2']``), ``arg`` as JSON; ``get_load`` turns them back into values.
    ``salt_returns`` holds one row per minion and job: ``success`` a boolean (NULL when the
    return has none), ``added`` when the master received the return, and ``return`` the JSON
    of ``{"return": …, "retcode": …, "success": …}``. ``get_jid`` gives
    ``{minion: {"return", "retcode", "success"}}``, the only keys this layout keeps.

    Options are Salt's keys ``master_job_cache.postgres.host|user|passwd|db|port`` (Salt
    read them straight from the master config and stopped with a KeyError when one was
    missing; here a missing one takes the default shown).

    Differences from Salt, all compatible with its tables: ``started`` is the jid's own time
    in UTC; Salt passed it as text (``2024, Jan 05 12:34:56.123456``), which PostgreSQL read
    in the session's time zone, so on a server not running in UTC every job started hours off.
    The return value inside ``return`` is stored as JSON (Salt stored ``str()`` of it, a
    Python repr inside the JSON, e.g. ``{"return": "{'a': True}"}``); readers of Salt's rows
    keep working, and ``str_return: true`` writes exactly Salt's form. ``clean_old_jobs``
    works (Salt's did nothing): jobs started before ``keep_jobs_seconds`` go, with their
    returns, unless a return is newer, and events older than that; with ``archive_jobs`` they
    are moved into ``*_archive`` tables. ``get_fun`` and ``get_jids_filter`` exist. A
    duplicate load is ignored (``ON CONFLICT DO NOTHING``: the publish load stays), a return
    delivered twice is stored once. Salt's btree index on ``salt_events.data`` refuses any
    event over about 2.7 kB; ``init_schema`` makes that index a hash index (same name).

    One connection per returner, opened on first use, kept, and opened again when the server
    dropped it; a batch is one transaction written with ``COPY``.

    Example query, the jobs of the last hour with how many minions answered::

        SELECT j.jid, j.fun, j.tgt, count(r.id) AS answered
          FROM jids j LEFT JOIN salt_returns r USING (jid)
         WHERE j.started > now() - interval '1 hour'
         GROUP BY j.jid, j.fun, j.tgt ORDER BY j.jid;
    """

    name = "postgres_local_cache"
    ddl = DDL
    tables = TABLES
    prefix = "master_job_cache.postgres"
    extra = "postgres"
    summary = "PostgreSQL master job cache with Salt's postgres_local_cache tables"
    options = (
        *CONNECTION_OPTIONS,
        Option("str_return", bool, default=False,
               doc="store the return value as Salt did, as the text of its Python repr inside the JSON (saline)"),
    )

    def __init__(self, options: dict[str, Any], master_opts: dict[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        setup = self._create if self.opts.get("create_schema") else None
        params = _pg.conn_params(self.opts, "passwd", ("sslmode", "sslcert", "sslkey", "sslrootcert"))
        self.link = _pg.PgLink(self.name, params, _pg.secrets_of(type(self), self.opts), setup)

    # -- write side --------------------------------------------------------------------------------
    def prep_jid(self, nocache: bool = False, passed_jid: str | None = None) -> str:
        if passed_jid:
            return passed_jid
        unique = bool(self.master_opts.get("unique_jid"))

        def fresh(conn: psycopg.Connection) -> str:
            while True:  # as Salt: never hand out a jid already in the cache
                jid = gen_jid(unique)
                if conn.execute("SELECT 1 FROM jids WHERE jid = %s", (jid,)).fetchone() is None:
                    return jid

        return self.link.run(fresh)

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        rows: dict[str, dict[str, Any]] = {}
        for jid, load, _minions in loads:
            jid = _pg.text(jid)
            if jid in rows:
                continue
            started = jid_to_datetime(jid) or dt.datetime.now(dt.timezone.utc)
            rows[jid] = {"jid": jid, "started": started,
                         "tgt_type": _salt_str(load.get("tgt_type")), "cmd": _salt_str(load.get("cmd")),
                         "tgt": _salt_str(load.get("tgt")), "kwargs": _salt_str(load.get("kwargs")),
                         "ret": _salt_str(load.get("ret")), "username": _salt_str(load.get("user")),
                         "arg": _pg.dumps(load.get("arg")), "fun": _salt_str(load.get("fun"))}
        if not rows:
            return
        sql = ("INSERT INTO jids (jid, started, tgt_type, cmd, tgt, kwargs, ret, username, arg, fun) "
               "SELECT %(jid)s::varchar, %(started)s, %(tgt_type)s, %(cmd)s, %(tgt)s, %(kwargs)s, %(ret)s, "
               "%(username)s, %(arg)s, %(fun)s WHERE NOT EXISTS (SELECT 1 FROM jids WHERE jid = %(jid)s::varchar) "
               "ON CONFLICT DO NOTHING")

        def write(conn: psycopg.Connection) -> None:
            with conn.transaction():
                conn.cursor().executemany(sql, list(rows.values()))

        self.link.run(write)

    def _return_json(self, ret: dict[str, Any]) -> str:
        value = ret.get("return")
        job_ret: dict[str, Any] = {"return": str(value) if self.opts.get("str_return") else value}
        for key in ("retcode", "success"):
            if key in ret:
                job_ret[key] = ret[key]
        return _pg.dumps(job_ret)

    def returns(self, rets: list[dict[str, Any]]) -> None:
        rets = prepare_returns(self, rets)
        if not rets:
            return
        rows = []
        for ret in rets:
            _pg.required(ret, self.name)
            success = ret.get("success")
            rows.append((_pg.stamp_time(ret), _pg.text(ret.get("fun")), _pg.text(ret["jid"]), self._return_json(ret),
                         _pg.text(ret["id"]), None if success is None else bool(success)))

        def write(conn: psycopg.Connection) -> None:
            with conn.transaction():
                jids = sorted({row[2] for row in rows})
                seen = set(conn.execute("SELECT jid, id FROM salt_returns WHERE jid = ANY(%s)", (jids,)).fetchall())
                with conn.cursor().copy("COPY salt_returns (added, fun, jid, return, id, success) FROM STDIN") as copy:
                    for row in rows:
                        if (row[2], row[4]) not in seen:
                            seen.add((row[2], row[4]))
                            copy.write_row(row)

        self.link.run(write)

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        master_id = _pg.text(self.master_id)
        rows = [(_pg.text(ev.get("tag")), _pg.dumps(ev.get("data")), master_id, _pg.stamp_time(ev.get("data")))
                for ev in events]

        def write(conn: psycopg.Connection) -> None:
            with conn.transaction():
                with conn.cursor().copy("COPY salt_events (tag, data, master_id, alter_time) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)

        self.link.run(write)

    # -- read side ---------------------------------------------------------------------------------
    def _fetch(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.link.run(lambda conn: conn.execute(sql, params).fetchall())

    _SELECT_LOAD = "SELECT jid, " + ", ".join(_LOAD_COLUMNS) + " FROM jids"

    def get_load(self, jid: str) -> dict[str, Any]:
        rows = self._fetch(self._SELECT_LOAD + " WHERE jid = %s", (jid,))
        return _build_load(rows[0]) if rows else {}

    def get_jid(self, jid: str) -> dict[str, Any]:
        rows = self._fetch("SELECT id, return FROM salt_returns WHERE jid = %s ORDER BY added", (jid,))
        return {minion: _job_ret(data) for minion, data in rows}

    def get_fun(self, fun: str) -> dict[str, Any]:
        rows = self._fetch("SELECT DISTINCT ON (id) id, return FROM salt_returns WHERE fun = %s "
                           "ORDER BY id, jid DESC, added DESC", (fun,))
        return {minion: _job_ret(data) for minion, data in rows}

    def get_jids(self) -> dict[str, Any]:
        # As Salt: only the jobs still inside keep_jobs_seconds (all of them when it is 0).
        keep = self.keep_jobs_seconds
        where = " WHERE started > now() - make_interval(secs => %s)" if keep > 0 else ""
        rows = self._fetch(self._SELECT_LOAD + where + " ORDER BY jid", (keep,) if keep > 0 else None)
        return {row[0]: format_jid_instance(row[0], _build_load(row)) for row in rows}

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        where = "WHERE fun <> 'saltutil.find_job' " if filter_find_job else ""
        rows = self._fetch(f"{self._SELECT_LOAD} {where}ORDER BY jid DESC LIMIT %s", (int(count),))
        return [format_jid_instance_ext(row[0], _build_load(row)) for row in reversed(rows)]

    def get_minions(self) -> list[str]:
        return [row[0] for row in self._fetch("SELECT DISTINCT id FROM salt_returns ORDER BY id")]

    # -- housekeeping ------------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        keep = self.keep_jobs_seconds
        if keep <= 0:
            return  # 0 keeps jobs forever
        cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=keep)
        archive = bool(self.master_opts.get("archive_jobs"))
        self.link.run(lambda conn: _pg.purge_jobs(conn, cutoff, archive, jids_older="j.started < %(cutoff)s",
                                                  returns_time="added"))



def _salt_str(value: Any) -> str:
    """Salt's ``str(load.get(key))``: the text of the value, ``'None'`` when absent."""
    return _pg.text(str(value))


def _from_salt_str(text: str | None) -> Any:
    """Undo ``str()`` where it is safe: ``'None'``, and Python literals of lists and dicts."""
    if text is None or text == "None":
        return None
    if text[:1] in ("[", "{"):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return text
        return value if isinstance(value, (list, dict)) else text
    return text


def _build_load(row: tuple[Any, ...]) -> dict[str, Any]:
    jid, tgt_type, cmd, tgt, kwargs, ret, username, arg, fun = row
    args = _pg.loads(arg)
    load = {"jid": jid, "tgt_type": _from_salt_str(tgt_type), "cmd": _from_salt_str(cmd),
            "tgt": _from_salt_str(tgt), "kwargs": _from_salt_str(kwargs), "ret": _from_salt_str(ret),
            "user": _from_salt_str(username), "arg": args, "fun": _from_salt_str(fun)}
    return {k: v for k, v in load.items() if v is not None}


def _job_ret(data: str) -> dict[str, Any]:
    value = _pg.loads(data)
    # Rows from Salt's oldest versions hold the bare return value.
    return value if isinstance(value, dict) and "return" in value else {"return": value}
