"""``saline-deliver``: delivery workers of a cluster, on any machine.

In a cluster (``nats_servers`` and ``cluster_id`` in the master config) every returner is a
durable JetStream consumer; each ``saline-deliver`` runs a worker for the returners it is given
(all that have a consumer, by default) and takes its share of their records: run as many as the
backends can take, wherever their drivers and credentials are. It reads the same configuration
file as the masters (the returners' options, the cluster's connection), and needs no master on
its machine. A single master with its SQLite outbox delivers by itself: this command says so.
"""

from __future__ import annotations

import signal
import sys
import threading

from saline.cli.common import Parser, add_config_args, fail, load_opts, setup_logging


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="saline-deliver", description="Delivery workers for a cluster's returners (NATS JetStream).")
    add_config_args(parser)
    parser.add_argument("returners", nargs="*", metavar="RETURNER",
                        help="the returners to deliver (default: every returner the cluster has records for)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="workers per returner in this process (each takes its own batches)")
    args = parser.parse_args(argv)
    opts = load_opts("master", args)
    setup_logging(opts, args.log_level, args.log_file)

    from saline.cluster.config import ClusterError, from_opts
    from saline.config import ConfigError
    from saline.master.delivery import Delivery
    from saline.master.outbox import OutboxError, open_outbox

    outboxes = []
    try:
        if from_opts(opts) is None:
            fail("saline-deliver delivers for a cluster: set nats_servers and cluster_id in the master config "
                 "(a single master delivers its returns itself)")
        # one outbox per worker set: each has its own pull subscriptions on the shared connection
        outboxes = [open_outbox(opts, master=False) for _ in range(max(1, args.threads))]
        names = args.returners or sorted(outboxes[0].counts())
        if not names:
            fail("no returner has records in the cluster yet; name the returners to deliver")
        deliveries = []
        for outbox in outboxes:
            d = Delivery(opts, outbox)
            for name in names:
                d.validate(name)  # an unknown returner or a bad option: one line, now
            deliveries.append(d)
    except (ClusterError, ConfigError, OutboxError) as exc:
        for outbox in outboxes:
            outbox.close()
        fail(str(exc))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    for d in deliveries:
        for name in names:
            d.start_one(name)
    print(f"saline-deliver: delivering {', '.join(names)} ({len(deliveries)} worker(s) each)", file=sys.stderr, flush=True)
    try:
        stop.wait()
    finally:
        for d in deliveries:
            d.stop()
        for outbox in outboxes:
            outbox.close()
        from saline.cluster.bridge import close_shared

        close_shared()


if __name__ == "__main__":
    main()
