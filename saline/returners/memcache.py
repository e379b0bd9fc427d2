"""The ``memcache`` returner: Salt's memcached key layout over pymemcache, batches pipelined."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from typing import Any, Callable, Iterable, TypeVar
from urllib.parse import quote, unquote

from pymemcache.client.base import Client
from pymemcache.exceptions import (MemcacheClientError, MemcacheError, MemcacheIllegalInputError,
                                   MemcacheServerError, MemcacheUnexpectedCloseError, MemcacheUnknownError)

from saline.jid import is_jid
from saline.returners import _json
from saline.returners._sql import cutoff_jid, jids_listing, newest_jobs, prepare_returns
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError

T = TypeVar("T")

MINIONS_KEY = "minions"
JIDS_KEY = "jids"
_CHUNK = 200  # keys per multi-get / multi-set: one round trip each
_MAX_KEY = 250  # memcached's limit, in bytes
_RELATIVE_LIMIT = 30 * 24 * 3600  # memcached reads a longer expiry as an absolute Unix time
# characters a memcached key cannot hold (the text protocol splits on them); ``%`` is escaped
# too so that an escaped key can never equal another id's plain one
_UNSAFE = frozenset(chr(c) for c in range(0x21)) | {"\x7f", "%"}


def key_part(text: str) -> str:
    """One part of a key: the id as it is (Salt's key) unless it holds a character memcached
    refuses (space, control characters), which is percent-escaped, as is ``%`` itself."""
    if not any(ch in _UNSAFE for ch in text) and text.isprintable():
        return text
    return "".join(quote(ch, safe="") if ch in _UNSAFE or not ch.isprintable() else ch for ch in text)


def make_key(*parts: str) -> str:
    """Salt's ``a:b`` key; one over memcached's 250 bytes is replaced by a digest of itself."""
    key = ":".join(key_part(p) for p in parts)
    if len(key.encode("utf-8")) <= _MAX_KEY:
        return key
    return "saline-sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def list_entry(value: str) -> str:
    """An item of Salt's comma-separated lists (``minions``, ``jids``); a comma inside an id (which
    Salt's list could not hold) and ``%`` are percent-escaped."""
    return value.replace("%", "%25").replace(",", "%2C") if ("," in value or "%" in value) else value


def parse_list(text: str | None) -> list[str]:
    """Salt's ``a,b,c,`` list, in order, each item once."""
    if not text:
        return []
    seen: dict[str, None] = {}
    for item in text.strip(",").split(","):
        if item:
            seen.setdefault(unquote(item) if "%" in item else item, None)
    return list(seen)


class MemcacheReturner(Returner):
    """Salt's ``memcache`` returner: returns and loads as memcached keys, Salt's layout.

    Keys (values are JSON text, as Salt writes them)::

        <jid>:<minion>   JSON of that minion's return of the job        (get_jid)
        <fun>:<minion>   JSON of that minion's latest return of <fun>   (get_fun)
        <jid>            JSON of the job's load                          (get_load)
        minions          "web1,web2,": every minion that returned
        jids             "20240105123456123456,...,": every job stored

    ``get_jid`` reads ``<jid>:<minion>`` for every id in ``minions``; ``get_jids`` reads the
    load of every jid in ``jids``, as Salt does.

    Differences from Salt, all compatible with its keys: one connection per returner, kept and
    reopened after a failure (Salt made a new client per call); a batch is a few pipelined round
    trips (``set_many``, one append per list) rather than four commands per return; the first load
    of a jid is kept (``add``; Salt overwrote it with every return's payload); ``<fun>:<minion>``
    only ever moves to a newer jid (compare-and-swap), so a late or repeated delivery cannot set
    it back; the master's ``keep_jobs_seconds`` is the expiry of ``<jid>`` and
    ``<jid>:<minion>`` (0 keeps them; Salt set none) and ``clean_old_jobs`` deletes older jobs and
    prunes ``jids``; ``get_jids_filter`` exists. An id that memcached cannot hold in a key (a
    space, a control character, ``%``) is percent-escaped there, a key longer than 250 bytes
    becomes ``saline-sha256:<digest>``, and a comma inside an id is escaped in the lists: Salt
    failed on all of these.

    memcached refuses an item larger than its ``-I`` setting (1 MiB by default): such a return
    fails with one line saying so; start memcached with ``-I 16m`` (or more) for large returns.

    Example, with ``nc``::

        printf 'get minions\\r\\n' | nc -q1 localhost 11211
        printf 'get 20240105123456123456:web1\\r\\n' | nc -q1 localhost 11211
    """

    name = "memcache"
    extra = "memcache"
    summary = "memcached: Salt's <jid>:<minion> / <fun>:<minion> / <jid> keys and minions / jids lists"
    options = (
        Option("host", default="localhost", doc="server host name"),
        Option("port", int, default=11211, doc="server port"),
        Option("socket_timeout", float, default=5.0, doc="seconds to wait for the server (saline)"),
    )

    def __init__(self, options: dict[str, Any], master_opts: dict[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self._client: Client | None = None
        self._lock = threading.RLock()
        self._pid = os.getpid()

    # -- connection --------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"memcached at {self.opts.get('host')}:{self.opts.get('port')}"

    def _line(self, text: str) -> str:
        return f"returner {self.name}: {' '.join(str(text).split())}"

    def _connect(self) -> Client:
        timeout = float(self.opts.get("socket_timeout") or 5.0)
        return Client((str(self.opts["host"]), int(self.opts["port"])), connect_timeout=timeout, timeout=timeout,
                      no_delay=True, allow_unicode_keys=True, encoding="utf-8", default_noreply=False)

    def _run(self, work: Callable[[Client], T]) -> T:
        with self._lock:
            if self._client is not None and self._pid != os.getpid():
                self._client = None  # inherited through fork(): the parent's socket, leave it be
            for attempt in (0, 1):
                fresh = self._client is None
                if fresh:
                    self._client, self._pid = self._connect(), os.getpid()
                try:
                    return work(self._client)
                except (OSError, MemcacheUnexpectedCloseError, MemcacheUnknownError) as exc:
                    self.close()
                    if not fresh and attempt == 0:
                        continue  # a connection kept from before a server restart: once more
                    raise BackendUnavailable(self._line(f"cannot reach {self.where}: {_describe(exc)}")) from None
                except MemcacheServerError as exc:
                    self.close()  # the reply stream may be out of step: start clean
                    text = _describe(exc)
                    if "too large" in text.lower():
                        raise ReturnerError(self._line(
                            f"{self.where} refused an item as too large ({text}): start memcached with a "
                            "larger -I (item size), e.g. -I 16m")) from None
                    if "out of memory" in text.lower():
                        raise BackendUnavailable(self._line(f"{self.where} is out of memory: {text}")) from None
                    raise ReturnerError(self._line(f"{self.where}: {text}")) from None
                except (MemcacheClientError, MemcacheIllegalInputError, MemcacheError) as exc:
                    self.close()
                    raise ReturnerError(self._line(f"{self.where}: {_describe(exc)}")) from None
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            if client is not None and self._pid == os.getpid():
                try:
                    client.close()
                except (OSError, MemcacheError):
                    pass

    # -- helpers -------------------------------------------------------------------------------------
    def _expire(self) -> int:
        """The master's ``keep_jobs_seconds`` as memcached wants it (0: never)."""
        keep = max(self.keep_jobs_seconds, 0)
        return int(time.time()) + keep if keep > _RELATIVE_LIMIT else keep

    @staticmethod
    def _get_many(client: Client, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(keys), _CHUNK):
            found.update(client.get_many(keys[start:start + _CHUNK]))
        return found

    def _set_many(self, client: Client, values: dict[str, str], expire: int) -> None:
        items = list(values.items())
        for start in range(0, len(items), _CHUNK):
            failed = client.set_many(dict(items[start:start + _CHUNK]), expire=expire, noreply=False)
            if failed:
                raise ReturnerError(self._line(f"{self.where} did not store {len(failed)} key(s), "
                                               f"e.g. {failed[0]!r}"))

    @staticmethod
    def _append_list(client: Client, key: str, items: Iterable[str]) -> None:
        """Add ``items`` to Salt's comma list ``key`` (those already in it are left out)."""
        present = set(parse_list(_text(client.get(key))))
        new = [i for i in dict.fromkeys(items) if i not in present]
        if not new:
            return
        text = "".join(f"{list_entry(i)}," for i in new)
        for _ in range(3):
            if client.append(key, text, noreply=False) or client.add(key, text, noreply=False):
                return

    # -- write side ------------------------------------------------------------------------------------
    def returns(self, rets: list[dict[str, Any]]) -> None:
        rets = prepare_returns(self, rets)
        if not rets:
            return
        by_jid: dict[str, str] = {}
        latest: dict[str, tuple[str, str]] = {}  # <fun>:<minion> -> (jid, JSON)
        minions: list[str] = []
        jids: list[str] = []
        for ret in rets:
            minion, jid = ret.get("id"), ret.get("jid")
            if not minion or not jid:
                raise ReturnerError(self._line(f"a return without '{'id' if not minion else 'jid'}' cannot be stored"))
            minion, jid, fun = _json.text(minion), _json.text(jid), _json.text(ret.get("fun"))
            text = _json.dumps(ret)
            by_jid[make_key(jid, minion)] = text
            fun_key = make_key(fun, minion)
            if fun_key not in latest or latest[fun_key][0] <= jid:
                latest[fun_key] = (jid, text)
            minions.append(minion)
            jids.append(jid)
        expire = self._expire()

        def write(client: Client) -> None:
            self._set_many(client, by_jid, expire)
            self._set_latest(client, latest, expire)
            self._append_list(client, MINIONS_KEY, minions)
            self._append_list(client, JIDS_KEY, jids)

        self._run(write)

    def _set_latest(self, client: Client, latest: dict[str, tuple[str, str]], expire: int) -> None:
        """``<fun>:<minion>`` = the newest return: set where absent or older, never moved back."""
        keys = list(latest)
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            stored = client.gets_many(chunk)
            fresh: dict[str, str] = {}
            for key in chunk:
                jid, text = latest[key]
                if key not in stored:
                    fresh[key] = text
                    continue
                value, cas = stored[key]
                old = _json.loads(_text(value), {})
                old_jid = old.get("jid") if isinstance(old, dict) else None
                if isinstance(old_jid, str) and old_jid > jid:
                    continue  # what is stored is newer
                if not client.cas(key, text, cas, expire=expire, noreply=False):
                    fresh[key] = text  # changed meanwhile (or gone): the newest writer wins
            if fresh:
                self._set_many(client, fresh, expire)

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        first: dict[str, str] = {}
        for jid, load, _minions in loads:
            first.setdefault(_json.text(jid), _json.dumps(load))
        if not first:
            return
        expire = self._expire()

        def write(client: Client) -> None:
            for jid, text in first.items():
                # the first load of a jid stays: the publish load, not a later return's payload
                client.add(make_key(jid), text, expire=expire, noreply=True)
            keys = [make_key(j) for j in first]
            missing = [k for k in keys if k not in self._get_many(client, keys)]
            if missing:
                raise ReturnerError(self._line(f"{self.where} did not store the load {missing[0]!r} "
                                               "(larger than its item size?)"))
            self._append_list(client, JIDS_KEY, list(first))

        self._run(write)

    # -- read side ---------------------------------------------------------------------------------------
    def get_load(self, jid: str) -> dict[str, Any]:
        text = self._run(lambda c: c.get(make_key(jid)))
        load = _json.loads(_text(text), {}) if text else {}
        return load if isinstance(load, dict) else {}

    def _by_minion(self, prefix: str) -> dict[str, Any]:
        def read(client: Client) -> dict[str, Any]:
            minions = parse_list(_text(client.get(MINIONS_KEY)))
            keys = {make_key(prefix, m): m for m in minions}
            found = self._get_many(client, list(keys))
            return {keys[k]: _json.loads(_text(v)) for k, v in sorted(found.items(), key=lambda kv: keys[kv[0]])}

        return self._run(read)

    def get_jid(self, jid: str) -> dict[str, Any]:
        return self._by_minion(jid)

    def get_fun(self, fun: str) -> dict[str, Any]:
        return self._by_minion(fun)

    def _loads(self) -> list[tuple[str, str]]:
        def read(client: Client) -> list[tuple[str, str]]:
            jids = parse_list(_text(client.get(JIDS_KEY)))
            keys = {make_key(j): j for j in jids}
            found = self._get_many(client, list(keys))
            return [(keys[k], _text(v)) for k, v in found.items()]

        return self._run(read)

    def get_jids(self) -> dict[str, Any]:
        return jids_listing(sorted(self._loads()))

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        return newest_jobs(self._loads(), count, filter_find_job)

    def get_minions(self) -> list[str]:
        return sorted(self._run(lambda c: parse_list(_text(c.get(MINIONS_KEY)))))

    # -- housekeeping ---------------------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        """Delete the load and returns of jobs older than ``keep_jobs_seconds`` and drop them from
        ``jids`` (they also expire by themselves; this catches those written without expiry)."""
        keep = self.keep_jobs_seconds
        if keep <= 0:
            return
        cutoff = cutoff_jid(keep)

        def clean(client: Client) -> None:
            for _ in range(5):
                value, cas = client.gets(JIDS_KEY)
                jids = parse_list(_text(value))
                old = [j for j in jids if is_jid(j) and j[:20] < cutoff]
                if not old:
                    return
                minions = parse_list(_text(client.get(MINIONS_KEY)))
                doomed = [make_key(j) for j in old] + [make_key(j, m) for j in old for m in minions]
                for start in range(0, len(doomed), _CHUNK):
                    client.delete_many(doomed[start:start + _CHUNK], noreply=False)
                rest = "".join(f"{list_entry(j)}," for j in jids if j not in set(old))
                if client.cas(JIDS_KEY, rest, cas, noreply=False):
                    return

        self._run(clean)

    def init_schema(self) -> None:
        """memcached needs nothing created: keys appear as they are written. Checks the server."""
        self.check()

    def check(self) -> None:
        self._run(lambda c: c.version())


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__
