"""kafka: messages as a consumer reads them back from Tansu (Kafka's protocol): value, key, topics."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from saline.config import ConfigError
from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import BackendUnavailable
from tests.contract.cases.kafka import BOOTSTRAP, config, consume, topic_of


def ret(jid: str, minion: str, value: Any = True) -> dict[str, Any]:
    return {"id": minion, "jid": jid, "fun": "test.ping", "fun_args": [], "return": value, "retcode": 0, "success": True}


def test_salts_value_keyed_by_minion(master_opts: dict[str, Any], tmp_path: Path) -> None:
    r = registry.create("kafka", {**master_opts, **config({}, tmp_path)})
    jid = gen_jid()
    sent = [ret(jid, f"web{i}", {"i": i, "ü": "漢字"}) for i in range(200)]
    started = time.perf_counter()
    r.returns(sent)
    elapsed = time.perf_counter() - started
    records = consume(topic_of(tmp_path))
    assert len(records) == 200
    by_key = {rec.key.decode(): json.loads(rec.value) for rec in records}
    assert by_key == {f"web{i}": sent[i] for i in range(200)}
    raw = next(rec.value for rec in records if rec.key == b"web1").decode("utf-8")
    assert raw == json.dumps(sent[1], ensure_ascii=False)  # Salt's salt.utils.json.dumps
    assert elapsed < 5, elapsed


def test_salts_key_events_topic_and_hostnames(master_opts: dict[str, Any], tmp_path: Path) -> None:
    events_topic = topic_of(tmp_path / "events")
    # Salt 2016.11's hostnames key, Salt's str(ret) key, events to a topic of their own
    r = registry.create("kafka", {**master_opts, "returner": {"kafka": {
        "hostnames": [BOOTSTRAP], "topic": topic_of(tmp_path), "key": "repr", "event_topic": events_topic,
        "compression": "gzip"}}})
    one = ret(gen_jid(), "web1")
    r.returns([one])
    r.event_returns([{"tag": "salt/auth", "data": {"id": "web1"}}])
    (record,) = consume(topic_of(tmp_path))
    assert record.key == str(one).encode() and json.loads(record.value) == one
    (event,) = consume(events_topic)
    assert event.key == b"salt/auth" and json.loads(event.value) == {"tag": "salt/auth", "data": {"id": "web1"}}
    r.check()


def test_config_errors_and_retries(master_opts: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="returner.kafka.bootstrap is not set"):
        registry.create("kafka", {**master_opts, "returner.kafka.topic": "t"})
    with pytest.raises(ConfigError, match="key must be id or repr"):
        registry.create("kafka", {**master_opts, **config({}, tmp_path), "returner.kafka.key": "jid"})
    r = registry.create("kafka", {**master_opts, **config({}, tmp_path)})
    jid = gen_jid()
    r.returns([ret(jid, "a"), ret(jid, "b")])
    r.returns([ret(jid, "a"), ret(jid, "b"), ret(jid, "c")])  # a retried batch: a and b are not sent again
    assert sorted(rec.key for rec in consume(topic_of(tmp_path))) == [b"a", b"b", b"c"]
    r.close()
    r.returns([ret(jid, "d")])  # a new producer after close
    assert len(consume(topic_of(tmp_path))) == 4
    down = registry.create("kafka", {**master_opts, "returner.kafka.bootstrap": "127.0.0.1:1",
                                     "returner.kafka.topic": "t", "returner.kafka.timeout": 1})
    with pytest.raises(BackendUnavailable, match=r"^returner kafka: Kafka at 127.0.0.1:1 unreachable: "):
        down.returns([ret(jid, "e")])
