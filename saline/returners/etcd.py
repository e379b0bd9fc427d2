"""The ``etcd`` returner: Salt's etcd v2 key layout, written over pipelined HTTP/1.1."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, NamedTuple, NoReturn
from urllib.parse import quote, urlencode

from saline.jid import is_jid
from saline.returners import _json
from saline.returners._sql import cutoff_jid, jids_listing, newest_jobs, prepare_returns
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError
from saline.returners.options import scrub

LOAD_KEY = ".load.p"
# etcd v2 error codes: key not found, compare failed, not a file, key exists
_NOT_FOUND, _COMPARE_FAILED, _NOT_A_FILE, _EXISTS = 100, 101, 102, 105
_PROFILE_KEYS = ("host", "port", "username", "password", "ttl")
_WINDOW = 1000  # requests sent on a connection before their answers are read ...
_WINDOW_BYTES = 256 * 1024  # ... or this many bytes of them
_MIN_PER_CONNECTION = 32


class EtcdReturner(Returner):
    """Salt's ``etcd`` returner: each field of a return as its own etcd v2 key, Salt's layout.

    Keys under ``etcd.returner_root`` (default ``/salt/return``; values are JSON text)::

        <root>/minions/<id>              the jid of that minion's latest job
        <root>/jobs/<jid>/<id>/<field>   JSON of ret[<field>], for every field of the return
        <root>/jobs/<jid>/.load.p        JSON of the job's load
        <root>/funs/<fun>/<id>           (saline) the jid of that minion's latest <fun>

    Connection options as Salt's: ``etcd.host``, ``etcd.port``, ``etcd.username``,
    ``etcd.password``, ``etcd.ttl`` (seconds every key lives; unset: forever), or a profile: with
    ``etcd.returner: my_etcd`` the top-level map ``my_etcd: {etcd.host: …, etcd.port: …}``
    supplies them (``etcd.returner_write_profile`` / ``etcd.returner_read_profile`` name
    separate profiles for writing and reading, and the write profile's ``etcd.ttl`` is used).

    The client is plain HTTP/1.1 over the standard library's sockets, no driver to install: the
    v2 client Salt used, python-etcd, has had no release since 2018, and the maintained clients
    (etcd3, etcd3-py) speak only the v3 API, whose keys the v2 API cannot see. The v2 API takes
    one key per request, so a batch is sent pipelined (many requests written before their answers
    are read) over up to ``workers`` kept connections: about 20,000 keys a second here, where a
    request-and-wait client (httpx) managed about 1,000. etcd 3.4 must run with
    ``--enable-v2=true``.

    Differences from Salt, all compatible with its keys: ``get_jids`` gives Salt's
    ``{jid: {Function, Arguments, …}}`` (Salt's gave a list of jids, which broke
    ``jobs.list_jobs``) and ``get_jids_filter`` exists; ``get_jid`` gives each minion's whole
    return (Salt's only ``{"return": …}``) except ``_stamp``, which etcd v2 hides from listings
    (keys starting with ``_``); ``get_fun`` gives each minion's latest return of the function,
    found through ``<root>/funs`` (Salt looked only at each minion's very latest job and gave the
    function's name); the first load of a jid is kept (Salt overwrote it with each return's
    payload); ``minions/<id>`` and ``funs/<fun>/<id>`` only ever move to a newer jid;
    ``clean_old_jobs`` deletes jobs older than the master's ``keep_jobs_seconds`` (Salt's did
    nothing; ``etcd.ttl`` still applies as well).

    etcd refuses a request larger than its ``--max-request-bytes`` (1.5 MiB by default): a
    larger return fails with one line saying so.

    Example, with ``curl``::

        curl -s 'http://127.0.0.1:2379/v2/keys/salt/return/minions?recursive=true'
        curl -s http://127.0.0.1:2379/v2/keys/salt/return/jobs/20240105123456123456/web1/return
    """

    name = "etcd"
    extra = None
    summary = "etcd (v2 API): Salt's <root>/jobs/<jid>/<id>/<field> and <root>/minions/<id> keys"
    options = (
        Option("host", default="127.0.0.1", doc="server host name"),
        Option("port", int, default=2379, doc="server client port"),
        Option("username", doc="user name (etcd authentication)"),
        Option("password", secret=True, doc="password (etcd authentication)"),
        Option("ttl", int, doc="seconds each key lives (unset: forever)"),
        Option("returner_root", default="/salt/return", doc="the folder of every key the returner writes"),
        Option("returner", doc="name of a top-level profile map holding etcd.host, etcd.port, …"),
        Option("returner_read_profile", doc="profile used for reading (jobs runner)"),
        Option("returner_write_profile", doc="profile used for writing (its etcd.ttl too)"),
        Option("protocol", default="http", doc="http or https (saline)"),
        Option("timeout", float, default=10.0, doc="seconds to wait for the server (saline)"),
        Option("workers", int, default=8, doc="connections a batch is spread over (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self._idle: dict[str, list[_Pipe]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._workers = max(int(self.opts.get("workers") or 1), 1)
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._conn = {"write": self._profile(self.opts.get("returner_write_profile")),
                      "read": self._profile(self.opts.get("returner_read_profile"))}
        self._secrets = [str(c["password"]) for c in self._conn.values() if c.get("password")]
        self.root = "/" + str(self.opts.get("returner_root") or "/salt/return").strip("/")

    def _profile(self, name: str | None) -> dict[str, Any]:
        """Connection settings: the named profile (or ``etcd.returner``'s) when there is one,
        else the options; Salt reads ``etcd.host`` … inside the profile map."""
        name = name or self.opts.get("returner")
        conn = {k: self.opts.get(k) for k in _PROFILE_KEYS}
        profile = self.master_opts.get(name) if name else None
        if name and not isinstance(profile, Mapping):
            raise ReturnerError(self._line(f"profile '{name}' is not a map in the config"))
        if isinstance(profile, Mapping):
            nested = profile.get("etcd") if isinstance(profile.get("etcd"), Mapping) else {}
            for key in _PROFILE_KEYS:
                value = profile.get(f"etcd.{key}", nested.get(key))
                if value not in (None, ""):
                    conn[key] = int(value) if key in ("port", "ttl") else str(value)
        return conn

    # -- connection -------------------------------------------------------------------------------
    def _line(self, text: str) -> str:
        return scrub(f"returner {self.name}: {' '.join(str(text).split())}", getattr(self, "_secrets", []))

    def where(self, side: str) -> str:
        conn = self._conn[side]
        return f"etcd at {conn['host']}:{conn['port']}"

    def _checkout(self, side: str) -> _Pipe:
        with self._lock:
            if self._pid != os.getpid():  # inherited through fork(): the parent's sockets, leave them
                self._idle, self._pool, self._pid = {}, None, os.getpid()
            idle = self._idle.setdefault(side, [])
            if idle:
                return idle.pop()
        conn = self._conn[side]
        return _Pipe(str(conn["host"]), int(conn["port"]), float(self.opts.get("timeout") or 10.0),
                     str(self.opts.get("protocol") or "http") == "https", conn.get("username"), conn.get("password"))

    def _checkin(self, side: str, pipe: _Pipe) -> None:
        with self._lock:
            if self._pid == os.getpid() and len(self._idle.setdefault(side, [])) < self._workers:
                self._idle[side].append(pipe)
                return
        pipe.close()

    def _run_on_one(self, side: str, requests: list[_Request]) -> list[tuple[int, bytes]]:
        pipe = self._checkout(side)
        kept = pipe.used
        try:
            try:
                answers = pipe.run(requests)
            except (OSError, _BadResponse):
                pipe.close()
                if not kept:
                    raise
                # a kept connection the server closed meanwhile: once more on a new one (every
                # request here is safe to repeat: a set, or a compare-and-swap that then fails)
                pipe = self._checkout(side)
                answers = pipe.run(requests)
        except (OSError, _BadResponse) as exc:
            pipe.close()
            raise BackendUnavailable(self._line(f"cannot reach {self.where(side)}: {_describe(exc)}")) from None
        self._checkin(side, pipe)
        return answers

    def _batch(self, side: str, requests: list[_Request], ok: tuple[int, ...] = ()) -> list[dict[str, Any] | None]:
        """Run ``requests`` pipelined over up to ``workers`` connections; each answer, or None for
        an etcd error code listed in ``ok``."""
        if not requests:
            return []
        per = max(len(requests) // self._workers + 1, _MIN_PER_CONNECTION)
        chunks = [requests[i:i + per] for i in range(0, len(requests), per)]
        if len(chunks) == 1:
            answers = self._run_on_one(side, chunks[0])
        else:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self._workers, "saline-etcd")
                pool = self._pool
            answers = [a for part in pool.map(lambda c: self._run_on_one(side, c), chunks) for a in part]
        return [self._answer(side, status, body, ok) for status, body in answers]

    def _answer(self, side: str, status: int, raw: bytes, ok: tuple[int, ...]) -> dict[str, Any] | None:
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        code = body.get("errorCode") if isinstance(body, dict) else None
        if status < 300 and code is None:
            return body
        if code in ok:
            return None
        message = body.get("message") if isinstance(body, dict) else None
        cause = body.get("cause") if isinstance(body, dict) else None
        text = f"{message} ({cause})" if message and cause else (message or raw[:200].decode("utf-8", "replace"))
        where = self.where(side)
        if status == 401:
            return _raise(ReturnerError(self._line(f"{where} refused the user name or password: {text}")))
        if status == 404 and not message:
            return _raise(ReturnerError(self._line(f"{where} has no v2 API (start etcd with --enable-v2=true)")))
        if status == 413 or "too large" in str(text).lower():
            return _raise(ReturnerError(self._line(f"{where} refused a request as too large ({text}): "
                                                   "raise etcd's --max-request-bytes")))
        if status >= 500 or status == 429:
            return _raise(BackendUnavailable(self._line(f"{where} cannot serve now: HTTP {status} {text}")))
        return _raise(ReturnerError(self._line(f"{where}: HTTP {status} {text}")))

    def _request(self, side: str, method: str, key: str, *, params: dict[str, Any] | None = None,
                 value: str | None = None, ok: tuple[int, ...] = ()) -> dict[str, Any] | None:
        return self._batch(side, [_Request(method, key, params, value)], ok)[0]

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
            pool, self._pool = self._pool, None
            mine = self._pid == os.getpid()
        if pool is not None and mine:
            pool.shutdown(wait=True)
        for pipes in idle.values():
            for pipe in pipes:
                if mine:
                    pipe.close()

    # -- helpers ---------------------------------------------------------------------------------------
    def _ttl(self) -> dict[str, Any]:
        ttl = self._conn["write"].get("ttl")
        return {"ttl": int(ttl)} if ttl else {}

    def _set(self, key: str, value: str, **params: Any) -> _Request:
        return _Request("PUT", key, {**self._ttl(), **params} or None, value)

    def _children(self, side: str, key: str, recursive: bool = False) -> list[dict[str, Any]]:
        found = self._request(side, "GET", key, params={"recursive": "true"} if recursive else None, ok=(_NOT_FOUND,))
        return list(((found or {}).get("node") or {}).get("nodes") or [])

    def _move_forward(self, latest: dict[str, str]) -> None:
        """Each key of ``latest`` (``<folder>/<name>``) = the newest jid: set where absent or
        older (compare-and-swap on etcd's index), never moved back."""
        stored: dict[str, dict[str, Any] | None] = {}
        for folder in {key.rsplit("/", 1)[0] for key in latest}:
            stored.update({n["key"]: n for n in self._children("write", folder) if not n.get("dir")})
        pending = dict(latest)
        for _ in range(5):
            requests, keys = [], []
            for key, jid in pending.items():
                node = stored.get(_stored_key(key))
                if node is None:
                    requests.append(self._set(key, jid, prevExist="false"))
                elif str(node.get("value")) < jid:
                    requests.append(self._set(key, jid, prevIndex=node["modifiedIndex"]))
                else:
                    continue
                keys.append(key)
            lost = [k for k, answer in zip(keys, self._batch("write", requests, ok=(_EXISTS, _COMPARE_FAILED)))
                    if answer is None]
            if not lost:
                return
            # changed meanwhile by another writer: look again and retry those
            fresh = self._batch("write", [_Request("GET", k) for k in lost], ok=(_NOT_FOUND,))
            pending = {k: latest[k] for k in lost}
            stored.update({_stored_key(k): (f or {}).get("node") for k, f in zip(lost, fresh)})

    # -- write side -------------------------------------------------------------------------------------
    def returns(self, rets: list[dict[str, Any]]) -> None:
        rets = prepare_returns(self, rets)
        if not rets:
            return
        writes: dict[str, str] = {}
        latest: dict[str, str] = {}
        for ret in rets:
            minion, jid = ret.get("id"), ret.get("jid")
            if not minion or not jid:
                raise ReturnerError(self._line(f"a return without '{'id' if not minion else 'jid'}' cannot be stored"))
            minion, jid = _json.text(minion), _json.text(jid)
            for field, value in ret.items():
                writes[f"{self.root}/jobs/{jid}/{minion}/{_json.text(field)}"] = _json.dumps(value)
            for key in (f"{self.root}/minions/{minion}", f"{self.root}/funs/{_json.text(ret.get('fun'))}/{minion}"):
                if latest.get(key, "") < jid:
                    latest[key] = jid
        self._batch("write", [self._set(k, v) for k, v in writes.items()])
        self._expire_folders({k.rsplit("/", 1)[0] for k in writes} | {k.rsplit("/", 2)[0] for k in writes})
        self._move_forward(latest)

    def _expire_folders(self, folders: set[str]) -> None:
        """With ``etcd.ttl``, a job's folders get the TTL of their keys, so they go with them
        rather than stay behind empty (etcd v2 keeps a folder whose keys expired)."""
        ttl = self._ttl()
        if ttl:
            self._batch("write", [_Request("PUT", f, {**ttl, "dir": "true", "prevExist": "true"})
                                  for f in sorted(folders)], ok=(_NOT_FOUND, _NOT_A_FILE))

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        first: dict[str, str] = {}
        for jid, load, _minions in loads:
            first.setdefault(_json.text(jid), _json.dumps(load))
        # the first load of a jid stays: the publish load, not a later return's payload
        self._batch("write", [self._set(f"{self.root}/jobs/{jid}/{LOAD_KEY}", text, prevExist="false")
                              for jid, text in first.items()], ok=(_EXISTS,))
        self._expire_folders({f"{self.root}/jobs/{jid}" for jid in first})

    # -- read side ---------------------------------------------------------------------------------------
    def get_load(self, jid: str) -> dict[str, Any]:
        found = self._request("read", "GET", f"{self.root}/jobs/{jid}/{LOAD_KEY}", ok=(_NOT_FOUND,))
        load = _json.loads((found or {}).get("node", {}).get("value"), {}) if found else {}
        return load if isinstance(load, dict) else {}

    def _returns_of(self, minion_node: dict[str, Any]) -> dict[str, Any]:
        return {_last(f["key"]): _json.loads(f.get("value")) for f in minion_node.get("nodes") or []
                if not f.get("dir")}

    def get_jid(self, jid: str) -> dict[str, Any]:
        out = {}
        for node in self._children("read", f"{self.root}/jobs/{jid}", recursive=True):
            fields = self._returns_of(node) if node.get("dir") else None
            if fields:  # (a folder whose keys all expired is left empty: not a return)
                out[_last(node["key"])] = fields
        return dict(sorted(out.items()))

    def get_fun(self, fun: str) -> dict[str, Any]:
        latest = {_last(n["key"]): str(n.get("value")) for n in self._children("read", f"{self.root}/funs/{fun}")
                  if not n.get("dir")}

        found = self._batch("read", [_Request("GET", f"{self.root}/jobs/{jid}/{minion}", {"recursive": "true"})
                                     for minion, jid in latest.items()], ok=(_NOT_FOUND,))
        out = {m: self._returns_of((f or {}).get("node") or {}) for m, f in zip(latest, found)}
        return {m: r for m, r in sorted(out.items()) if r}

    def _jobs(self) -> list[tuple[str, Any]]:
        """Every job folder as ``(jid, load)`` (an empty dict where it has no load)."""
        jids = [_last(n["key"]) for n in self._children("read", f"{self.root}/jobs") if n.get("dir")]

        listings = self._batch("read", [_Request("GET", f"{self.root}/jobs/{jid}") for jid in jids], ok=(_NOT_FOUND,))
        rows = []
        for jid, listing in zip(jids, listings):
            nodes = ((listing or {}).get("node") or {}).get("nodes") or []
            load = next((n.get("value") for n in nodes if _last(n["key"]) == LOAD_KEY), None)
            if load is None and not any(n.get("dir") for n in nodes):
                continue  # every key of it expired (etcd.ttl): only the empty folder is left
            parsed = _json.loads(load, {}) if load is not None else {}
            rows.append((jid, parsed if isinstance(parsed, dict) else {}))
        return rows

    def get_jids(self) -> dict[str, Any]:
        return jids_listing(sorted(self._jobs()))

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        return newest_jobs(self._jobs(), count, filter_find_job)

    def get_minions(self) -> list[str]:
        return sorted(_last(n["key"]) for n in self._children("read", f"{self.root}/minions") if not n.get("dir"))

    # -- housekeeping ---------------------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        """Delete the folders of jobs older than the master's ``keep_jobs_seconds``."""
        keep = self.keep_jobs_seconds
        if keep <= 0:
            return
        cutoff = cutoff_jid(keep)
        old = [_last(n["key"]) for n in self._children("write", f"{self.root}/jobs") if n.get("dir")]
        old = [j for j in old if is_jid(j) and j[:20] < cutoff]
        self._batch("write", [_Request("DELETE", f"{self.root}/jobs/{jid}", {"recursive": "true", "dir": "true"})
                              for jid in old], ok=(_NOT_FOUND,))

    def init_schema(self) -> None:
        """etcd needs nothing created: keys appear as they are written. Checks the server."""
        self.check()

    def check(self) -> None:
        for side in ("write", "read"):
            self._request(side, "GET", self.root, ok=(_NOT_FOUND,))


def _stored_key(key: str) -> str:
    """A key as etcd shows it in listings (its path cleaned: one leading slash, no doubles)."""
    return "/" + "/".join(part for part in key.split("/") if part)


def _last(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def _raise(exc: ReturnerError) -> NoReturn:
    raise exc


class _Request(NamedTuple):
    method: str
    key: str
    params: dict[str, Any] | None = None
    value: str | None = None

    def encode(self, host: str, auth: str | None) -> bytes:
        path = "/v2/keys" + "/".join(quote(part, safe="") for part in self.key.split("/"))
        if self.params:
            path += "?" + urlencode(self.params)
        body = b"" if self.value is None else urlencode({"value": self.value}).encode("ascii")
        head = [f"{self.method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
        if self.value is not None:
            head.append("Content-Type: application/x-www-form-urlencoded")
        if auth:
            head.append(f"Authorization: Basic {auth}")
        return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


class _BadResponse(Exception):
    """The server's answer was not HTTP/1.1 as expected (cut off, or not HTTP at all)."""


class _Pipe:
    """One kept HTTP/1.1 connection that sends requests pipelined, a window at a time.

    The v2 API takes one key per request; sending many before reading their answers makes a
    batch one stream instead of thousands of round trips (etcd answers them in order).
    """

    def __init__(self, host: str, port: int, timeout: float, tls: bool, user: str | None, password: str | None) -> None:
        self.host, self.port, self.timeout, self.tls = host, port, timeout, tls
        self.auth = base64.b64encode(f"{user}:{password or ''}".encode()).decode() if user else None
        self.sock: socket.socket | None = None
        self.file: Any = None
        self.used = False

    def _open(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        self.sock, self.file = sock, sock.makefile("rb")

    def run(self, requests: list[_Request]) -> list[tuple[int, bytes]]:
        if self.sock is None:
            self._open()
        assert self.sock is not None
        out: list[tuple[int, bytes]] = []
        pending: list[bytes] = []
        size = 0
        for number, request in enumerate(requests, 1):
            data = request.encode(self.host, self.auth)
            pending.append(data)
            size += len(data)
            if len(pending) >= _WINDOW or size >= _WINDOW_BYTES or number == len(requests):
                # a bounded window: etcd's answers (which repeat the values) must fit the socket
                # buffers while the rest is still being sent, or both sides would wait forever
                self.sock.sendall(b"".join(pending))
                out.extend(self._read() for _ in pending)
                pending, size = [], 0
        self.used = True
        return out

    def _read(self) -> tuple[int, bytes]:
        line = self.file.readline(65537)
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise _BadResponse("connection closed" if not line else f"not an HTTP answer: {line[:60]!r}")
        status, length, chunked, close = int(parts[1]), None, False, False
        while True:
            header = self.file.readline(65537)
            if header in (b"\r\n", b"\n"):
                break
            if not header:
                raise _BadResponse("connection closed")
            name, _, value = header.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                close = True
        if chunked:
            body = bytearray()
            while True:
                size = int(self.file.readline(65537).split(b";")[0], 16)
                if size == 0:
                    while self.file.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.file.read(size)
                self.file.readline(65537)
            data = bytes(body)
        else:
            data = self.file.read(length or 0)
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        for thing in (self.file, self.sock):
            try:
                if thing is not None:
                    thing.close()
            except OSError:
                pass
        self.sock = self.file = None
        self.used = False
