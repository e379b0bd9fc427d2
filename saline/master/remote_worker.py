"""The master's side of a returner's delivery process: :class:`RemoteWorker` starts
``python -m saline.master.returner_process`` for one returner and talks to it over a
``SOCK_SEQPACKET`` socket pair (the protocol is described in :mod:`saline.master.returner_process`),
answering the master like a worker thread does."""

from __future__ import annotations

import logging
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Mapping

import msgpack

log = logging.getLogger(__name__)

#: how long the master waits for the figures of a busy process
FIGURES_TIMEOUT = 2.0
#: how long ``stop`` gives the process to take the message
STOP_SEND_TIMEOUT = 1.0


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, default=str)


def logging_setup() -> dict[str, Any]:
    """The master's logging as data: the process logs to the same file and stream, at the same levels."""
    root = logging.getLogger()
    handlers = []
    for h in root.handlers:
        fmt = getattr(h.formatter, "_fmt", None)
        if isinstance(h, logging.FileHandler):
            handlers.append({"file": h.baseFilename, "level": h.level, "format": fmt})
        elif isinstance(h, logging.StreamHandler) and h.stream in (sys.stderr, sys.__stderr__):
            handlers.append({"file": None, "level": h.level, "format": fmt})
    return {"level": root.level, "handlers": handlers}


class RemoteWorker:
    """The master's handle on one returner's process; it answers like a worker thread does."""

    def __init__(self, returner: str, opts: Mapping[str, Any], outbox_path: str, flushing: int) -> None:
        """Start the process for ``returner`` with the master's ``opts``, the outbox it shares
        and how many ``flush`` calls are running now."""
        self.returner = returner
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "saline.master.returner_process", str(theirs.fileno()), returner],
                stdin=subprocess.PIPE, pass_fds=(theirs.fileno(),), close_fds=True)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        assert self.proc.stdin is not None
        init = {"opts": dict(opts), "outbox": outbox_path, "flushing": flushing, "logging": logging_setup()}
        try:
            self.proc.stdin.write(pack(init))
            self.proc.stdin.close()
        except OSError as exc:  # it died at once: is_alive() says so and the next wake starts another
            log.error("returner %s: could not start its process: %s", returner, exc)
        ours.setblocking(False)
        self.sock = ours
        self.started = time.monotonic()
        self._counts_lock = threading.Lock()
        self._unsent = [0, 0]  # wake counts that did not fit in the socket yet
        self._request_lock = threading.Lock()
        self._request_id = 0
        self._figures = (0.0, 0.0)
        self._batches: dict[str, Any] = {}  # the worker's BatchFigures, as of its last figures answer
        log.debug("returner %s: delivering in process %d", returner, self.proc.pid)

    # -- what the master says --------------------------------------------------------------------
    def wake(self, submitted: int = 0, not_events: int = 0) -> None:
        with self._counts_lock:
            self._unsent[0] += submitted
            self._unsent[1] += not_events
            try:
                self.sock.send(pack({"cmd": "wake", "n": self._unsent[0], "ne": self._unsent[1]}))
            except BlockingIOError:
                return  # carried by the next wake; the process polls the outbox meanwhile
            except OSError:
                return  # the process is gone: is_alive() is False and Delivery starts another
            self._unsent = [0, 0]

    def flushing(self, delta: int) -> None:
        self._send({"cmd": "flushing", "delta": delta}, FIGURES_TIMEOUT)

    def stop(self) -> None:
        self._send({"cmd": "stop"}, STOP_SEND_TIMEOUT)

    def _send(self, message: dict[str, Any], timeout: float) -> bool:
        data = pack(message)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.send(data)
                return True
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                select.select([], [self.sock], [], left)
            except OSError:
                return False

    def figures(self) -> tuple[float, float]:
        """(throughput, paused_until) of the worker; the last known ones when it does not answer."""
        with self._request_lock:
            self._request_id += 1
            wanted = self._request_id
            if not self._send({"cmd": "figures", "id": wanted}, FIGURES_TIMEOUT):
                return self._figures
            deadline = time.monotonic() + FIGURES_TIMEOUT
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([self.sock], [], [], left)
                if not ready:
                    break
                try:
                    answer = msgpack.unpackb(self.sock.recv(65536))
                except (BlockingIOError, ValueError, msgpack.UnpackException):
                    continue
                except OSError:
                    break
                if isinstance(answer, dict) and answer.get("id") == wanted:
                    self._figures = (float(answer["throughput"]), float(answer["paused_until"]))
                    self._batches = answer.get("batches") or self._batches
                    break
            return self._figures

    def batch_figures(self) -> dict[str, Any]:
        return self._batches

    # -- the process -----------------------------------------------------------------------------
    def is_alive(self) -> bool:
        return self.proc.poll() is None

    def how_it_ended(self) -> str:
        code = self.proc.returncode
        if code is None:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def join(self, timeout: float | None = None) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return
        self.sock.close()
