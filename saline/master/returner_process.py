"""Returner workers in their own processes, so delivery runs beside the master, not under its GIL.

With ``returner_processes: True`` (the default) the master starts one process per returner that
has something to deliver (``python -m saline.master.returner_process``). The process opens the
same outbox file (:class:`~saline.master.outbox.Outbox` in shared mode) and runs the ordinary
worker (:class:`~saline.master.delivery.Delivery`, one thread) for that returner only: it takes,
delivers, acknowledges, retries and buries that returner's items itself. The master only puts
items into the outbox and tells the process how many it put.

The two talk over a ``SOCK_SEQPACKET`` socket pair (one msgpack message per packet, so a send is
whole or not at all):

- master to process: ``wake`` (items were put: how many, how many not events), ``flushing``
  (a ``flush`` began or ended: held events must go at once), ``figures`` (a request: the worker's
  throughput and back-off for ``returners.status``) and ``stop``;
- process to master: the answer to ``figures``.

The master never blocks on the socket in its event loop: a ``wake`` that does not fit (the process
is not reading) is added to the next one, and the process also looks at the outbox every second
by itself, so no item waits for a lost wake-up. The process's configuration and logging set-up come
on its standard input. When the master goes away (even by SIGKILL) the socket reads end-of-file
and the process finishes its batch and exits; what it had not acknowledged stays in the outbox.
A per-returner ``flock`` makes sure one process at a time delivers a returner's items, even when a
restarted master starts a new one while the old one finishes its last batch.
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from saline.master.delivery import Delivery

log = logging.getLogger(__name__)

#: the process looks at the outbox this often even when not woken
POLL_SECONDS = 1.0
#: how long the master waits for the figures of a busy process
FIGURES_TIMEOUT = 2.0
#: how long ``stop`` gives the process to take the message
STOP_SEND_TIMEOUT = 1.0


def _pack(value: Any) -> bytes:
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


def _apply_logging(setup: dict[str, Any]) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    for spec in setup.get("handlers") or []:
        try:
            handler: logging.Handler = logging.FileHandler(spec["file"]) if spec["file"] else logging.StreamHandler(sys.stderr)
        except OSError:
            continue  # the master already said it cannot write there
        handler.setLevel(int(spec.get("level") or 0))
        if spec.get("format"):
            handler.setFormatter(logging.Formatter(spec["format"]))
        root.addHandler(handler)
    root.setLevel(int(setup.get("level") or logging.WARNING))


class RemoteWorker:
    """The master's handle on one returner's process; it answers like a worker thread does."""

    def __init__(self, delivery: "Delivery", returner: str) -> None:
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
        init = {"opts": dict(delivery.opts), "outbox": str(delivery.outbox.path), "flushing": delivery._flushing,
                "logging": logging_setup()}
        try:
            self.proc.stdin.write(_pack(init))
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
                self.sock.send(_pack({"cmd": "wake", "n": self._unsent[0], "ne": self._unsent[1]}))
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
        data = _pack(message)
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


# -- the process's side ------------------------------------------------------------------------------
def _one_consumer(outbox_path: str, returner: str) -> Any:
    """Hold the returner's lock file; wait while an older process (of a master restarted
    meanwhile) still finishes its last batch."""
    from saline.master.outbox import try_lock

    waited = time.monotonic()
    while (handle := try_lock(f"{outbox_path}.{returner}.lock")) is None:
        if time.monotonic() - waited > 60:
            log.warning("returner %s: still waiting for the previous delivery process to end", returner)
            waited = time.monotonic()
        time.sleep(0.05)
    return handle


def serve(delivery: "Delivery", returner: str, sock: socket.socket) -> None:
    """Deliver ``returner``'s items until the master says stop or goes away."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C of a foreground master: the master stops us
    delivery.start_one(returner)
    sock.settimeout(POLL_SECONDS)
    while not stopping.is_set():
        try:
            data = sock.recv(65536)
        except socket.timeout:
            delivery.wake(returner)
            continue
        except OSError:
            break
        if not data:
            break  # the master is gone
        try:
            message = msgpack.unpackb(data)
            cmd = message["cmd"]
        except (ValueError, KeyError, TypeError, msgpack.UnpackException):
            log.warning("returner %s: unreadable message from the master ignored", returner)
            continue
        if cmd == "wake":
            delivery.wake(returner, int(message.get("n") or 0), int(message.get("ne") or 0))
        elif cmd == "flushing":
            delivery.add_flushing(int(message.get("delta") or 0))
            delivery.wake(returner)
        elif cmd == "figures":
            throughput, paused = delivery.worker_figures(returner)
            try:
                sock.send(_pack({"id": message.get("id"), "throughput": throughput, "paused_until": paused,
                                 "batches": delivery.batch_figures().get(returner) or {}}))
            except OSError:
                break
        elif cmd == "stop":
            break
    delivery.stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    fd, returner = int(args[0]), args[1]
    init = msgpack.unpackb(sys.stdin.buffer.read(), strict_map_key=False)
    _apply_logging(init.get("logging") or {})
    from saline.cluster.config import ClusterError
    from saline.master.delivery import Delivery
    from saline.master.outbox import OutboxError, open_outbox

    sock = socket.socket(fileno=fd)
    # one process at a time per returner on a file; a JetStream consumer is made to be shared
    lock = None if str(init["outbox"]).startswith("nats://") else _one_consumer(init["outbox"], returner)
    try:
        outbox = open_outbox(init["opts"], master=False)
    except (OutboxError, ClusterError) as exc:
        log.error("returner %s: %s", returner, exc)
        return 1
    try:
        delivery = Delivery(init["opts"], outbox)
        delivery.add_flushing(int(init.get("flushing") or 0))
        serve(delivery, returner, sock)
    finally:
        outbox.close()
        if lock is not None:
            lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
