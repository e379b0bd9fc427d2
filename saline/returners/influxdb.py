"""The ``influxdb`` returner: Salt's InfluxDB 1.x measurements, written as batched line protocol."""

from __future__ import annotations

import datetime as dt
import os
import threading
from typing import Any, Callable, Mapping, TypeVar

import requests
from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError

from saline.jid import is_jid, jid_to_datetime
from saline.returners import _json
from saline.returners._sql import jids_listing, newest_jobs, prepare_returns
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError
from saline.returners.options import scrub

T = TypeVar("T")

_BATCH = 5000  # points per HTTP write
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def quote_str(text: str) -> str:
    """An InfluxQL string literal."""
    return "'" + str(text).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _micros(when: dt.datetime) -> int:
    return (when - _EPOCH) // dt.timedelta(microseconds=1)


class InfluxdbReturner(Returner):
    """Salt's ``influxdb`` returner: returns and loads as points of two InfluxDB 1.x measurements.

    What it writes (Salt's layout; values are JSON text)::

        returns   tags fun, id, jid   fields "return" = JSON of ret["return"],
                                             full_ret = JSON of the return without "return"
        jids      tag jid             field  load = JSON of the job's load

    A batch is one HTTP write of line protocol (up to 5,000 points each) through the ``influxdb``
    client, whose kept session is reused and reconnects by itself.

    Differences from Salt, all compatible with its measurements: a point's time is the job's
    start (from its jid; else the return's ``_stamp``; else now) rather than the moment of
    writing, so a batch delivered twice rewrites the same points instead of adding copies, and
    the newest job is the last point of a series; the first load of a jid is kept (Salt wrote one
    more ``jids`` point for every return); the return is not changed (Salt deleted ``return`` from
    the dict it was given, so a second returner in ``--return a,b`` saw none); ``get_load`` gives
    the load (Salt's gave the raw query result), ``get_jid`` whole returns (Salt's lacked
    ``return``), ``get_fun`` each minion's latest return (Salt's gave the first), ``get_jids``
    works on InfluxDB 1.x (Salt's query relied on 0.8 ``distinct``) and ``get_jids_filter``
    exists; ``clean_old_jobs`` deletes points older than the master's ``keep_jobs_seconds``;
    the database is created when missing. Strings in queries are quoted, never pasted.

    Example, with the ``influx`` shell::

        SELECT id, "return" FROM returns WHERE jid = '20240105123456123456'
        SELECT last(full_ret) FROM returns WHERE fun = 'test.ping' GROUP BY id
    """

    name = "influxdb"
    extra = "influxdb"
    summary = "InfluxDB 1.x: Salt's measurements returns (tags fun, id, jid) and jids"
    options = (
        Option("host", default="localhost", doc="server host name"),
        Option("port", int, default=8086, doc="HTTP API port"),
        Option("db", default="salt", doc="database"),
        Option("user", doc="user name (when the server requires authentication)"),
        Option("password", secret=True, doc="password"),
        Option("ssl", bool, default=False, doc="use HTTPS (saline)"),
        Option("verify_ssl", bool, default=True, doc="check the server's certificate (saline)"),
        Option("timeout", float, default=10.0, doc="seconds to wait for the server (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self._client: InfluxDBClient | None = None
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._secrets = [str(v) for v in [self.opts.get("password")] if v]
        self._db_checked = False

    # -- connection --------------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"InfluxDB at {self.opts.get('host')}:{self.opts.get('port')}"

    def _line(self, text: str) -> str:
        return scrub(f"returner {self.name}: {' '.join(str(text).split())}", self._secrets)

    def _connect(self) -> InfluxDBClient:
        return InfluxDBClient(host=str(self.opts["host"]), port=int(self.opts["port"]),
                              username=self.opts.get("user") or "root", password=self.opts.get("password") or "root",
                              database=str(self.opts["db"]), ssl=bool(self.opts.get("ssl")),
                              verify_ssl=bool(self.opts.get("verify_ssl")),
                              timeout=float(self.opts.get("timeout") or 10.0), retries=2)

    def _run(self, work: Callable[[InfluxDBClient], T], creating: bool = False) -> T:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client, self._pid = self._connect(), os.getpid()
            client = self._client
        try:
            return work(client)
        except requests.exceptions.RequestException as exc:
            self.close()
            raise BackendUnavailable(self._line(f"cannot reach {self.where}: {_describe(exc)}")) from None
        except InfluxDBServerError as exc:
            raise BackendUnavailable(self._line(f"{self.where} cannot serve now: {_describe(exc)}")) from None
        except InfluxDBClientError as exc:
            text = _describe(exc)
            if "database not found" in text and not creating:
                self.init_schema()
                return self._run(work, creating=True)
            if exc.code in (401, 403):
                raise ReturnerError(self._line(f"{self.where} refused the user or password: {text}")) from None
            raise ReturnerError(self._line(f"{self.where}: {text}")) from None

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            if client is not None and self._pid == os.getpid():
                try:
                    client.close()
                except (OSError, requests.exceptions.RequestException):
                    pass

    def _query(self, query: str) -> list[dict[str, Any]]:
        return list(self._run(lambda c: c.query(query, epoch="u")).get_points())

    # -- write side -----------------------------------------------------------------------------------------
    def _time(self, jid: str, ret: Mapping[str, Any] | None = None) -> int:
        when = jid_to_datetime(jid) if is_jid(jid) else None
        if when is None and ret is not None and isinstance(ret.get("_stamp"), str):
            try:
                when = dt.datetime.fromisoformat(ret["_stamp"]).replace(tzinfo=dt.timezone.utc)
            except ValueError:
                when = None
        return _micros(when or dt.datetime.now(dt.timezone.utc))

    def _write(self, points: list[dict[str, Any]]) -> None:
        self._run(lambda c: c.write_points(points, time_precision="u", batch_size=_BATCH))

    def returns(self, rets: list[dict[str, Any]]) -> None:
        rets = prepare_returns(self, rets)
        points = []
        for ret in rets:
            rest = {k: v for k, v in ret.items() if k != "return"}  # the caller's dict stays whole
            jid = _json.text(ret.get("jid"))
            points.append({"measurement": "returns",
                           "tags": {"fun": _json.text(ret.get("fun")), "id": _json.text(ret.get("id")), "jid": jid},
                           "time": self._time(jid, ret),
                           "fields": {"return": _json.dumps(ret.get("return")), "full_ret": _json.dumps(rest)}})
        if points:
            self._write(points)

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        first: dict[str, str] = {}
        for jid, load, _minions in loads:
            first.setdefault(_json.text(jid), _json.dumps(load))
        if not first:
            return
        # the first load of a jid stays: the publish load, not a later return's payload
        where = " OR ".join(f"jid = {quote_str(j)}" for j in first)
        known = {row.get("jid") for row in self._query(f"SELECT load, jid FROM jids WHERE {where}")}
        points = [{"measurement": "jids", "tags": {"jid": jid}, "time": self._time(jid), "fields": {"load": text}}
                  for jid, text in first.items() if jid not in known]
        if points:
            self._write(points)

    # -- read side -----------------------------------------------------------------------------------------------
    def get_load(self, jid: str) -> dict[str, Any]:
        rows = self._query(f"SELECT load FROM jids WHERE jid = {quote_str(jid)} LIMIT 1")
        load = _json.loads(rows[0].get("load"), {}) if rows else {}
        return load if isinstance(load, dict) else {}

    @staticmethod
    def _whole(row: Mapping[str, Any]) -> Any:
        ret = _json.loads(row.get("full_ret"), {})
        if isinstance(ret, dict):
            ret["return"] = _json.loads(row.get("return"))
        return ret

    def get_jid(self, jid: str) -> dict[str, Any]:
        rows = self._query(f'SELECT id, full_ret, "return" FROM returns WHERE jid = {quote_str(jid)}')
        return {row["id"]: self._whole(row) for row in sorted(rows, key=lambda r: (r.get("id") or "", r["time"]))}

    def get_fun(self, fun: str) -> dict[str, Any]:
        found = self._run(lambda c: c.query(f'SELECT last(full_ret) AS full_ret, last("return") AS "return" '
                                            f'FROM returns WHERE fun = {quote_str(fun)} GROUP BY id', epoch="u"))
        out = {}
        for (_name, tags), points in found.items():
            for row in points:
                out[(tags or {}).get("id")] = self._whole(row)
        return dict(sorted(out.items()))

    def _loads(self) -> list[tuple[str, Any]]:
        return [(row["jid"], row.get("load")) for row in self._query("SELECT load, jid FROM jids") if row.get("jid")]

    def get_jids(self) -> dict[str, Any]:
        return jids_listing(sorted(self._loads()))

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        return newest_jobs(self._loads(), count, filter_find_job)

    def get_minions(self) -> list[str]:
        rows = self._query('SHOW TAG VALUES FROM returns WITH KEY = "id"')
        return sorted({row["value"] for row in rows if row.get("value")})

    # -- housekeeping ----------------------------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        """Delete the points (returns and loads) of jobs older than ``keep_jobs_seconds``."""
        keep = self.keep_jobs_seconds
        if keep <= 0:
            return
        cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=keep)
        stamp = cutoff.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self._run(lambda c: c.query(f"DELETE FROM returns WHERE time < '{stamp}'; "
                                    f"DELETE FROM jids WHERE time < '{stamp}'", method="POST"))

    def init_schema(self) -> None:
        """Create the database (``CREATE DATABASE`` is a no-op when it exists)."""
        db = str(self.opts["db"])
        self._run(lambda c: c.query(f'CREATE DATABASE "{_ident(db)}"', method="POST"), creating=True)

    def check(self) -> None:
        self._run(lambda c: c.ping())


def _ident(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InfluxDBClientError):
        text = str(getattr(exc, "content", "") or exc)
    else:
        text = str(exc)
    if isinstance(exc, requests.exceptions.ConnectionError) and "Connection refused" in text:
        return "connection refused"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    return " ".join(text.split())[:300] or type(exc).__name__
