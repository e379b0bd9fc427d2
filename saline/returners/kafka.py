"""Salt's ``kafka`` returner: each return as a message on a Kafka topic, a batch per flush."""

from __future__ import annotations

from typing import Any, Mapping

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from saline.config import ConfigError
from saline.returners import _json
from saline.returners._notify import Sent, one_line, ret_key
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError

_KEYS = ("id", "repr")


class KafkaReturner(Returner):
    """Salt's ``kafka``: each return as one message on ``topic``, its value the JSON of the return.

    Options where Salt read them, ``returner.kafka.bootstrap`` (a list of ``host:port``; Salt
    2016.11's ``returner.kafka.hostnames`` is read too) and ``returner.kafka.topic``. The value
    is Salt's, the JSON of the whole return (``id``, ``jid``, ``fun``, ``fun_args``, ``return``,
    ``retcode``, ``success`` …, UTF-8). The key: Salt used the Python text of the whole return
    (``str(ret)``), which doubles every message and gives each its own key; saline keys by the
    minion id by default, so a minion's returns stay in order on one partition, and ``key:
    repr`` gives Salt's key. Events (saline's addition) go to ``event_topic`` (default: the same
    topic) as ``{"tag", "data"}``, keyed by the tag.

    Salt made a new producer per return and flushed it; saline keeps one producer per returner,
    queues a whole batch and flushes once, with ``acks=all`` (every in-sync replica has the
    message before it counts as delivered). Messages whose delivery failed are reported (an
    unreachable cluster as ``BackendUnavailable``); those that were delivered are not sent again
    when the outbox retries the batch. ``max_request_size`` (16 MiB) lets large returns through
    (the broker's ``message.max.bytes`` must allow them too); ``compression`` (``gzip``, ``lz4``,
    ``zstd``, ``snappy``) shrinks them.

    Example, reading them back::

        kafka-console-consumer.sh --bootstrap-server kafka1:9092 --topic salt-returns --property print.key=true
    """

    name = "kafka"
    prefix = "returner.kafka"
    extra = "kafka"
    summary = "Kafka: each return (and event) as a JSON message on a topic, one flush per batch"
    options = (
        Option("bootstrap", list, doc="brokers to start from, host:port (a list or comma-separated)"),
        Option("hostnames", list, doc="Salt 2016.11's name for bootstrap"),
        Option("topic", required=True, doc="topic of the returns"),
        Option("event_topic", doc="topic of the events (default: topic) (saline)"),
        Option("key", default="id", doc="message key: id (the minion id) or repr (Salt's str of the return) (saline)"),
        Option("compression", doc="gzip, lz4, zstd or snappy (saline)"),
        Option("max_request_size", int, default=16 * 1024 * 1024, doc="largest request in bytes (saline)"),
        Option("timeout", float, default=10.0, doc="seconds to wait for the brokers (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self.bootstrap = [str(b) for b in (self.opts.get("bootstrap") or self.opts.get("hostnames") or [])]
        if not self.bootstrap:
            raise ConfigError("returner kafka: required option returner.kafka.bootstrap is not set")
        if self.opts.get("key") not in _KEYS:
            raise ConfigError(f"returner kafka: key must be id or repr, got {self.opts.get('key')!r}")
        self.event_topic = self.opts.get("event_topic") or self.opts["topic"]
        self.where = f"Kafka at {','.join(self.bootstrap)}"
        self._producer: KafkaProducer | None = None
        self._sent = Sent()

    def _kafka(self) -> KafkaProducer:
        if self._producer is None:
            ms = int(float(self.opts["timeout"]) * 1000)
            # how long to try the bootstrap brokers: named differently in kafka-python 2 and 3
            wait = next(({k: ms} for k in ("bootstrap_timeout_ms", "api_version_auto_timeout_ms")
                         if k in KafkaProducer.DEFAULT_CONFIG), {})
            try:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap, client_id="saline", acks="all", retries=0, linger_ms=5,
                    max_request_size=int(self.opts["max_request_size"]), compression_type=self.opts.get("compression"),
                    request_timeout_ms=ms, max_block_ms=ms, **wait)
            except (KafkaError, OSError) as exc:  # NoBrokersAvailable (kafka-python 2) is a KafkaError
                raise BackendUnavailable(one_line(self.name, f"{self.where} unreachable: {_reason(exc)}", [])) from None
            except (ValueError, AssertionError) as exc:
                raise ConfigError(one_line(self.name, f"producer settings refused: {exc}", [])) from None
        return self._producer

    def _key(self, ret: dict[str, Any]) -> bytes:
        if self.opts["key"] == "repr":
            return _json.text(str(ret)).encode("utf-8")
        return _json.text(ret.get("id")).encode("utf-8")

    def _produce(self, messages: list[tuple[Any, str, bytes, bytes]]) -> None:
        """Queue ``(memory key, topic, key, value)`` messages, flush once, and report failures."""
        if not messages:
            return
        producer = self._kafka()
        futures = []
        try:
            for mark, topic, key, value in messages:
                futures.append((mark, producer.send(topic, key=key, value=value)))
            producer.flush(timeout=float(self.opts["timeout"]))
        except KafkaTimeoutError as exc:
            self.close()
            raise BackendUnavailable(one_line(self.name, f"{self.where} unreachable: {_reason(exc)}", [])) from None
        except KafkaError as exc:
            raise ReturnerError(one_line(self.name, f"{self.where}: {_reason(exc)}", [])) from None
        failed: list[BaseException] = []
        for mark, future in futures:
            if future.is_done and future.succeeded():
                if mark is not None:
                    self._sent.add([mark])
            else:
                failed.append(future.exception if future.is_done else KafkaTimeoutError("not acknowledged in time"))
        if failed:
            first = failed[0]
            line = one_line(self.name, f"{self.where}: {len(failed)} of {len(futures)} message(s) not delivered: "
                                       f"{_reason(first)}", [])
            if all(getattr(e, "retriable", False) or isinstance(e, KafkaTimeoutError) for e in failed):
                raise BackendUnavailable(line)
            raise ReturnerError(line)

    def returns(self, rets: list[dict[str, Any]]) -> None:
        self._produce([(ret_key(r), self.opts["topic"], self._key(r), _json.dumps(r).encode("utf-8"))
                       for r in self._sent.fresh(rets)])

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        self._produce([(None, self.event_topic, _json.text(e.get("tag")).encode("utf-8"),
                        _json.dumps({"tag": e.get("tag"), "data": e.get("data")}).encode("utf-8")) for e in events])

    def check(self) -> None:
        """The cluster answers with the topic's partitions."""
        try:
            self._kafka().partitions_for(self.opts["topic"])
        except (KafkaError, OSError) as exc:
            self.close()
            raise BackendUnavailable(one_line(self.name, f"{self.where} unreachable: {_reason(exc)}", [])) from None

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:  # closing a producer whose brokers are gone can raise; it is dropped anyway
                pass
            self._producer = None


def _reason(exc: BaseException) -> str:
    text, name = str(exc).strip(), type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name
