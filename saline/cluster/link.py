"""What one master shares with the other masters of its cluster, besides the outbox and the keys.

* **Jobs.** A master that publishes a job writes it to the KV bucket ``jobs`` (load, expected
  minions, timeout; kept ``keep_jobs``), then announces it on ``saline.<cluster>.job``. Every other
  master registers it and sends it on its own publish socket, to the minions connected to it; a
  minion's return to any master is then recognised as targeted. A master that missed an
  announcement (it was restarting) finds the job in the bucket when a return for it comes.
* **Live returns and events.** Every record a master stores goes through the stream's subjects,
  which plain subscribers see too: each master fires the records the others stored on its own
  event bus, so ``saline '*' test.ping`` on master A streams the returns that reached master B,
  and ``state.event`` shows the whole cluster.
* **Presence and liveness.** Each master writes which minions are connected to it (bucket
  ``presence``, a few seconds' TTL, rewritten while it lives) and that it is alive (bucket
  ``masters``), so "not connected" means connected to no master at all, and ``manage.masters``
  lists the masters with their minions.

Announcements and live records travel as plain NATS messages, which a master whose connection
is down at that moment never gets. Both are also stored (the ``jobs`` bucket is a stream, and so
are the records): after a reconnect the master reads what was stored from a moment before it lost
the connection, and handles what it had not seen (jobs by jid, records by content).

Everything the master gets from here is handed to its own event loop (``call_soon_threadsafe``):
the master's code never runs on the bridge's thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from typing import Any, Callable

from saline import recordlog
from saline.cluster.bridge import NatsBridge
from saline.cluster.config import ClusterConfig, escape_token, unescape_token
from saline.cluster.streamread import read_stream

log = logging.getLogger(__name__)

#: how often a master says it is alive and who is connected to it (and the TTL is three times it)
HEARTBEAT_SECONDS = 2.0
#: how long announcing a job may hold the publishing master's loop
ANNOUNCE_TIMEOUT = 3.0
#: ... and looking up a job another master published
LOOKUP_TIMEOUT = 3.0
#: after a reconnect, what was stored from this long before the connection was lost is read again
CATCH_UP_MARGIN = 1.0
#: how long a catch-up keeps trying while the streams elect a leader, before it gives up (one line)
CATCH_UP_FOR = 60.0
#: jobs and records recognised as already handled when a catch-up reads them again
SEEN_JOBS = 10_000
SEEN_RECORDS = 50_000


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ClusterLink:
    def __init__(self, bridge: NatsBridge, config: ClusterConfig, master_id: str, loop: asyncio.AbstractEventLoop,
                 on_job: Callable[[dict[str, Any]], None], on_record: Callable[[str, str, dict, Any], None],
                 connected: Callable[[], set[str]], keep_seconds: float) -> None:
        """``on_job(announcement)`` and ``on_record(kind, subject, headers, body)`` (the record as
        stored, packed: most are never looked into) run on the master's ``loop``; ``connected()`` (called there too) gives the minions connected to this master."""
        self.bridge = bridge
        self.config = config
        self.master_id = master_id
        self.loop = loop
        self.on_job = on_job
        self.on_record = on_record
        self.connected = connected
        self.keep_seconds = keep_seconds
        self._presence: dict[str, tuple[float, frozenset[str]]] = {}  # master -> (when, minions)
        self._masters: dict[str, dict[str, Any]] = {}
        self._jobs_kv: Any = None
        self._presence_kv: Any = None
        self._masters_kv: Any = None
        self._subs: list[Any] = []
        self._tasks: list[Any] = []
        self._local: frozenset[str] = frozenset()
        self._changed = asyncio.Event()  # set from the master's loop: use only through call_soon_threadsafe
        self._seen_jobs: OrderedDict[str, None] = OrderedDict()
        self._seen_records: OrderedDict[int, None] = OrderedDict()
        self._catching_up: asyncio.Task | None = None
        # records for the master's loop, handed over in bursts: one wake-up of that loop per burst
        self._records_out: deque[tuple[str, str, dict[str, str], bytes]] = deque()
        self._hand_over_due = False

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the buckets (waiting for a cluster still forming), then follow the others."""
        self.bridge.set_up(self._open_buckets, "cluster link", self.config.setup_timeout)
        self.bridge.call(self._start(), timeout=30)
        self._local = frozenset(self.connected())

    async def _open_buckets(self) -> None:
        self._jobs_kv = await self._bucket("jobs", ttl=self.keep_seconds or None)
        self._presence_kv = await self._bucket("presence", ttl=HEARTBEAT_SECONDS * 3)
        self._masters_kv = await self._bucket("masters", ttl=HEARTBEAT_SECONDS * 3)

    async def _start(self) -> None:
        nc = self.bridge.nc
        self._subs.append(await nc.subscribe(self.config.jobs_subject, cb=self._job_message))
        self._subs.append(await nc.subscribe(self.config.records_subject, cb=self._record_message))
        self._tasks.append(asyncio.create_task(self._heartbeat()))
        self._tasks.append(asyncio.create_task(self._watch_presence()))
        self.bridge.on_reconnect.append(self._on_reconnect)

    async def _bucket(self, what: str, ttl: float | None) -> Any:
        from nats.js.errors import BucketNotFoundError

        js = self.bridge.js
        name = self.config.bucket(what)
        try:
            return await js.key_value(name)
        except BucketNotFoundError:
            params: dict[str, Any] = {"bucket": name, "replicas": self.config.replicas, "history": 1}
            if ttl:
                params["ttl"] = float(ttl)
            return await js.create_key_value(**params)

    def stop(self) -> None:
        if self._on_reconnect in self.bridge.on_reconnect:
            self.bridge.on_reconnect.remove(self._on_reconnect)

        async def stop() -> None:
            if self._catching_up is not None:
                self._catching_up.cancel()
            for task in self._tasks:
                task.cancel()
            for sub in self._subs:
                try:
                    await sub.unsubscribe()
                except Exception:  # closing anyway
                    pass
            try:  # the others need not wait for the TTL to know this master is gone
                await self._masters_kv.delete(escape_token(self.master_id))
                await self._presence_kv.delete(escape_token(self.master_id))
            except Exception as exc:
                log.debug("cluster: leaving: %s", _one_line(exc))

        try:
            self.bridge.call(stop(), timeout=10)
        except Exception as exc:
            log.debug("cluster: stopping: %s", _one_line(exc))

    # -- jobs ------------------------------------------------------------------------------------
    def announce_job(self, jid: str, load: dict[str, Any], shown: dict[str, Any], minions: list[str], timeout: float,
                     wire: bytes) -> None:
        """Write the job where every master finds it, then tell them (the minions connected to
        the others get it from them). ``load`` is the job as the masters deliver its returns (with
        secret ``--return_kwargs``: the stream and buckets are the cluster's own), ``shown`` the
        same with secrets masked, for event buses. Raises on failure: the job is then not
        published at all."""
        # the wire form is stored too: a master that missed the announcement sends it from there
        body = recordlog.pack({"jid": jid, "load": load, "shown": shown, "minions": minions, "timeout": timeout,
                               "origin": self.master_id, "wire": wire})

        async def announce() -> None:
            await self._jobs_kv.put(escape_token(jid), body)
            await self.bridge.nc.publish(self.config.jobs_subject, body, headers={"Saline-Origin": self.master_id})
            await self.bridge.nc.flush(timeout=ANNOUNCE_TIMEOUT)

        # on the master's loop: a connection that is down refuses the job at once
        self.bridge.call_connected(announce(), timeout=ANNOUNCE_TIMEOUT + 1)

    def find_job(self, jid: str) -> dict[str, Any] | None:
        """A job another master published (from the bucket), or None when there is none;
        ConnectionError when the bucket cannot be asked now (a caller must not take that for
        "no such job": a minion told its return was not targeted drops it)."""
        from nats.js.errors import KeyNotFoundError

        async def get() -> dict[str, Any] | None:
            try:
                entry = await self._jobs_kv.get(escape_token(jid))
            except KeyNotFoundError:
                return None
            return recordlog.unpack(entry.value) if entry.value else None

        try:
            return self.bridge.call_connected(get(), timeout=LOOKUP_TIMEOUT)
        except Exception as exc:
            raise ConnectionError(f"cannot look up job {jid} in the cluster: {_one_line(exc)}") from None

    async def _job_message(self, msg: Any) -> None:
        if (msg.headers or {}).get("Saline-Origin") == self.master_id:
            return
        self._job(msg.data)

    def _job(self, data: bytes) -> None:
        try:
            job = recordlog.unpack(data)
        except Exception as exc:
            log.warning("cluster: unreadable job announcement ignored: %s", _one_line(exc))
            return
        if not isinstance(job, dict) or job.get("origin") == self.master_id:
            return
        jid = str(job.get("jid"))
        if jid in self._seen_jobs:
            return  # read again by a catch-up
        self._seen_jobs[jid] = None
        if len(self._seen_jobs) > SEEN_JOBS:
            self._seen_jobs.popitem(last=False)
        self.loop.call_soon_threadsafe(self.on_job, job)

    async def _record_message(self, msg: Any) -> None:
        headers = msg.headers or {}
        if headers.get("Saline-Origin") == self.master_id:
            return
        key = hash((msg.subject, msg.data))
        if key in self._seen_records:
            return  # read again by a catch-up
        self._seen_records[key] = None
        if len(self._seen_records) > SEEN_RECORDS:
            self._seen_records.popitem(last=False)
        parts = msg.subject.split(".", 4)
        kind = parts[3] if len(parts) > 3 else ""
        # appended before the flag is read, and the flag cleared before the deque is drained: a
        # record is either drained by a hand-over already due, or makes another one due
        self._records_out.append((kind, msg.subject, headers, msg.data))
        if not self._hand_over_due:
            self._hand_over_due = True
            self.loop.call_soon_threadsafe(self._hand_over_records)

    def _hand_over_records(self) -> None:
        """On the master's loop: every record that came since the last hand-over, to on_record."""
        self._hand_over_due = False
        records = self._records_out
        while records:
            self.on_record(*records.popleft())

    # -- catching up after a reconnect ----------------------------------------------------------
    def _on_reconnect(self) -> None:
        since = self.bridge.disconnected_at
        if since is None:
            return
        if self._catching_up is not None:
            self._catching_up.cancel()  # the new one starts earlier or at the same time
        self._catching_up = asyncio.ensure_future(self._catch_up(since - CATCH_UP_MARGIN))

    async def _catch_up(self, since: float) -> None:
        """Jobs announced and records stored since ``since``, from the streams, for what the
        plain subscriptions missed while the connection was down. The streams may be electing
        a leader just then (a node died): tried again until they answer."""
        jobs = self.config.bucket("jobs")
        deadline = time.monotonic() + CATCH_UP_FOR
        pending = [(f"KV_{jobs}", f"$KV.{jobs}.>", lambda m: self._job(m.data)),
                   (self.config.stream, self.config.records_subject, self._record_message)]
        while pending:
            stream, subject, handle = pending[0]
            try:
                n = await read_stream(self.bridge.js, stream, subject, handle, since=since, inactive=CATCH_UP_FOR)
                log.info("cluster: caught up on %s after a reconnect (%d read again)", stream, n)
                pending.pop(0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() > deadline:
                    log.warning("cluster: cannot read %s after a reconnect (%s); jobs or returns announced while "
                                "this master was disconnected may not reach it", stream, _one_line(exc))
                    pending.pop(0)
                    continue
                log.debug("cluster: reading %s after a reconnect: %s; trying again", stream, _one_line(exc))
                await asyncio.sleep(0.5)

    # -- presence --------------------------------------------------------------------------------
    def connected_anywhere(self) -> set[str]:
        """Minions connected to this master or to another live one."""
        out = set(self._local)
        now = time.time()
        for master, (when, minions) in list(self._presence.items()):
            if master != self.master_id and now - when <= HEARTBEAT_SECONDS * 3:
                out |= minions
        return out

    def masters(self) -> dict[str, dict[str, Any]]:
        """The live masters: when each last said so, and how many minions are connected to it."""
        now = time.time()
        return {m: {"seen_s_ago": round(now - when, 1), "minions": len(minions)}
                for m, (when, minions) in self._presence.items() if now - when <= HEARTBEAT_SECONDS * 3}

    def refresh_local(self, minions: set[str]) -> None:
        """The minions connected to this master now (the master calls it on its loop, every tick):
        a change is told to the others at once, not at the next heartbeat, so that no master
        takes a minion that just connected here for one connected nowhere."""
        now = frozenset(minions)
        if now != self._local:
            self._local = now
            self.bridge.loop.call_soon_threadsafe(self._changed.set)

    async def _heartbeat(self) -> None:
        key = escape_token(self.master_id)
        while True:
            try:
                body = recordlog.pack({"at": time.time(), "minions": sorted(self._local)})
                await self._presence_kv.put(key, body)
                await self._masters_kv.put(key, recordlog.pack({"at": time.time(), "minions": len(self._local)}))
            except Exception as exc:
                log.debug("cluster: heartbeat: %s", _one_line(exc))
            self._changed.clear()
            try:  # every HEARTBEAT_SECONDS, or at once when the connected minions changed
                await asyncio.wait_for(self._changed.wait(), HEARTBEAT_SECONDS)
                await asyncio.sleep(0.1)  # (a burst of connections is told in one write)
            except asyncio.TimeoutError:
                pass

    async def _watch_presence(self) -> None:
        while True:
            try:
                import nats.errors

                watcher = await self._presence_kv.watchall()
                while True:
                    try:
                        entry = await watcher.updates(timeout=HEARTBEAT_SECONDS * 5)
                    except (nats.errors.TimeoutError, asyncio.TimeoutError):
                        continue  # quiet: every master rewrites its entry every few seconds
                    if entry is None:
                        continue
                    master = unescape_token(entry.key)
                    if entry.operation in ("DEL", "PURGE") or entry.value is None:
                        self._presence.pop(master, None)
                        continue
                    data = recordlog.unpack(entry.value)
                    self._presence[master] = (float(data.get("at") or time.time()), frozenset(data.get("minions") or ()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the watch ends with the connection: start another
                log.debug("cluster: presence watch: %s", _one_line(exc))
                await asyncio.sleep(1.0)
