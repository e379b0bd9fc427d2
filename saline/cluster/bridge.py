"""One NATS connection per process, on an asyncio loop of its own, callable from anywhere.

nats-py is asyncio; the parts of saline that use the cluster are not all on a loop (the outbox
seam is called from the master's loop thread and from delivery worker threads alike). The bridge
runs the connection on a private loop in a daemon thread; :meth:`NatsBridge.call` runs a coroutine
there and waits for its result with a timeout.

Connection policy (nats-py's defaults are a LAN client's, not a daemon's):

* the first connection fails fast, with one line naming the servers and the cause (nats-py
  would otherwise walk its reconnect rules for minutes);
* afterwards an outage is waited out for ever (``max_reconnect_attempts=-1``), pinging every
  few seconds so that a silent server is noticed in seconds, not minutes;
* errors nats-py reports only to its error callback (a permissions violation makes the request
  itself just time out) are logged as one line each, never a traceback;
* replies come on the cluster's own inbox prefix (no other cluster may subscribe there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import ssl
import threading
import time
from typing import Any, Awaitable, Callable, TypeVar

from saline.cluster.config import ClusterConfig, ClusterError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: how long one attempt at setting up streams and buckets may take (a permissions violation
#: shows as a time-out); attempts go on for the caller's timeout (``nats_setup_timeout``)
SETUP_ATTEMPT = 12.0

#: how often the connection pings its server (a dead server is noticed after two missed pings)
PING_SECONDS = 5
#: errors of the same kind are logged at most this often
ERROR_EVERY = 30.0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class NatsBridge:
    """The process's NATS connection (``nc``) and JetStream context (``js``) on a private loop."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="saline-nats", daemon=True)
        self._thread.start()
        self.nc: Any = None
        self.js: Any = None
        self.connected = threading.Event()
        self._said: dict[str, float] = {}
        #: the last error the server reported on the side (a permissions violation makes the
        #: request itself only time out): (when, one line)
        self.last_error: tuple[float, str] | None = None
        #: while set, such errors are only kept for the caller's own message, not logged
        self.quiet = False
        self._closing = False
        self.pid = os.getpid()
        self.on_reconnect: list[Callable[[], Any]] = []
        #: when the connection was last lost (what core subscriptions missed began then)
        self.disconnected_at: float | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    # -- calling into the loop ---------------------------------------------------------------
    def call(self, coro: Awaitable[T], timeout: float | None = 30.0) -> T:
        """Run ``coro`` on the bridge's loop and wait for its result (its exception, re-raised);
        TimeoutError after ``timeout`` seconds (the coroutine is cancelled)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer from NATS within {timeout:g} s") from None

    def call_connected(self, coro: Awaitable[T], timeout: float) -> T:
        """:meth:`call`, but at once ConnectionError when the connection is down: nats-py would
        hold the request for the reconnect, and the caller (the master's loop) with it."""
        if not self.connected.is_set():
            if asyncio.iscoroutine(coro):
                coro.close()  # never awaited: no warning about it
            raise ConnectionError("not connected to NATS")
        return self.call(coro, timeout)

    def set_up(self, make: Callable[[], Awaitable[T]], what: str, timeout: float, attempt: float = SETUP_ATTEMPT) -> T:
        """Run ``make()`` (creating streams, buckets) until it works: a cluster just started or
        electing its leaders answers nobody, or refuses placement while a peer is not back yet,
        for a while. Asked again for ``timeout`` seconds (``nats_setup_timeout``); ClusterError
        (one line) then, or at once for a refusal the server names (a permissions violation)."""
        began = time.time()
        deadline = time.monotonic() + timeout
        self.quiet = True  # a refusal now is said once, in the error
        try:
            while True:
                started = time.time()
                try:
                    result = self.call(make(), timeout=max(1.0, min(attempt, deadline - time.monotonic())))
                except Exception as exc:
                    why = self.why(started)
                    if why or time.monotonic() + 1 >= deadline:
                        raise ClusterError(f"{_one_line(exc)}{why}") from None
                    log.warning("%s: JetStream is not ready (%s); asking again for up to %.0f s", what,
                                _one_line(exc), deadline - time.monotonic())
                    time.sleep(1.0)
                    continue
                if time.time() - began > attempt:
                    log.info("%s: set up after %.1f s", what, time.time() - began)
                return result
        finally:
            self.quiet = False

    def submit(self, coro: Awaitable[T]) -> "concurrent.futures.Future[T]":
        """Run ``coro`` on the bridge's loop without waiting."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    # -- the connection ------------------------------------------------------------------------
    def connect(self) -> "NatsBridge":
        """Connect (fail fast, one line); afterwards reconnect for ever."""
        try:
            self.call(self._connect(), timeout=self.config.connect_timeout * 2 + 5)
        except ClusterError:
            raise
        except Exception as exc:
            raise ClusterError(f"cannot connect to NATS at {', '.join(self.config.servers)}: {_one_line(exc)}") from None
        return self

    def _tls(self) -> ssl.SSLContext | None:
        c = self.config
        if not (c.tls_ca or c.tls_cert or any(s.startswith("tls://") for s in c.servers)):
            return None
        ctx = ssl.create_default_context(cafile=c.tls_ca) if c.tls_ca else ssl.create_default_context()
        if c.tls_cert and c.tls_key:
            ctx.load_cert_chain(c.tls_cert, c.tls_key)
        return ctx

    async def _connect(self) -> None:
        import nats

        c = self.config
        options: dict[str, Any] = {
            "servers": list(c.servers), "name": c.name, "inbox_prefix": c.inbox_prefix,
            "connect_timeout": c.connect_timeout, "reconnect_time_wait": 0.5,
            # fail fast the first time: nats-py otherwise retries its whole list for minutes
            "max_reconnect_attempts": 1, "ping_interval": PING_SECONDS, "max_outstanding_pings": 2,
            "error_cb": self._error, "disconnected_cb": self._disconnected, "reconnected_cb": self._reconnected,
            "allow_reconnect": True,
        }
        try:
            tls = self._tls()
        except (OSError, ssl.SSLError) as exc:
            raise ClusterError(f"NATS TLS files: {_one_line(exc)}") from None
        if tls is not None:
            options["tls"] = tls
        if c.user:
            options["user"] = c.user
            if c.password:
                options["password"] = c.password
        if c.nkey_seed:
            options["nkeys_seed"] = c.nkey_seed
        if c.creds:
            options["user_credentials"] = c.creds
        self._first = True
        nc = await nats.connect(**options)
        nc.options["max_reconnect_attempts"] = -1  # from now on an outage is waited out
        self._first = False
        self.nc = nc
        # room for the largest group the master stores at once, several at a time
        self.js = nc.jetstream(timeout=5, publish_async_max_pending=20_000)
        self.connected.set()

    async def _error(self, exc: Exception) -> None:
        if getattr(self, "_first", False):
            return  # the first connection's failure is raised to the caller, in one line
        text = _one_line(exc)
        kind = text.split(":")[0]
        now = time.monotonic()
        self.last_error = (time.time(), text)
        if self.quiet:
            return
        if now - self._said.get(kind, -ERROR_EVERY) >= ERROR_EVERY:
            self._said[kind] = now
            log.warning("NATS: %s", text)

    async def sent(self) -> None:
        """Until what was published on this connection is on its way (nats-py's ``flush`` may
        write its ping ahead of publishes still queued), and the server has seen it."""
        nc = self.nc
        while nc is not None and getattr(nc, "pending_data_size", 0) and nc.is_connected:
            await asyncio.sleep(0)
        if nc is not None and nc.is_connected:
            await nc.flush()

    async def _disconnected(self) -> None:
        if self._closing:
            return
        if self.connected.is_set() or self.disconnected_at is None:
            self.disconnected_at = time.time()
        if self.connected.is_set():
            self.connected.clear()
            log.warning("NATS: disconnected from %s; reconnecting", ", ".join(self.config.servers))

    async def _reconnected(self) -> None:
        self.connected.set()
        url = getattr(self.nc, "connected_url", None)
        log.warning("NATS: reconnected (%s)", getattr(url, "netloc", url) if url else "?")
        for callback in list(self.on_reconnect):
            try:
                result = callback()
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:  # a callback's failure must not end the connection
                log.warning("NATS: after reconnecting: %s", _one_line(exc))

    def stop_loop(self) -> None:
        """End the loop thread of a bridge that never connected."""
        self._closing = True
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)

    def why(self, since: float) -> str:
        """The server's own reason for a failure since ``since`` (a time), or ''."""
        if self.last_error is not None and self.last_error[0] >= since - 1:
            return f" (the server said: {self.last_error[1]})"
        return ""

    def close(self) -> None:
        self._closing = True

        async def drain() -> None:
            if self.nc is not None and not self.nc.is_closed:
                try:
                    await asyncio.wait_for(self.nc.drain(), 5)
                except Exception:  # closing anyway
                    await self.nc.close()

        if self._thread.is_alive():
            try:
                self.call(drain(), timeout=10)
            except Exception as exc:
                log.debug("NATS: closing: %s", _one_line(exc))
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)


_shared: dict[ClusterConfig, NatsBridge] = {}
_shared_lock = threading.Lock()


def shared(config: ClusterConfig) -> NatsBridge:
    """The process's bridge for ``config`` (connected on first use)."""
    with _shared_lock:
        bridge = _shared.get(config)
        if bridge is not None and bridge.pid != os.getpid():
            bridge = None  # inherited through fork(): its loop thread is not in this process
        if bridge is None:
            bridge = NatsBridge(config)
            try:
                bridge.connect()
            except BaseException:
                bridge.stop_loop()
                raise
            _shared[config] = bridge
        return bridge


def close_shared() -> None:
    with _shared_lock:
        bridges = list(_shared.values())
        _shared.clear()
    for bridge in bridges:
        bridge.close()
