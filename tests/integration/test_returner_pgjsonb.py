"""pgjsonb returner on the real PostgreSQL: jsonb columns, GIN indexes, the README's queries."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import psycopg
import pytest

from saline.jid import gen_jid
from saline.returners.base import ReturnerError
from saline.returners.registry import create
from tests.integration.test_returner_postgres import pg_opts, pg_private, publish_load, ret_for, sql  # noqa: F401


@pytest.fixture
def pgj(pg_db: dict[str, Any], master_opts: dict[str, Any]):
    returner = create("pgjsonb", pg_opts(pg_db, master_opts, "returner.pgjsonb", create_schema=True))
    returner.init_schema()
    yield returner
    returner.close()


SALT_DDL = """
DROP TABLE IF EXISTS jids;
CREATE TABLE jids (
   jid varchar(255) NOT NULL primary key,
   load jsonb NOT NULL
);
CREATE INDEX idx_jids_jsonb on jids
       USING gin (load)
       WITH (fastupdate=on);
DROP TABLE IF EXISTS salt_returns;
CREATE TABLE salt_returns (
  fun varchar(50) NOT NULL,
  jid varchar(255) NOT NULL,
  return jsonb NOT NULL,
  id varchar(255) NOT NULL,
  success varchar(10) NOT NULL,
  full_ret jsonb NOT NULL,
  alter_time TIMESTAMP WITH TIME ZONE DEFAULT NOW());
CREATE INDEX idx_salt_returns_id ON salt_returns (id);
CREATE INDEX idx_salt_returns_jid ON salt_returns (jid);
CREATE INDEX idx_salt_returns_fun ON salt_returns (fun);
CREATE INDEX idx_salt_returns_return ON salt_returns
    USING gin (return) with (fastupdate=on);
CREATE INDEX idx_salt_returns_full_ret ON salt_returns
    USING gin (full_ret) with (fastupdate=on);
DROP TABLE IF EXISTS salt_events;
DROP SEQUENCE IF EXISTS seq_salt_events_id;
CREATE SEQUENCE seq_salt_events_id;
CREATE TABLE salt_events (
    id BIGINT NOT NULL UNIQUE DEFAULT nextval('seq_salt_events_id'),
    tag varchar(255) NOT NULL,
    data jsonb NOT NULL,
    alter_time TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    master_id varchar(255) NOT NULL);
CREATE INDEX idx_salt_events_tag on
    salt_events (tag);
CREATE INDEX idx_salt_events_data ON salt_events
    USING gin (data) with (fastupdate=on);
