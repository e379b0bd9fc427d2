"""The ``redis`` returner (also ``redis_return``): Salt's Redis key layout, pipelined batches."""

from __future__ import annotations

import datetime as dt
import os
import threading
from typing import Any, Callable, Iterator, TypeVar

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (AuthenticationError, BusyLoadingError, ReadOnlyError, RedisClusterException,
                              RedisError, ResponseError)
from redis.backoff import NoBackoff
from redis.retry import Retry

from saline.jid import is_jid, jid_to_datetime
from saline.returners import _json
from saline.returners._sql import FIND_JOB_LIKE, jids_filter_listing, jids_listing, prepare_returns
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError
from saline.returners.options import scrub

T = TypeVar("T")

EVENTS_KEY = "salt_events"
MINIONS_KEY = "minions"
_SCAN_COUNT = 1000
_FIND_JOB = FIND_JOB_LIKE.strip("%")

# ``<minion>:<fun>`` holds the latest jid of that function on that minion: set it only when the
# jid is newer than the one stored, so a return delivered late (or twice) cannot move it back.
_SET_IF_NEWER = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur < ARGV[1] then redis.call('SET', KEYS[1], ARGV[1]) end
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


class RedisReturner(Returner):
    """Salt's ``redis`` returner (also ``redis_return``): returns and loads as Redis keys.

    Keys (Salt's layout; values are JSON text)::

        ret:<jid>         hash    field <minion> = JSON of that minion's return
        <minion>:<fun>    string  the jid of that minion's latest return of <fun>
        minions           set     every minion id that ever returned
        load:<jid>        string  JSON of the job's load
        salt_events       list    (saline) JSON {"tag", "data", "master_id", "alter_time"},
                                  newest first, trimmed to events_max entries

    ``ret:<jid>``, ``<minion>:<fun>`` and ``load:<jid>`` expire after the master's
    ``keep_jobs_seconds`` (re-applied on every return); ``minions`` and ``salt_events`` do
    not expire. ``keep_jobs_seconds: 0`` means no expiry: Salt sent ``EXPIRE … 0``, which
    deleted every return at once, and ``SETEX … 0``, which failed.

    Differences from Salt, all compatible with its keys: the first load of a jid is kept
    (``SET NX``; Salt overwrote it with each return's payload, so ``load:<jid>`` ended up
    holding the last return); ``get_fun`` works (Salt's read a key it never wrote, salt#69039)
    and ``<minion>:<fun>`` only ever moves to a newer jid, so a late or repeated delivery
    cannot set it back; listing and cleaning use ``SCAN``, never the blocking ``KEYS``
    (salt#69037); ``clean_old_jobs`` deletes ``ret:<jid>`` hashes whose ``load:<jid>`` is gone
    once the job is older than ``keep_jobs_seconds`` (the returns of a running job stay);
    ``get_jids_filter`` exists; events are a saline addition (``LPUSH`` + ``LTRIM``). Writing a
    return twice rewrites the same hash field, so a duplicate delivery changes nothing.

    One connection per returner (Salt kept one process-wide pool, never re-read), opened on
    first use and opened again when the server dropped it; a batch is one pipeline
    (``transaction=False``). ``cluster_mode`` talks to a Redis Cluster (from
    ``cluster.startup_nodes``, or ``host``/``port``); set against a server that is not one, it
    fails with one line saying so. ``unix_socket_path`` replaces host and port.

    Example, with ``redis-cli``::

        HGETALL ret:20240105123456123456      # every minion's return of one job
        GET web1:state.apply                   # the jid of web1's latest state.apply
        LRANGE salt_events 0 9                 # the ten newest events
    """

    name = "redis"
    extra = "redis"
    summary = "Redis: Salt's ret:<jid> / load:<jid> / <minion>:<fun> / minions keys, with expiry"
    options = (
        Option("host", default="salt", doc="server host name (Salt's default: salt)"),
        Option("port", int, default=6379, doc="server port"),
        Option("db", int, default=0, doc="database number"),
        Option("password", secret=True, doc="password (AUTH)"),
        Option("unix_socket_path", doc="connect through this Unix socket instead of host and port"),
        Option("cluster_mode", bool, default=False, doc="talk to a Redis Cluster"),
        Option("startup_nodes", list, key="cluster.startup_nodes",
               doc="cluster nodes to start from: a list of {host, port} (default: host and port)"),
        Option("skip_full_coverage_check", bool, default=False, key="cluster.skip_full_coverage_check",
               doc="accept a cluster whose slots are not all covered"),
        Option("socket_timeout", float, default=10.0, doc="seconds to wait for the server (saline)"),
        Option("events_max", int, default=10000, doc="length the salt_events list is trimmed to (saline)"),
    )

    def __init__(self, options: dict[str, Any], master_opts: dict[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self._client: redis.Redis | RedisCluster | None = None
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._secrets = [str(v) for v in [self.opts.get("password")] if v]

    # -- connection ------------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        if self.opts.get("unix_socket_path"):
            return f"Redis at {self.opts['unix_socket_path']}"
        return f"Redis at {self.opts.get('host')}:{self.opts.get('port')}"

    def _line(self, text: str) -> str:
        return scrub(f"returner {self.name}: {' '.join(text.split())}", self._secrets)

    def _connect(self) -> redis.Redis | RedisCluster:
        common: dict[str, Any] = {"password": self.opts.get("password"), "decode_responses": True,
                                  "client_name": "saline",
                                  "socket_timeout": self.opts.get("socket_timeout"),
                                  "socket_connect_timeout": self.opts.get("socket_timeout")}
        if self.opts.get("cluster_mode"):
            nodes = [ClusterNode(str(n["host"]), int(n["port"])) for n in self.opts.get("startup_nodes") or []
                     if isinstance(n, dict)] or [ClusterNode(str(self.opts["host"]), int(self.opts["port"]))]
            try:
                client: Any = RedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), 1),
                                           require_full_coverage=not self.opts.get("skip_full_coverage_check"),
                                           **common)
            except (RedisClusterException, RedisError) as exc:
                raise self._error(exc) from None
            return client
        retry = Retry(NoBackoff(), 1)  # one quick reconnect; longer waits are the outbox's job
        if self.opts.get("unix_socket_path"):
            return redis.Redis(unix_socket_path=self.opts["unix_socket_path"], db=int(self.opts.get("db") or 0),
                               single_connection_client=True, retry=retry, **common)
        return redis.Redis(host=self.opts["host"], port=int(self.opts["port"]), db=int(self.opts.get("db") or 0),
                           single_connection_client=True, retry=retry, **common)

    def _run(self, work: Callable[[Any], T]) -> T:
        with self._lock:
            if self._client is not None and self._pid != os.getpid():
                # inherited through fork(): the parent's. Let go of it without closing it
                # (redis-py never shuts a connection down from a process that did not open it).
                self._client = None
            for attempt in (0, 1):
                fresh = self._client is None
                try:
                    if fresh:
                        self._client = self._connect()
                        self._pid = os.getpid()
                    return work(self._client)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    if isinstance(exc, AuthenticationError):
                        raise self._error(exc) from None
                    self.close()
                    if not fresh and attempt == 0:
                        continue  # a connection kept from before a server restart: once more
                    raise self._error(exc) from None
                except (RedisError, RedisClusterException) as exc:
                    raise self._error(exc) from None
            raise AssertionError("unreachable")

    def _error(self, exc: BaseException) -> ReturnerError:
        text = " ".join(str(exc).split()) or type(exc).__name__
        low = text.lower()
        auth = isinstance(exc, AuthenticationError) or any(
            w in low for w in ("wrongpass", "invalid password", "invalid username-password", "noauth",
                               "authentication required", "already authenticated"))
        if auth and not self.opts.get("password"):
            return ReturnerError(self._line(f"{self.where} asks for a password and none is set (redis.password)"))
        if auth:
            return ReturnerError(self._line(f"wrong password for {self.where} ({text})"))
        if "db index is out of range" in low:
            return ReturnerError(self._line(f"database {self.opts.get('db')} does not exist on {self.where} "
                                            "(DB index is out of range)"))
        if "cluster mode is not enabled" in low or "cluster support disabled" in low:
            return ReturnerError(self._line(f"cluster_mode is set but {self.where} is not a Redis Cluster "
                                            "(cluster support disabled)"))
        if isinstance(exc, (BusyLoadingError, ReadOnlyError)) or low.startswith(("oom ", "busy", "masterdown")):
            return BackendUnavailable(self._line(f"{self.where} cannot serve now: {text}"))
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) or (
                isinstance(exc, RedisClusterException) and "cannot be connected" in low):
            return BackendUnavailable(self._line(f"cannot connect to {self.where}: {text}"))
        if isinstance(exc, ResponseError) and "wrongtype" in low:
            return ReturnerError(self._line(f"a key saline writes holds another type of value: {text}"))
        return ReturnerError(self._line(text))

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            if client is not None and self._pid == os.getpid():
                try:
                    client.close()
                except (RedisError, OSError):
                    pass

    # -- write side ----------------------------------------------------------------------------------------
    @property
    def ttl(self) -> int:
        return max(self.keep_jobs_seconds, 0)

    def returns(self, rets: list[dict[str, Any]]) -> None:
        rets = prepare_returns(self, rets)
        if not rets:
            return
        ttl = self.ttl
        fields: dict[str, dict[str, str]] = {}
        latest: dict[str, str] = {}
        minions: list[str] = []
        for ret in rets:
            minion, jid = ret.get("id"), ret.get("jid")
            if not minion or not jid:
                missing = "id" if not minion else "jid"
                raise ReturnerError(self._line(f"a return without '{missing}' cannot be stored"))
            minion, jid = _json.text(minion), _json.text(jid)
            fields.setdefault(f"ret:{jid}", {})[minion] = _json.dumps(ret)
            key = f"{minion}:{_json.text(ret.get('fun'))}"
            if latest.get(key, "") < jid:
                latest[key] = jid
            minions.append(minion)

        def write(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for key, mapping in fields.items():
                pipe.hset(key, mapping=mapping)
                if ttl:
                    pipe.expire(key, ttl)
            for key, jid in latest.items():
                pipe.execute_command("EVAL", _SET_IF_NEWER, 1, key, jid, ttl)
            pipe.sadd(MINIONS_KEY, *sorted(set(minions)))
            pipe.execute()

        self._run(write)

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        first: dict[str, str] = {}
        for jid, load, _minions in loads:
            first.setdefault(f"load:{_json.text(jid)}", _json.dumps(load))
        if not first:
            return
        ttl = self.ttl

        def write(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for key, text in first.items():
                # the first load of a jid stays: the publish load, not a later return's payload
                pipe.set(key, text, nx=True, ex=ttl or None)
            pipe.execute()

        self._run(write)

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat()
        items = [_json.dumps({"tag": ev.get("tag"), "data": ev.get("data"), "master_id": self.master_id,
                              "alter_time": _stamp(ev.get("data")) or now}) for ev in events]
        cap = max(int(self.opts.get("events_max") or 0), 1)

        def write(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.lpush(EVENTS_KEY, *items)
            pipe.ltrim(EVENTS_KEY, 0, cap - 1)
            pipe.execute()

        self._run(write)

    # -- read side ----------------------------------------------------------------------------------------
    def get_load(self, jid: str) -> dict[str, Any]:
        text = self._run(lambda c: c.get(f"load:{jid}"))
        load = _json.loads(text, {}) if text else {}
        return load if isinstance(load, dict) else {}

    def get_jid(self, jid: str) -> dict[str, Any]:
        found = self._run(lambda c: c.hgetall(f"ret:{jid}"))
        return {minion: _json.loads(data) for minion, data in sorted(found.items()) if data}

    def get_fun(self, fun: str) -> dict[str, Any]:
        def read(client: Any) -> dict[str, Any]:
            minions = sorted(client.smembers(MINIONS_KEY))
            if not minions:
                return {}
            pipe = client.pipeline(transaction=False)
            for minion in minions:
                pipe.get(f"{minion}:{fun}")
            jids = pipe.execute()
            wanted = [(m, j) for m, j in zip(minions, jids) if j]
            if not wanted:
                return {}
            pipe = client.pipeline(transaction=False)
            for minion, jid in wanted:
                pipe.hget(f"ret:{jid}", minion)
            return {m: _json.loads(data) for (m, _), data in zip(wanted, pipe.execute()) if data}

        return self._run(read)

    def _scan(self, client: Any, pattern: str) -> Iterator[str]:
        yield from client.scan_iter(match=pattern, count=_SCAN_COUNT)

    def _loads(self) -> list[tuple[str, str]]:
        """Every ``(jid, load JSON)``, found with SCAN and read with MGET in chunks."""
        def read(client: Any) -> list[tuple[str, str]]:
            keys = sorted(set(self._scan(client, "load:*")))
            out: list[tuple[str, str]] = []
            for start in range(0, len(keys), _SCAN_COUNT):
                chunk = keys[start:start + _SCAN_COUNT]
                values = client.mget_nonatomic(chunk) if isinstance(client, RedisCluster) else client.mget(chunk)
                out.extend((k[len("load:"):], v) for k, v in zip(chunk, values) if v is not None)
            return out

        return self._run(read)

    def get_jids(self) -> dict[str, Any]:
        return jids_listing(self._loads())

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        rows = [(jid, load) for jid, load in self._loads() if not (filter_find_job and _FIND_JOB in load)]
        rows.sort(key=lambda row: row[0], reverse=True)
        return jids_filter_listing(rows[:max(int(count), 0)])

    def get_minions(self) -> list[str]:
        return sorted(self._run(lambda c: c.smembers(MINIONS_KEY)))

    # -- housekeeping ---------------------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        """Delete ``ret:<jid>`` hashes whose ``load:<jid>`` has expired (as Salt), when the job is
        older than ``keep_jobs_seconds``: returns of a job still running stay."""
        keep = self.keep_jobs_seconds
        if keep <= 0:
            return
        cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=keep)

        def clean(client: Any) -> int:
            old = [k for k in self._scan(client, "ret:*")
                   if is_jid(k[4:]) and (jid_to_datetime(k[4:]) or cutoff) < cutoff]
            removed = 0
            for start in range(0, len(old), _SCAN_COUNT):
                chunk = old[start:start + _SCAN_COUNT]
                pipe = client.pipeline(transaction=False)
                for key in chunk:
                    pipe.exists(f"load:{key[4:]}")
                gone = [key for key, alive in zip(chunk, pipe.execute()) if not alive]
                if gone:
                    pipe = client.pipeline(transaction=False)
                    for key in gone:
                        pipe.delete(key)
                    removed += sum(pipe.execute())
            return removed

        self._run(clean)

    def init_schema(self) -> None:
        """Redis needs nothing created: keys appear as they are written. Checks the server."""
        self.check()

    def check(self) -> None:
        self._run(lambda c: c.ping())


def _stamp(data: Any) -> str | None:
    """An event's own time (``_stamp``, naive UTC ISO-8601 in Salt) when it has one."""
    stamp = data.get("_stamp") if isinstance(data, dict) else None
    return stamp if isinstance(stamp, str) and stamp else None
