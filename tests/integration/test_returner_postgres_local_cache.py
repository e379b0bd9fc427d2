"""postgres_local_cache on the real PostgreSQL: Salt's job-cache layout, ``started`` in UTC,
the ``return`` column, duplicate loads, the read side and a retention that works."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import psycopg
import pytest

from saline.jid import gen_jid, jid_to_datetime, jid_to_time
from saline.returners.base import ReturnerError
from saline.returners.registry import create
from tests.integration.test_returner_postgres import pg_opts, publish_load, ret_for, sql

PREFIX = "master_job_cache.postgres"

SALT_DDL = """
DROP TABLE IF EXISTS jids;
CREATE TABLE jids (
  jid   varchar(20) PRIMARY KEY,
  started TIMESTAMP WITH TIME ZONE DEFAULT now(),
  tgt_type text NOT NULL, cmd text NOT NULL, tgt text NOT NULL, kwargs text NOT NULL,
  ret text NOT NULL, username text NOT NULL, arg text NOT NULL, fun text NOT NULL
);
DROP TABLE IF EXISTS salt_returns;
CREATE TABLE salt_returns (
  added     TIMESTAMP WITH TIME ZONE DEFAULT now(),
  fun       text NOT NULL,
  jid       varchar(20) NOT NULL,
  return    text NOT NULL,
  id        text NOT NULL,
  success   boolean
);
CREATE INDEX ON salt_returns (added);
CREATE INDEX ON salt_returns (id);
CREATE INDEX ON salt_returns (jid);
CREATE INDEX ON salt_returns (fun);
DROP TABLE IF EXISTS salt_events;
CREATE TABLE salt_events (
  id SERIAL, tag text NOT NULL, data text NOT NULL,
  alter_time TIMESTAMP WITH TIME ZONE DEFAULT now(), master_id text NOT NULL
);
CREATE INDEX ON salt_events (tag);
CREATE INDEX ON salt_events (data);
CREATE INDEX ON salt_events (id);
CREATE INDEX ON salt_events (master_id);
"""


@pytest.fixture
def plc(pg_db: dict[str, Any], master_opts: dict[str, Any]):
    returner = create("postgres_local_cache", pg_opts(pg_db, master_opts, PREFIX, create_schema=True))
    returner.init_schema()
    yield returner
    returner.close()


def test_options_are_salts_keys(pg_db, master_opts) -> None:
    opts = {**master_opts, "master_job_cache.postgres.host": pg_db["host"],
            "master_job_cache.postgres.port": str(pg_db["port"]), "master_job_cache.postgres.user": pg_db["user"],
            "master_job_cache.postgres.passwd": "Cache-Pw-1", "master_job_cache.postgres.db": pg_db["db"]}
    returner = create("postgres_local_cache", opts)
    assert {k: returner.opts[k] for k in ("host", "port", "user", "passwd", "db")} == {
        "host": pg_db["host"], "port": pg_db["port"], "user": pg_db["user"], "passwd": "Cache-Pw-1", "db": pg_db["db"]}
    with pytest.raises(ReturnerError, match=r"^returner postgres_local_cache: table jids does not exist .*returners.init postgres_local_cache"):
        returner.get_load(gen_jid())


def test_schema_names_match_salts_script(plc, pg_db) -> None:
    mine = sql(pg_db, "SELECT table_name, column_name, data_type, is_nullable, column_default "
                      "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, ordinal_position")
    mine_idx = sorted(r[0] for r in sql(pg_db, "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"))
    sql(pg_db, "DROP TABLE jids, salt_returns, salt_events")
    with psycopg.connect(host=pg_db["host"], port=pg_db["port"], user=pg_db["user"], dbname=pg_db["db"],
                         autocommit=True) as conn:
        conn.execute(SALT_DDL)
    salts = sql(pg_db, "SELECT table_name, column_name, data_type, is_nullable, column_default "
                       "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, ordinal_position")
    salts_idx = sorted(r[0] for r in sql(pg_db, "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"))
    assert mine == salts
    assert mine_idx == salts_idx  # so init_schema after Salt's script adds nothing
    # Salt's btree index on salt_events.data refuses big events; ours is a hash index


def test_started_is_the_jids_utc_time_in_any_session_time_zone(plc, pg_db) -> None:
    sql(pg_db, f'ALTER DATABASE "{pg_db["db"]}" SET timezone TO \'America/New_York\'')
    plc.close()  # the next session gets the database's time zone
    jid = gen_jid()
    plc.save_load(jid, publish_load(jid))
    (started,) = sql(pg_db, "SELECT started FROM jids WHERE jid = %s", (jid,))[0]
    assert started == jid_to_datetime(jid)
    # Salt passed jid_to_time() text, which PostgreSQL reads in the session's time zone: hours off
    salt_way = sql(pg_db, "SELECT %s::text::timestamptz", (jid_to_time(jid),))[0][0]
    assert salt_way - started in (dt.timedelta(hours=4), dt.timedelta(hours=5))


def test_load_columns_as_salt_writes_them(plc, pg_db) -> None:
    jid = gen_jid()
    load = {"cmd": "publish", "jid": jid, "fun": "test.arg", "arg": ["a", {"k": 1}], "tgt": ["m1", "m2"],
            "tgt_type": "list", "user": "sudo_alice", "ret": "mysql", "kwargs": {"show_jid": False}}
    plc.save_load(jid, load)
    row = sql(pg_db, "SELECT tgt_type, cmd, tgt, kwargs, ret, username, arg, fun FROM jids")[0]
    assert row == ("list", "publish", "['m1', 'm2']", "{'show_jid': False}", "mysql", "sudo_alice",
                   '["a", {"k": 1}]', "test.arg")
    assert plc.get_load(jid) == load
    ssh = gen_jid()
    plc.save_load(ssh, {"jid": ssh, "tgt_type": "glob", "tgt": "*", "user": "root", "fun": "test.ping", "arg": []})
    assert sql(pg_db, "SELECT cmd, kwargs, ret FROM jids WHERE jid = %s", (ssh,)) == [("None", "None", "None")]
    assert plc.get_load(ssh) == {"jid": ssh, "tgt_type": "glob", "tgt": "*", "user": "root", "fun": "test.ping", "arg": []}


def test_duplicate_load_keeps_the_first(plc, pg_db) -> None:
    jid = gen_jid()
    plc.save_load(jid, publish_load(jid))
    plc.save_loads([(jid, ret_for(jid, "m1"), None), (jid, ret_for(jid, "m2"), None)])
    assert sql(pg_db, "SELECT count(*), min(tgt) FROM jids") == [(1, "*")]


def test_return_column_and_success(plc, pg_db) -> None:
    jid = gen_jid()
    plc.returns([ret_for(jid, "m1", {"a": [1, "é"]}), ret_for(jid, "m2", "no", success=False),
                 {"id": "ssh1", "jid": jid, "fun": "test.ping", "return": True}])
    plc.returns([ret_for(jid, "m1", {"a": [1, "é"]})])  # delivered twice, stored once
    rows = sql(pg_db, "SELECT id, fun, jid, return, success FROM salt_returns ORDER BY id")
    assert rows == [
        ("m1", "test.ping", jid, '{"return": {"a": [1, "é"]}, "retcode": 0, "success": true}', True),
        ("m2", "test.ping", jid, '{"return": "no", "retcode": 1, "success": false}', False),
        ("ssh1", "test.ping", jid, '{"return": true}', None)]
    assert plc.get_jid(jid) == {"m1": {"return": {"a": [1, "é"]}, "retcode": 0, "success": True},
                                "m2": {"return": "no", "retcode": 1, "success": False},
                                "ssh1": {"return": True}}


def test_str_return_writes_exactly_what_salt_wrote(pg_db, master_opts) -> None:
    returner = create("postgres_local_cache", pg_opts(pg_db, master_opts, PREFIX, create_schema=True, str_return=True))
    jid = gen_jid()
    returner.returns([ret_for(jid, "m1", {"a": True})])
    assert sql(pg_db, "SELECT return FROM salt_returns") == [('{"return": "{\'a\': True}", "retcode": 0, "success": true}',)]
    assert returner.get_jid(jid)["m1"]["return"] == "{'a': True}"
    returner.close()


def test_rows_salt_wrote_are_read(plc, pg_db) -> None:
    jid = "20240105123456123456"
    sql(pg_db, "INSERT INTO salt_returns (fun, jid, return, id, success) VALUES "
               "('test.ping', %s, '{\"return\": \"True\", \"retcode\": 0, \"success\": true}', 'm1', true), "
               "('test.ping', %s, '\"bare old value\"', 'm2', NULL)", (jid, jid))
    assert plc.get_jid(jid) == {"m1": {"return": "True", "retcode": 0, "success": True},
                                "m2": {"return": "bare old value"}}


def test_prep_jid_and_read_side(plc) -> None:
    jid = plc.prep_jid()
    assert len(jid) == 20 and plc.prep_jid(passed_jid="20240105123456123456") == "20240105123456123456"
    find = gen_jid()
    plc.save_loads([(jid, publish_load(jid, "cmd.run"), None), (find, publish_load(find, "saltutil.find_job"), None)])
    later = gen_jid()
    plc.returns([ret_for(jid, "m1", "first", "cmd.run"), ret_for(later, "m1", "second", "cmd.run"),
                 ret_for(jid, "m2", "only", "cmd.run")])
    assert plc.get_fun("cmd.run") == {"m1": {"return": "second", "retcode": 0, "success": True},
                                      "m2": {"return": "only", "retcode": 0, "success": True}}
    assert plc.get_minions() == ["m1", "m2"]
    jobs = plc.get_jids()
    assert set(jobs) == {jid, find} and jobs[jid]["Function"] == "cmd.run" and jobs[jid]["Arguments"] == ["a", {"k": 1}]
    assert [j["JID"] for j in plc.get_jids_filter(10)] == [jid]
    assert [j["JID"] for j in plc.get_jids_filter(1, filter_find_job=False)] == [find]


def test_get_jids_and_clean_old_jobs_honour_keep_jobs_seconds(pg_db, master_opts) -> None:
    opts = pg_opts(pg_db, {**master_opts, "keep_jobs_seconds": 3600}, PREFIX, create_schema=True)
    returner = create("postgres_local_cache", opts)
    old_time = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=5)
    old = old_time.strftime("%Y%m%d%H%M%S%f")
    new = gen_jid()
    returner.save_loads([(old, publish_load(old), None), (new, publish_load(new), None)])
    returner.returns([ret_for(old, "m1", stamp=old_time.replace(tzinfo=None).isoformat()), ret_for(new, "m1")])
    returner.event_returns([{"tag": "old", "data": {"_stamp": old_time.replace(tzinfo=None).isoformat()}},
                            {"tag": "new", "data": {"x": "y" * 10000}}])  # over Salt's btree limit
    assert set(returner.get_jids()) == {new}  # as Salt: only jobs inside the window
    returner.clean_old_jobs()
    assert sql(pg_db, "SELECT jid FROM jids") == [(new,)]
    assert sql(pg_db, "SELECT jid FROM salt_returns") == [(new,)]
    assert sql(pg_db, "SELECT tag FROM salt_events") == [("new",)]
    returner.close()
    archiving = create("postgres_local_cache", pg_opts(pg_db, {**master_opts, "keep_jobs_seconds": 60, "archive_jobs": True},
                                                       PREFIX))
    sql(pg_db, "UPDATE jids SET started = now() - interval '2 hours'")
    sql(pg_db, "UPDATE salt_returns SET added = now() - interval '2 hours'")
    archiving.clean_old_jobs()
    assert sql(pg_db, "SELECT count(*) FROM jids") == [(0,)]
    assert sql(pg_db, "SELECT jid FROM jids_archive") == [(new,)]
    assert sql(pg_db, "SELECT jid FROM salt_returns_archive") == [(new,)]
    archiving.close()


def test_batch_of_1000(plc, pg_db) -> None:
    jid = gen_jid()
    rets = [ret_for(jid, f"minion-{i:04d}", {"i": i, "text": "x" * 200}) for i in range(1000)]
    started = time.perf_counter()
    plc.returns(rets)
    elapsed = time.perf_counter() - started
    print(f"\npostgres_local_cache: 1000 returns in {elapsed * 1000:.1f} ms = {1000 / elapsed:,.0f} rows/s")
    assert sql(pg_db, "SELECT count(*) FROM salt_returns WHERE success") == [(1000,)]
    assert json.loads(sql(pg_db, "SELECT return FROM salt_returns WHERE id = 'minion-0999'")[0][0])["return"]["i"] == 999
