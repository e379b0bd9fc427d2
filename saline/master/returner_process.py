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
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import msgpack

from saline import gc_tuning
from saline.master.remote_worker import pack

if TYPE_CHECKING:
    from saline.master.delivery import Delivery

log = logging.getLogger(__name__)

#: the process looks at the outbox this often even when not woken
POLL_SECONDS = 1.0


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
                sock.send(pack({"id": message.get("id"), "throughput": throughput, "paused_until": paused,
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
        gc_tuning.settle()
        serve(delivery, returner, sock)
    finally:
        outbox.close()
        if lock is not None:
            lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
