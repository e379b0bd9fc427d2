"""The master's figures in Prometheus' text format, through the official ``prometheus_client``.

What an operator graphs and alerts on (docs/monitoring.md):

* per returner, from :meth:`Delivery.status` (the outbox's counts and each worker's figures):
  ``saline_returner_delivered_total``, ``..._pending``, ``..._retrying``, ``..._dead``,
  ``..._buried_total``, ``..._last_success_timestamp_seconds``, ``..._last_success_age_seconds``,
  ``..._oldest_pending_age_seconds``, ``..._backoff_seconds``, ``..._throughput``;
* per returner, from the delivery workers themselves (:class:`BatchFigures`, which travel from a
  delivery process to the master with its other figures): ``saline_returner_errors_total`` (items
  whose delivery attempt failed; the error text stays in ``returners.status``, never in a label),
  and the histograms ``saline_returner_batch_size`` and ``saline_returner_batch_seconds``. They
  count from the start of the worker: a delivery process started again starts them from zero,
  which Prometheus reads as a counter reset;
* from the master's counters: ``saline_returns_received_total``, ``saline_returns_duplicate_total``,
  ``saline_returns_refused_total{cause}``, ``saline_jobs_published_total``; and
  ``saline_minions_connected``, ``saline_keys{state}``.

The metrics are read when scraped (a custom collector), so nothing is counted twice and the hot
path pays nothing. ``metrics_port`` makes the master serve them itself (:func:`serve`, the
library's own HTTP server in a thread); ``saline-api`` serves the same text on ``/metrics``.
"""

from __future__ import annotations

import bisect
import errno
import logging
import math
import threading
import time
from typing import Any, Iterator

log = logging.getLogger(__name__)

#: upper bounds of the batch-size buckets (items); returner_batch_size is 4000 by default
SIZE_BUCKETS = (1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 2000.0, 4000.0, 10000.0, math.inf)
#: upper bounds of the batch-latency buckets (seconds a batch took to deliver)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, math.inf)


class MetricsUnavailable(Exception):
    """The metrics cannot be served; one line naming the cause."""


class BatchFigures:
    """What one delivery worker measured: batch sizes and latencies (histogram buckets, not
    cumulative, plus sums) and the items whose delivery failed. Plain data, so it travels over
    the delivery process's socket as it is (:meth:`as_dict`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sizes = [0] * len(SIZE_BUCKETS)
        self.size_sum = 0.0
        self.latencies = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.errors = 0

    def observe(self, items: int, seconds: float, failed: int = 0) -> None:
        with self._lock:
            self.sizes[bisect.bisect_left(SIZE_BUCKETS, items)] += 1
            self.size_sum += items
            self.latencies[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self.latency_sum += seconds
            self.errors += failed

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"sizes": list(self.sizes), "size_sum": self.size_sum, "latencies": list(self.latencies),
                    "latency_sum": self.latency_sum, "errors": self.errors}


def _buckets(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, int]]:
    """Prometheus' cumulative ``le`` buckets from per-bucket counts."""
    out, total = [], 0
    for bound, n in zip(bounds, counts):
        total += int(n)
        out.append(("+Inf" if math.isinf(bound) else repr(bound), total))
    return out


#: master.stats counters of refused returns and frames, by the cause shown as a label
_REFUSED = {"not_accepted": "refused", "forged": "forged", "untargeted": "untargeted", "bad_frame": "bad_frames",
            "store_failure": "store_failures"}