"""


def test_tables_made_by_salts_script_and_init_schema_adds_nothing(pg_db, master_opts) -> None:
    with psycopg.connect(host=pg_db["host"], port=pg_db["port"], user=pg_db["user"], dbname=pg_db["db"],
                         autocommit=True) as conn:
        conn.execute(SALT_DDL)
    before = sql(pg_db, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1")
    returner = create("pgjsonb", pg_opts(pg_db, master_opts, "returner.pgjsonb"))
    jid = gen_jid()
    returner.save_load(jid, publish_load(jid))
    returner.returns([ret_for(jid, "m1", {"k": "v"})])
    returner.event_returns([{"tag": "salt/auth", "data": {"result": True}}])
    assert returner.get_jid(jid)["m1"]["return"] == {"k": "v"} and returner.get_load(jid)["tgt"] == "*"
    returner.init_schema()
    assert sql(pg_db, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1") == before
    returner.close()


def test_schema_is_salts_with_gin_fastupdate(pgj, pg_db) -> None:
    types = dict(((t, c), d) for t, c, d in sql(pg_db, "SELECT table_name, column_name, data_type "
                                                       "FROM information_schema.columns WHERE table_schema = 'public'"))
    assert types[("jids", "load")] == types[("salt_returns", "return")] == "jsonb"
    assert types[("salt_returns", "full_ret")] == types[("salt_events", "data")] == "jsonb"
    assert types[("jids", "jid")] == types[("salt_returns", "success")] == "character varying"
    indexes = dict(sql(pg_db, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"))
    for name, column in [("idx_jids_jsonb", "load"), ("idx_salt_returns_return", "return"),
                         ("idx_salt_returns_full_ret", "full_ret"), ("idx_salt_events_data", "data")]:
        assert f"USING gin ({column}) WITH (fastupdate='on')" in indexes[name], indexes[name]
    assert {"idx_salt_returns_id", "idx_salt_returns_jid", "idx_salt_returns_fun", "idx_salt_events_tag"} <= set(indexes)


def test_the_readme_queries(pgj, pg_db) -> None:
    jid = gen_jid()
    pgj.save_load(jid, publish_load(jid, "pkg.version"))
    pgj.returns([ret_for(jid, "web1", {"nginx": "1.22.1-9"}, "pkg.version"),
                 ret_for(jid, "web2", {"nginx": "1.18.0-6"}, "pkg.version"),
                 ret_for(jid, "db1", "pkg.version failed", "pkg.version", success=False)])
    pgj.event_returns([{"tag": "salt/key", "data": {"id": "web3", "act": "accept", "result": True}},
                       {"tag": "salt/key", "data": {"id": "bad", "act": "reject", "result": True}}])
    assert sql(pg_db, """SELECT id, jid FROM salt_returns WHERE full_ret @> '{"success": false}'""") == [("db1", jid)]
    assert sql(pg_db, """SELECT id FROM salt_returns WHERE fun = 'pkg.version'
                         AND return @> '{"nginx": "1.22.1-9"}'""") == [("web1",)]
    assert sql(pg_db, """SELECT data->>'id' FROM salt_events
                         WHERE tag = 'salt/key' AND data @> '{"act": "accept"}'""") == [("web3",)]
    # and they use the GIN indexes
    with psycopg.connect(host=pg_db["host"], port=pg_db["port"], user=pg_db["user"], dbname=pg_db["db"]) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            """EXPLAIN SELECT id, jid FROM salt_returns WHERE full_ret @> '{"success": false}'""").fetchall())
    assert "idx_salt_returns_full_ret" in plan


def test_values_and_alter_time_from_the_return(pgj, pg_db) -> None:
    jid = gen_jid()
    ret = ret_for(jid, "m1", {"ä": [1, True, None]}, stamp="2024-01-05T12:34:56.123456")
    pgj.returns([ret])
    row = sql(pg_db, "SELECT fun, jid, return, id, success, full_ret, alter_time FROM salt_returns")[0]
    assert row[:5] == ("test.ping", jid, {"ä": [1, True, None]}, "m1", "true")
    assert row[5] == ret
    assert row[6] == dt.datetime(2024, 1, 5, 12, 34, 56, 123456, tzinfo=dt.timezone.utc)
    assert pgj.get_jid(jid) == {"m1": ret}


def test_first_load_is_kept_unlike_salts_upsert(pgj) -> None:
    jid = gen_jid()
    pgj.save_load(jid, publish_load(jid))
    pgj.save_load(jid, ret_for(jid, "m1"))  # what Salt's store_job sends with every return
    assert pgj.get_load(jid) == publish_load(jid)
    assert pgj.get_jids()[jid]["Target"] == "*"


def test_what_jsonb_cannot_hold(pgj) -> None:
    jid = gen_jid()
    value = {"nul": "a\x00b", "nan": float("nan"), "inf": float("-inf"), "bytes": b"\xff\xfeok", "set": {3, 1},
             "lit": "\\u0000 stays text"}
    pgj.returns([ret_for(jid, "m1", value)])
    got = pgj.get_jid(jid)["m1"]["return"]
    assert got == {"nul": "a\ufffdb", "nan": "nan", "inf": "-inf", "bytes": "\ufffd\ufffdok", "set": [1, 3],
                   "lit": "\\u0000 stays text"}


def test_alternate_keys_and_pass(pg_db, master_opts) -> None:
    opts = {**master_opts, "pgjsonb.host": pg_db["host"], "pgjsonb.port": pg_db["port"], "pgjsonb.user": pg_db["user"],
            "pgjsonb.db": pg_db["db"], "returner.pgjsonb.pass": "Pw-Secret-31", "pgjsonb.create_schema": True}
    returner = create("pgjsonb", opts)
    assert returner.opts["passwd"] == "Pw-Secret-31"
    assert returner.link.params["password"] == "Pw-Secret-31"
    returner.returns([ret_for(gen_jid(), "m1")])
    assert returner.get_minions() == ["m1"]
    returner.close()


def test_wrong_password_and_tls(pg_private, master_opts) -> None:
    returner = create("pgjsonb", pg_opts(pg_private, master_opts, "returner.pgjsonb", **{"pass": "Bad-Pass-555"}))
    with pytest.raises(ReturnerError) as err:
        returner.get_jids()
    assert "wrong password for user postgres" in str(err.value) and "Bad-Pass-555" not in str(err.value)
    returner = create("pgjsonb", pg_opts(pg_private, master_opts, "returner.pgjsonb", create_schema=True,
                                         sslmode="require", **{"pass": pg_private["passwd"]}))
    returner.event_returns([{"tag": "tls", "data": {"x": 1}}])
    assert returner.link.run(lambda c: c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()) == (True,)
    returner.close()


def test_read_side(pgj) -> None:
    a, b = gen_jid(), gen_jid()
    pgj.save_loads([(a, publish_load(a, "cmd.run"), None), (b, publish_load(b, "saltutil.find_job"), None)])
    pgj.returns([ret_for(a, "m1", "one", "cmd.run"), ret_for(b, "m1", {}, "saltutil.find_job")])
    c = gen_jid()
    pgj.returns([ret_for(c, "m1", "two", "cmd.run")])
    assert pgj.get_fun("cmd.run")["m1"]["return"] == "two"
    assert [j["JID"] for j in pgj.get_jids_filter(10)] == [a]
    assert [j["JID"] for j in pgj.get_jids_filter(10, filter_find_job=False)] == [a, b]
    assert pgj.get_minions() == ["m1"]


def test_batch_of_1000(pgj, pg_db) -> None:
    jid = gen_jid()
    rets = [ret_for(jid, f"minion-{i:04d}", {"i": i, "text": "x" * 200}) for i in range(1000)]
    started = time.perf_counter()
    pgj.returns(rets)
    elapsed = time.perf_counter() - started
    print(f"\npgjsonb: 1000 returns in {elapsed * 1000:.1f} ms = {1000 / elapsed:,.0f} rows/s")
    assert sql(pg_db, "SELECT count(*) FROM salt_returns WHERE return @> '{\"i\": 999}'") == [(1,)]
    assert len(pgj.get_jid(jid)) == 1000
    events = [{"tag": f"salt/job/{jid}/ret/m{i}", "data": {"i": i}} for i in range(1000)]
    started = time.perf_counter()
    pgj.event_returns(events)
    elapsed = time.perf_counter() - started
    print(f"pgjsonb: 1000 events in {elapsed * 1000:.1f} ms = {1000 / elapsed:,.0f} rows/s")
    assert sql(pg_db, "SELECT count(*) FROM salt_events") == [(1000,)]
    assert json.loads(json.dumps(sql(pg_db, "SELECT data FROM salt_events ORDER BY id LIMIT 1")[0][0])) == {"i": 0}
