"""elasticsearch returner on osmem-server (OpenSearch-compatible REST): Salt's documents, index
names, aliases and options, read back with opensearch-py; whole event batches; mappings.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from opensearchpy import OpenSearch

from saline.jid import gen_jid
from saline.returners.base import ReturnerError
from saline.returners.registry import create
from tests.contract.cases.elasticsearch import HOST, PORT, config


@pytest.fixture
def es(tmp_path: Path) -> Iterator[OpenSearch]:
    config({}, tmp_path)  # the server is up
    client = OpenSearch(hosts=[f"{HOST}:{PORT}"])
    yield client
    client.close()


def opts(master_opts: dict, **extra: Any) -> dict:
    tag = uuid.uuid4().hex[:8]
    return {**master_opts, "elasticsearch.hosts": [f"{HOST}:{PORT}"],
            "elasticsearch.master_job_cache_index": f"saline-i-{tag}-jobs",
            "elasticsearch.master_event_index": f"saline-i-{tag}-events",
            **{f"elasticsearch.{k}": v for k, v in extra.items()}}


def ret(jid: str, minion: str, value: Any, fun: str, retcode: int = 0) -> dict:
    return {"id": minion, "jid": jid, "fun": fun, "fun_args": [], "return": value, "retcode": retcode,
            "success": retcode == 0}


def docs(es: OpenSearch, index: str, **match: str) -> list[dict]:
    es.indices.refresh(index=index)
    query = {"bool": {"filter": [{"match": {k: v}} for k, v in match.items()]}} if match else {"match_all": {}}
    return [h["_source"] for h in es.search(index=index, body={"query": query, "size": 1000})["hits"]["hits"]]


def test_salt_document_index_and_alias(es: OpenSearch, master_opts: dict) -> None:
    fun = f"itest{uuid.uuid4().hex[:6]}.Ping"
    r = create("elasticsearch", opts(master_opts))
    jid = gen_jid()
    before = dt.datetime.now(dt.timezone.utc)
    r.returns([ret(jid, "web1", {"os.family": "Debian", "n": 1}, fun),
               {**ret(jid, "web2", {"os.family": "boom"}, fun), "retcode": 2},
               {k: v for k, v in ret(jid, "web3", {"n": 3}, fun).items() if k != "retcode"},
               ret(jid, "web4", None, fun)])  # a None return is not stored (as Salt)
    index = "salt-" + fun.replace(".", "_").lower()
    assert es.indices.exists_alias(name=index)
    assert list(es.indices.get_alias(name=index)) == [f"{index}-v1"]
    found = {d["minion"]: d for d in docs(es, index, jid=jid)}
    assert set(found) == {"web1", "web2", "web3"}
    web1 = found["web1"]
    assert set(web1) == {"@timestamp", "success", "retcode", "minion", "fun", "jid", "counts", "data"}
    assert web1["fun"] == fun and web1["jid"] == jid and web1["success"] is True and web1["retcode"] == 0
    assert web1["counts"] == {} and web1["data"] == {"os_family": "Debian", "_orig_key": "os.family", "n": 1}
    assert dt.datetime.fromisoformat(web1["@timestamp"]) >= before
    assert found["web2"]["success"] is False and found["web2"]["retcode"] == 2
    assert found["web3"]["retcode"] == 1 and found["web3"]["success"] is False  # no retcode: 1, as Salt
    r.returns([ret(jid, "web1", {"os.family": "Debian", "n": 1}, fun)])  # delivered again: same document
    assert len(docs(es, index, jid=jid)) == 3
    r.close()


def test_blacklist_states_and_dated_index(es: OpenSearch, master_opts: dict) -> None:
    r = create("elasticsearch", opts(master_opts, functions_blacklist=["test.ping"], states_count=True,
                                     states_order_output=True, states_single_index=True, index_date=True))
    jid = gen_jid()
    states = {"file_|-motd_|-/etc/motd_|-managed": {"result": True, "__run_num__": 0, "changes": {}},
              "pkg_|-vim_|-vim_|-installed": {"result": False, "__run_num__": 1, "changes": {}}}
    r.returns([ret(jid, "web1", True, "test.ping"), ret(jid, "web1", states, "state.sls", 2)])
    day = dt.date.today().strftime("%Y.%m.%d")
    index = f"salt-state_apply-{day}-ordered"
    [doc] = docs(es, index, jid=jid)
    assert doc["counts"] == {"suceeded": 1, "failed": 1}  # Salt's spelling
    assert set(doc["data"]) == {"0_|-file_|-motd_|-/etc/motd_|-managed", "1_|-pkg_|-vim_|-vim_|-installed"}
    assert doc["data"]["1_|-pkg_|-vim_|-vim_|-installed"]["_func"] == "pkg.installed"
    assert not es.indices.exists(index=f"salt-test_ping-{day}")  # blacklisted: nothing written
    r.close()


def test_events_whole_batch_and_loads(es: OpenSearch, master_opts: dict) -> None:
    o = opts(master_opts)
    r = create("elasticsearch", o)
    jid = gen_jid()
    r.event_returns([{"tag": f"salt/job/{jid}/ret/m{i}", "data": {"i": i}} for i in range(25)])
    events = docs(es, o["elasticsearch.master_event_index"])
    assert len(events) == 25 and {e["data"]["i"] for e in events} == set(range(25))  # Salt stored 1
    assert set(events[0]) == {"tag", "data"}
    load = {"jid": jid, "fun": "test.arg", "arg": ["a", {"k": 1, "__kwarg__": True}], "tgt": "*", "user": "root"}
    r.save_load(jid, load)  # mixed arguments: refused by a dynamic mapping, kept here
    r.save_load(jid, {"fun": "a return payload"})
    assert r.get_load(jid) == load
    [doc] = docs(es, o["elasticsearch.master_job_cache_index"])
    assert doc == {"jid": jid, "load": load}
    assert r.get_jids()[jid]["Function"] == "test.arg"
    r.close()


def test_dynamic_mapping_refusal_is_one_clear_line(es: OpenSearch, master_opts: dict) -> None:
    fun = f"itest{uuid.uuid4().hex[:6]}.shape"
    r = create("elasticsearch", opts(master_opts))
    r.returns([ret(gen_jid(), "web1", {"a": 1}, fun)])
    with pytest.raises(ReturnerError) as info:
        r.returns([ret(gen_jid(), "web2", "a string where a map was", fun)])
    message = str(info.value)
    assert message.startswith("returner elasticsearch: ") and "refused 1 of 1" in message and "\n" not in message
    loose = create("elasticsearch", opts(master_opts, index_data=False))
    other = f"itest{uuid.uuid4().hex[:6]}.shape"
    loose.returns([ret(gen_jid(), "web1", {"a": 1}, other), ret(gen_jid(), "web2", "text", other)])
    r.close()
    loose.close()


def test_batch_of_1000_is_one_bulk(es: OpenSearch, master_opts: dict) -> None:
    r = create("elasticsearch", opts(master_opts))
    fun = "itest.echo"
    r.returns([ret(gen_jid(), "warm", {"i": 0}, fun)])  # the index exists
    jid = gen_jid()
    rets = [ret(jid, f"minion{i:04d}", {"i": i}, fun) for i in range(1000)]
    started = time.perf_counter()
    r.returns(rets)
    elapsed = time.perf_counter() - started
    print(f"elasticsearch: 1,000 returns in {elapsed:.3f}s ({1000 / elapsed:,.0f}/s)")
    assert len(r.get_jid(jid)) == 1000
    assert elapsed < 10
    r.close()
