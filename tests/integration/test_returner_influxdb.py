"""influxdb returner on the real InfluxDB 1.6: Salt's measurements, tags and fields, read back
with InfluxQL over HTTP; point times, duplicates, first loads, the database created when missing.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from influxdb import InfluxDBClient

from saline.jid import gen_jid, jid_to_datetime
from saline.returners.registry import create
from tests.contract.cases.influxdb import HOST, PORT, config


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, InfluxDBClient]]:
    name = f"saline_i_{uuid.uuid4().hex[:10]}"
    config({}, tmp_path)  # the server is up
    client = InfluxDBClient(HOST, PORT, database=name)
    yield name, client
    client.drop_database(name)
    client.close()


def ret(jid: str, minion: str, value: Any, fun: str = "test.ping") -> dict:
    return {"id": minion, "jid": jid, "fun": fun, "fun_args": [], "return": value, "retcode": 0, "success": True}


def test_salt_measurements(db: tuple[str, InfluxDBClient], master_opts: dict) -> None:
    name, client = db
    r = create("influxdb", {**master_opts, "influxdb.host": HOST, "influxdb.port": PORT, "influxdb.db": name})
    jid = gen_jid()
    load = {"jid": jid, "fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob", "user": "root"}
    r.save_load(jid, load)  # the database does not exist yet: created on the way
    given = ret(jid, "web1", {"a": [1, "x"]})
    r.returns([given, ret(jid, "web2", True)])
    assert given["return"] == {"a": [1, "x"]}  # the caller's dict is left whole (Salt deleted "return")
    rows = list(client.query('SELECT * FROM returns ORDER BY time', epoch="u").get_points())
    assert {(row["fun"], row["id"], row["jid"]) for row in rows} == {("test.ping", "web1", jid), ("test.ping", "web2", jid)}
    web1 = next(row for row in rows if row["id"] == "web1")
    assert set(web1) == {"time", "fun", "id", "jid", "return", "full_ret"}
    assert web1["return"] == json.dumps({"a": [1, "x"]})
    assert json.loads(web1["full_ret"]) == {k: v for k, v in given.items() if k != "return"}
    assert web1["time"] == int(jid_to_datetime(jid).timestamp() * 1_000_000)  # the job's start
    tags = list(client.query("SHOW TAG KEYS FROM returns").get_points())
    assert {t["tagKey"] for t in tags} == {"fun", "id", "jid"}
    jids = list(client.query("SELECT * FROM jids").get_points())
    assert [(j["jid"], json.loads(j["load"])) for j in jids] == [(jid, load)]
    # read side
    assert r.get_load(jid) == load
    assert r.get_jid(jid)["web1"] == given
    assert r.get_minions() == ["web1", "web2"]
    r.close()


def test_duplicates_first_load_and_latest(db: tuple[str, InfluxDBClient], master_opts: dict) -> None:
    name, client = db
    r = create("influxdb", {**master_opts, "influxdb.host": HOST, "influxdb.port": PORT, "influxdb.db": name})
    old, new = gen_jid(), gen_jid()
    r.save_loads([(new, {"fun": "test.arg", "jid": new}, None)])
    r.save_loads([(new, {"fun": "a return payload"}, None)])
    assert r.get_load(new)["fun"] == "test.arg"
    batch = [ret(new, "web1", "new", "test.arg")]
    r.returns(batch)
    r.returns(batch)  # delivered twice: the same point, rewritten
    assert list(client.query("SELECT count(full_ret) FROM returns").get_points())[0]["count"] == 1
    r.returns([ret(old, "web1", "late", "test.arg")])  # an older job delivered late
    assert r.get_fun("test.arg")["web1"]["return"] == "new"
    r.close()


def test_batch_of_1000_is_one_fast_write(db: tuple[str, InfluxDBClient], master_opts: dict) -> None:
    name, client = db
    r = create("influxdb", {**master_opts, "influxdb.host": HOST, "influxdb.port": PORT, "influxdb.db": name})
    r.init_schema()
    jid = gen_jid()
    rets = [ret(jid, f"minion{i:04d}", {"i": i}, "test.echo") for i in range(1000)]
    started = time.perf_counter()
    r.returns(rets)
    elapsed = time.perf_counter() - started
    print(f"influxdb: 1,000 returns in {elapsed:.3f}s ({1000 / elapsed:,.0f}/s)")
    assert len(r.get_jid(jid)) == 1000
    assert elapsed < 5
    r.close()