class MasterCollector:
    """A ``prometheus_client`` collector reading the master's figures at each scrape."""

    def __init__(self, master: Any) -> None:
        self.master = master

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        master = self.master
        status = master.delivery.status()  # asks each delivery process for its figures first
        batches = master.delivery.batch_figures()
        now = time.time()
        per = {
            "delivered": CounterMetricFamily("saline_returner_delivered", "Items a returner stored", labels=["returner"]),
            "buried": CounterMetricFamily("saline_returner_buried", "Items moved to the dead letters", labels=["returner"]),
            "errors": CounterMetricFamily("saline_returner_errors", "Items whose delivery attempt failed",
                                          labels=["returner"]),
            "pending": GaugeMetricFamily("saline_returner_pending", "Items waiting for delivery, retrying ones included",
                                         labels=["returner"]),
            "retrying": GaugeMetricFamily("saline_returner_retrying", "Pending items that failed at least once",
                                          labels=["returner"]),
            "dead": GaugeMetricFamily("saline_returner_dead", "Dead letters now", labels=["returner"]),
            "success": GaugeMetricFamily("saline_returner_last_success_timestamp_seconds",
                                         "When the returner last stored something", labels=["returner"]),
            "age": GaugeMetricFamily("saline_returner_last_success_age_seconds",
                                     "Seconds since the returner last stored something", labels=["returner"]),
            "oldest": GaugeMetricFamily("saline_returner_oldest_pending_age_seconds",
                                        "Age of the oldest pending item", labels=["returner"]),
            "backoff": GaugeMetricFamily("saline_returner_backoff_seconds", "How long the worker still pauses",
                                         labels=["returner"]),
            "throughput": GaugeMetricFamily("saline_returner_throughput", "Items stored per second over the last 60 s",
                                            labels=["returner"]),
        }
        size = HistogramMetricFamily("saline_returner_batch_size", "Items per delivered batch", labels=["returner"])
        latency = HistogramMetricFamily("saline_returner_batch_seconds", "Seconds a batch took to deliver",
                                        labels=["returner"])
        for name, s in status.items():
            labels = [name]
            per["delivered"].add_metric(labels, s["delivered"])
            per["buried"].add_metric(labels, s["buried"])
            per["pending"].add_metric(labels, s["pending"])
            per["retrying"].add_metric(labels, s["retrying"])
            per["dead"].add_metric(labels, s["dead"])
            per["oldest"].add_metric(labels, s["oldest_pending_age_s"])
            per["backoff"].add_metric(labels, s["backoff_s"])
            per["throughput"].add_metric(labels, s["throughput"])
            if s.get("last_success_time"):
                per["success"].add_metric(labels, s["last_success_time"])
                per["age"].add_metric(labels, max(0.0, now - s["last_success_time"]))
            b = batches.get(name) or {}
            per["errors"].add_metric(labels, b.get("errors", 0))
            sizes = b.get("sizes") or [0] * len(SIZE_BUCKETS)
            size.add_metric(labels, _buckets(SIZE_BUCKETS, sizes), b.get("size_sum", 0.0))
            lats = b.get("latencies") or [0] * len(LATENCY_BUCKETS)
            latency.add_metric(labels, _buckets(LATENCY_BUCKETS, lats), b.get("latency_sum", 0.0))
        yield from per.values()
        yield size
        yield latency

        stats = dict(master.stats)
        yield CounterMetricFamily("saline_returns_received", "Returns accepted and stored", value=stats.get("returns", 0))
        yield CounterMetricFamily("saline_returns_duplicate", "Returns received again (acknowledged, not stored twice)",
                                  value=stats.get("duplicates", 0))
        refused = CounterMetricFamily("saline_returns_refused", "Messages and returns refused, by cause", labels=["cause"])
        for cause, key in _REFUSED.items():
            refused.add_metric([cause], stats.get(key, 0))
        yield refused
        yield CounterMetricFamily("saline_jobs_published", "Jobs published", value=stats.get("published", 0))

        from saline.master.presence import connected
        from saline.transport.keys import STATES

        keys = GaugeMetricFamily("saline_keys", "Minion keys by state", labels=["state"])
        for state in STATES:
            keys.add_metric([state], len(master.keys.ids(state)))
        yield keys
        yield GaugeMetricFamily("saline_minions_connected", "Accepted minions heard from in the last 30 s",
                                value=len(connected(master, refresh=False)))


def _registry(master: Any) -> Any:
    try:
        from prometheus_client import CollectorRegistry
    except ImportError:
        raise MetricsUnavailable("metrics need prometheus_client: pip install 'saline[metrics]'") from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MasterCollector(master))
    return registry


def render(master: Any) -> str:
    """The exposition text of the master's metrics (what ``saline-api`` serves on ``/metrics``)."""
    from prometheus_client import generate_latest

    registry = getattr(master, "_metrics_registry", None)
    if registry is None:
        registry = master._metrics_registry = _registry(master)
    return generate_latest(registry).decode()


class MetricsServer:
    """The master's own ``/metrics`` listener (``metrics_port``); :meth:`close` stops it."""

    def __init__(self, master: Any) -> None:
        port = int(master.opts["metrics_port"])
        host = master.opts.get("metrics_host") or master.opts.get("interface") or "0.0.0.0"
        try:
            registry = _registry(master)
        except MetricsUnavailable as exc:
            raise OSError(errno.ENOPKG, str(exc)) from None
        from prometheus_client import start_http_server

        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise OSError(exc.errno, f"metrics_port: cannot listen on {host}:{port}: {exc.strerror}") from None
        log.info("metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(master: Any) -> MetricsServer | None:
    """Start the master's metrics listener when ``metrics_port`` is set (OSError, one line, when it cannot)."""
    if not master.opts.get("metrics_port"):
        return None
    return MetricsServer(master)
