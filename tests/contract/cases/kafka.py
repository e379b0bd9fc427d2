"""Contract case: ``kafka`` against Tansu (Kafka's wire protocol) on 127.0.0.1:9092, a topic per test."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from tests.conftest import require_port
from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase

BOOTSTRAP = "127.0.0.1:9092"


def topic_of(tmp: Path) -> str:
    return "saline-" + hashlib.sha1(str(tmp).encode()).hexdigest()[:12]


def consume(topic: str) -> list[Any]:
    """Every message of ``topic``, from the beginning to the end offsets of now."""
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, consumer_timeout_ms=5000,
                             fetch_max_bytes=64 << 20, max_partition_fetch_bytes=64 << 20)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[Any] = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=1000).values():
                out.extend(records)
        return out
    finally:
        consumer.close()


def values(tmp: Path, jid: str, events: bool = False) -> list[dict[str, Any]]:
    found = []
    for record in consume(topic_of(tmp)):
        value = json.loads(record.value)
        if events and "tag" in value and jid in value["tag"]:
            found.append(value)
        elif not events and "tag" not in value and value.get("jid") == jid:
            found.append(value)
    return found


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    require_port("Tansu (Kafka)", "127.0.0.1", 9092)
    return {"returner.kafka.bootstrap": [BOOTSTRAP], "returner.kafka.topic": topic_of(tmp)}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"returner.kafka.bootstrap": [f"127.0.0.1:{closed_port()}"], "returner.kafka.timeout": 1}


CASES = [ContractCase(
    name="kafka", fixtures=(), config=config, unreachable=unreachable,
    extra={"count": lambda fx, tmp, jid: len(values(tmp, jid)),
           "count_events": lambda fx, tmp, jid: len(values(tmp, jid, events=True)),
           "fetch": lambda fx, tmp, jid: {v["id"]: v["return"] for v in values(tmp, jid)}},
)]
