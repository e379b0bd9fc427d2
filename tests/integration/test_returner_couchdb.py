"""couchdb returner on PouchDB Server (the CouchDB HTTP API): Salt's documents and views, read
back over HTTP; every minion of a job kept (Salt lost all but the first), loads, duplicates.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from saline.jid import format_jid_instance, gen_jid
from saline.returners.base import BackendUnavailable
from saline.returners.registry import create
from tests.contract.cases.couchdb import URL, config


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    config({}, tmp_path)  # the server is up
    name = f"saline_i_{uuid.uuid4().hex[:10]}"
    yield name
    httpx.delete(f"{URL}{name}")


def ret(jid: str, minion: str, value: Any, fun: str = "test.ping") -> dict:
    return {"id": minion, "jid": jid, "fun": fun, "fun_args": [], "return": value, "retcode": 0, "success": True}


def test_salt_documents_and_views(db: str, master_opts: dict) -> None:
    r = create("couchdb", {**master_opts, "couchdb.url": URL, "couchdb.db": db})
    jid = gen_jid()
    load = {"jid": jid, "fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob", "user": "root"}
    before = time.time()
    r.save_load(jid, load)
    r.returns([ret(jid, "web1", True), {**ret(jid, "web2", {"a": 1}), "_stamp": "2024-01-05T12:34:56"}])
    doc = httpx.get(f"{URL}{db}/{jid}-web1").json()
    # Salt's document: the return's fields plus timestamp
    assert {k: v for k, v in doc.items() if k not in ("_id", "_rev", "timestamp")} == ret(jid, "web1", True)
    assert before <= doc["timestamp"] <= time.time()
    assert "_stamp" not in httpx.get(f"{URL}{db}/{jid}-web2").json()  # CouchDB reserves _ fields
    assert httpx.get(f"{URL}{db}/{jid}").json()["fun"] == "test.ping"  # the load: the jid's document
    design = httpx.get(f"{URL}{db}/_design/salt").json()
    assert {"minions", "by-minion-fun-timestamp"} <= set(design["views"])
    # Salt's own view queries work
    minions = httpx.get(f"{URL}{db}/_design/salt/_view/minions", params={"group": "true"}).json()
    assert [row["key"] for row in minions["rows"]] == ["web1", "web2"]
    last = httpx.get(f"{URL}{db}/_design/salt/_view/by-minion-fun-timestamp", params={
        "descending": "true", "startkey": json.dumps(["web2", "test.ping", 9999999999]),
        "endkey": json.dumps(["web2", "test.ping", 0]), "limit": "1"}).json()
    assert last["rows"][0]["value"]["return"] == {"a": 1}
    # both minions of the job are there (Salt's second one got HTTP 409)
    assert r.get_jid(jid) == {"web1": ret(jid, "web1", True), "web2": ret(jid, "web2", {"a": 1})}
    assert r.get_jids() == {jid: format_jid_instance(jid, load)}
    assert r.get_minions() == ["web1", "web2"]
    assert r.get_load(jid) == load
    r.close()


def test_duplicates_first_load_latest_fun(db: str, master_opts: dict) -> None:
    r = create("couchdb", {**master_opts, "couchdb.url": URL, "couchdb.db": db})
    old, new = gen_jid(), gen_jid()
    r.save_loads([(new, {"fun": "test.arg", "jid": new}, None)])
    r.save_loads([(new, {"fun": "a return payload"}, None)])
    assert r.get_load(new)["fun"] == "test.arg"
    r.returns([ret(new, "web1", "new", "test.arg")])
    r.returns([ret(new, "web1", "new", "test.arg")])  # delivered twice: stored once
    r.returns([ret(old, "web1", "late", "test.arg")])  # an older job delivered late
    assert r.get_fun("test.arg") == {"web1": ret(new, "web1", "new", "test.arg")}
    rows = httpx.get(f"{URL}{db}/_all_docs").json()["rows"]
    assert sorted(row["id"] for row in rows if not row["id"].startswith("_")) == sorted([new, f"{new}-web1", f"{old}-web1"])
    r.close()


def test_down_and_back(db: str, master_opts: dict) -> None:
    from tests.contract.cases.postgres import closed_port

    r = create("couchdb", {**master_opts, "couchdb.url": f"http://u:Pw-Secret-9@127.0.0.1:{closed_port()}/",
                           "couchdb.db": db})
    with pytest.raises(BackendUnavailable) as info:
        r.returns([ret(gen_jid(), "web1", 1)])
    assert "Pw-Secret-9" not in str(info.value) and str(info.value).startswith("returner couchdb: cannot reach")


def test_batch_of_1000_is_one_request(db: str, master_opts: dict) -> None:
    r = create("couchdb", {**master_opts, "couchdb.url": URL, "couchdb.db": db})
    r.init_schema()
    jid = gen_jid()
    rets = [ret(jid, f"minion{i:04d}", {"i": i}, "test.echo") for i in range(1000)]
    started = time.perf_counter()
    r.returns(rets)
    elapsed = time.perf_counter() - started
    print(f"couchdb: 1,000 returns in {elapsed:.3f}s ({1000 / elapsed:,.0f}/s)")
    assert len(r.get_jid(jid)) == 1000
    assert elapsed < 10
    r.close()
