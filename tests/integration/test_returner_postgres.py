"""postgres returner on the real PostgreSQL: Salt's tables, values, errors, reconnects, retention.

Authentication and TLS need a server that asks for a password and speaks TLS; the shared server
here trusts 127.0.0.1 and has ssl off, so ``pg_private`` starts a second, private PostgreSQL
(scram-sha-256, ssl on with a self-signed certificate) from the same installation.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from saline.jid import gen_jid
from saline.returners.base import BackendUnavailable, ReturnerError
from saline.returners.registry import create

PRIVATE_PASSWORD = "Priv-Secret-4242"

# Salt's own script for the postgres returner, as a user would have run it.
SALT_DDL = """
DROP TABLE IF EXISTS jids;
CREATE TABLE jids (
  jid   varchar(20) PRIMARY KEY,
  load  text NOT NULL
);
DROP TABLE IF EXISTS salt_returns;
CREATE TABLE salt_returns (
  fun       varchar(50) NOT NULL,
  jid       varchar(255) NOT NULL,
  return    text NOT NULL,
  full_ret  text,
  id        varchar(255) NOT NULL,
  success   varchar(10) NOT NULL,
  alter_time   TIMESTAMP WITH TIME ZONE DEFAULT now()
);
CREATE INDEX idx_salt_returns_id ON salt_returns (id);
CREATE INDEX idx_salt_returns_jid ON salt_returns (jid);
CREATE INDEX idx_salt_returns_fun ON salt_returns (fun);
CREATE INDEX idx_salt_returns_updated ON salt_returns (alter_time);
DROP TABLE IF EXISTS salt_events;
DROP SEQUENCE IF EXISTS seq_salt_events_id;
CREATE SEQUENCE seq_salt_events_id;
CREATE TABLE salt_events (
    id BIGINT NOT NULL UNIQUE DEFAULT nextval('seq_salt_events_id'),
    tag varchar(255) NOT NULL,
    data text NOT NULL,
    alter_time TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    master_id varchar(255) NOT NULL
);
CREATE INDEX idx_salt_events_tag on salt_events (tag);
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def pg_private() -> Iterator[dict[str, Any]]:
    """A private PostgreSQL with password authentication and TLS, on a free port."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql; run scripts/services.sh",
                    pytrace=False)
    bindir = Path(bins[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="saline-pg-"))
    as_pg: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the private server as the postgres user
        shutil.chown(root, "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    (root / "pw").write_text(PRIVATE_PASSWORD + "\n")
    data = root / "data"
    port = free_port()
    try:
        if as_pg:
            shutil.chown(root / "pw", "postgres")
        subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data), "-A", "scram-sha-256",
                        f"--pwfile={root / 'pw'}", "-U", "postgres"], check=True, capture_output=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-keyout", str(data / "server.key"),
                        "-out", str(data / "server.crt")], check=True, capture_output=True)
        os.chmod(data / "server.key", 0o600)
        if as_pg:
            shutil.chown(data / "server.key", "postgres")
            shutil.chown(data / "server.crt", "postgres")
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w",
                        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c ssl=on", "start"],
                       check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start a private PostgreSQL: {exc.cmd[0]}: {exc.stderr.decode()[-300:]}", pytrace=False)
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=PRIVATE_PASSWORD,
                         dbname="postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE salt")
    try:
        yield {"host": "127.0.0.1", "port": port, "user": "postgres", "passwd": PRIVATE_PASSWORD, "db": "salt",
               "cert": str(data / "server.crt")}
    finally:
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def pg_opts(db: dict[str, Any], master_opts: dict[str, Any], prefix: str = "returner.postgres",
            **extra: Any) -> dict[str, Any]:
    opts = dict(master_opts)
    opts.update({f"{prefix}.host": db["host"], f"{prefix}.port": db["port"], f"{prefix}.user": db["user"],
                 f"{prefix}.db": db["db"]})
    opts.update({f"{prefix}.{k}": v for k, v in extra.items()})
    return opts


def sql(db: dict[str, Any], query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(host=db["host"], port=db["port"], user=db["user"], dbname=db["db"], autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def ret_for(jid: str, minion: str, value: Any = True, fun: str = "test.ping", success: bool = True,
            stamp: str | None = None) -> dict[str, Any]:
    return {"cmd": "_return", "id": minion, "jid": jid, "fun": fun, "fun_args": [], "return": value,
            "retcode": 0 if success else 1, "success": success,
            "_stamp": stamp or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat()}


def publish_load(jid: str, fun: str = "test.ping", tgt: Any = "*") -> dict[str, Any]:
    return {"cmd": "publish", "jid": jid, "fun": fun, "arg": ["a", {"k": 1}], "tgt": tgt, "tgt_type": "glob",
            "user": "root", "ret": "", "minions": ["m1", "m2"], "kwargs": {"show_jid": False}}


@pytest.fixture
def pg(pg_db: dict[str, Any], master_opts: dict[str, Any]):
    returner = create("postgres", pg_opts(pg_db, master_opts, create_schema=True))
    yield returner
    returner.close()


def test_schema_is_salts(pg, pg_db) -> None:
    pg.init_schema()
    pg.init_schema()  # re-runnable
    cols = sql(pg_db, "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable "
                      "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position")
    assert [c for c in cols if c[0] == "jids"] == [
        ("jids", "jid", "character varying", 20, "NO"), ("jids", "load", "text", None, "NO")]
    assert [c[1:] for c in cols if c[0] == "salt_returns"] == [
        ("fun", "character varying", 50, "NO"), ("jid", "character varying", 255, "NO"), ("return", "text", None, "NO"),
        ("full_ret", "text", None, "YES"), ("id", "character varying", 255, "NO"),
        ("success", "character varying", 10, "NO"), ("alter_time", "timestamp with time zone", None, "YES")]
    assert [c[1] for c in cols if c[0] == "salt_events"] == ["id", "tag", "data", "alter_time", "master_id"]
    indexes = {row[0] for row in sql(pg_db, "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert {"jids_pkey", "idx_salt_returns_id", "idx_salt_returns_jid", "idx_salt_returns_fun",
            "idx_salt_returns_updated", "idx_salt_events_tag", "salt_events_id_key"} <= indexes
    assert sql(pg_db, "SELECT column_default FROM information_schema.columns "
                      "WHERE table_name = 'salt_events' AND column_name = 'id'") == [("nextval('seq_salt_events_id'::regclass)",)]


def test_values_written_as_salt_does(pg, pg_db) -> None:
    jid = gen_jid()
    stamp = "2024-01-05T12:34:56.123456"
    ok = ret_for(jid, "m1", {"käse": "ü", "n": [1, 2.5, None]}, stamp=stamp)
    bad = ret_for(jid, "m2", "boom", success=False)
    pg.returns([ok, bad])
    rows = sql(pg_db, "SELECT id, fun, jid, return, full_ret, success, alter_time FROM salt_returns ORDER BY id")
    assert rows[0][:3] == ("m1", "test.ping", jid)
    assert rows[0][3] == json.dumps(ok["return"], ensure_ascii=False) == '{"käse": "ü", "n": [1, 2.5, null]}'
    assert rows[0][4] == json.dumps(ok, ensure_ascii=False)
    assert (rows[0][5], rows[1][5]) == ("true", "false")
    assert rows[0][6] == dt.datetime(2024, 1, 5, 12, 34, 56, 123456, tzinfo=dt.timezone.utc)
    assert pg.get_jid(jid) == {"m1": ok, "m2": bad}


def test_alternate_keys_and_precedence(pg_db, master_opts) -> None:
    opts = dict(master_opts)
    opts.update({"postgres.host": pg_db["host"], "postgres.port": pg_db["port"], "postgres.user": "nobody",
                 "returner.postgres.user": pg_db["user"], "postgres": {"db": pg_db["db"]},
                 "postgres.create_schema": True})
    returner = create("postgres", opts)
    assert (returner.opts["user"], returner.opts["db"], returner.opts["passwd"]) == (pg_db["user"], pg_db["db"], "salt")
    returner.returns([ret_for(gen_jid(), "m1")])
    assert returner.get_minions() == ["m1"]
    returner.close()


def test_tables_made_by_salts_script(pg_db, master_opts) -> None:
    with psycopg.connect(host=pg_db["host"], port=pg_db["port"], user=pg_db["user"], dbname=pg_db["db"],
                         autocommit=True) as conn:
        conn.execute(SALT_DDL)
    returner = create("postgres", pg_opts(pg_db, master_opts))
    jid = gen_jid()
    returner.save_load(jid, publish_load(jid))
    returner.returns([ret_for(jid, "m1")])
    returner.event_return([{"tag": f"salt/job/{jid}/new", "data": {"jid": jid, "_stamp": "2024-01-05T00:00:00"}}])
    assert returner.get_load(jid)["tgt"] == "*"
    assert sql(pg_db, "SELECT tag, master_id FROM salt_events") == [(f"salt/job/{jid}/new", "testmaster")]
    returner.close()


def test_first_load_kept_and_duplicates_stored_once(pg, pg_db) -> None:
    jid = gen_jid()
    pg.save_load(jid, publish_load(jid))
    ret = ret_for(jid, "m1")
    pg.save_load(jid, ret)  # Salt's store_job saves the return payload as the load again
    pg.returns([ret, ret])
    pg.returns([ret])
    assert pg.get_load(jid) == publish_load(jid)
    assert sql(pg_db, "SELECT count(*) FROM salt_returns") == [(1,)]
    assert sql(pg_db, "SELECT count(*) FROM jids") == [(1,)]


@pytest.mark.parametrize("name", ["postgres", "pgjsonb"])
def test_a_first_delivery_writes_the_same_rows_without_the_lookup(name: str, pg_db, master_opts) -> None:
    """``returns_first``: for a batch never sent before, the same rows with no duplicate lookup
    (copies inside the batch are still left out); what may have been sent goes through ``returns``."""
    returner = create(name, pg_opts(pg_db, master_opts, prefix=f"returner.{name}", create_schema=True))
    try:
        checked, first, stamp = gen_jid(), gen_jid(), "2026-12-07T10:00:00.000001"
        returner.returns([ret_for(checked, f"m{i}", {"n": i, "ü": "✓"}, stamp=stamp) for i in range(20)])
        batch = [ret_for(first, f"m{i}", {"n": i, "ü": "✓"}, stamp=stamp) for i in range(20)]
        returner.returns_first(batch + batch[:3])
        columns = "fun, return::text, id, success, replace(full_ret::text, jid, 'J'), alter_time"
        rows = f"SELECT {columns} FROM salt_returns WHERE jid = %s ORDER BY id"
        assert sql(pg_db, rows, (first,)) == sql(pg_db, rows, (checked,))
        returner.returns(batch)  # a redelivery: found and left out
        assert sql(pg_db, "SELECT count(*) FROM salt_returns WHERE jid = %s", (first,)) == [(20,)]
        returner.returns_first(batch[:2])  # the caller vouches these were never sent: no lookup
        assert sql(pg_db, "SELECT count(*) FROM salt_returns WHERE jid = %s", (first,)) == [(22,)]
    finally:
        returner.close()


def test_read_side(pg) -> None:
    old, new, find = gen_jid(), gen_jid(), gen_jid()
    pg.save_loads([(old, publish_load(old, "test.echo"), None), (new, publish_load(new, "test.echo"), None),
                   (find, publish_load(find, "saltutil.find_job"), None)])
    pg.returns([ret_for(old, "m1", "old", "test.echo"), ret_for(old, "m2", "old", "test.echo"),
                ret_for(new, "m1", "new", "test.echo"), ret_for(find, "m1", {}, "saltutil.find_job")])
    assert {m: r["return"] for m, r in pg.get_fun("test.echo").items()} == {"m1": "new", "m2": "old"}
    assert pg.get_fun("nothing.here") == {}
    assert pg.get_minions() == ["m1", "m2"]
    jobs = pg.get_jids()
    assert set(jobs) == {old, new, find}
    assert jobs[old]["Function"] == "test.echo" and jobs[old]["Arguments"] == ["a", {"k": 1}]
    assert [j["JID"] for j in pg.get_jids_filter(5)] == [old, new]
    assert [j["JID"] for j in pg.get_jids_filter(2, filter_find_job=False)] == [new, find]
    assert pg.get_load("20000101000000000000") == {} and pg.get_jid("20000101000000000000") == {}


def test_req_jid_gets_a_real_one(pg) -> None:
    pg.returns([ret_for("req", "m1", "local")])
    (jid,) = pg.get_jids()
    assert len(jid) == 20 and pg.get_jid(jid)["m1"]["return"] == "local"
    assert pg.get_load(jid)["id"] == "m1"


def test_clean_old_jobs_deletes_and_archives(pg_db, master_opts) -> None:
    def run(archive: bool) -> dict[str, list]:
        sql(pg_db, "DROP TABLE IF EXISTS jids, salt_returns, salt_events, jids_archive, "
                   "salt_returns_archive, salt_events_archive")
        opts = pg_opts(pg_db, {**master_opts, "keep_jobs_seconds": 3600, "archive_jobs": archive}, create_schema=True)
        returner = create("postgres", opts)
        long_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)).replace(tzinfo=None)
        old_jid = long_ago.strftime("%Y%m%d%H%M%S%f")
        straggler_jid = (long_ago + dt.timedelta(seconds=1)).strftime("%Y%m%d%H%M%S%f")
        new_jid = gen_jid()
        returner.save_loads([(j, publish_load(j), None) for j in (old_jid, straggler_jid, new_jid)])
        returner.returns([ret_for(old_jid, "m1", stamp=long_ago.isoformat()),
                          ret_for(straggler_jid, "m1", stamp=long_ago.isoformat()),
                          ret_for(straggler_jid, "m2"),  # still arriving: the job must stay
                          ret_for(new_jid, "m1")])
        returner.event_returns([{"tag": "old", "data": {"_stamp": long_ago.isoformat()}},
                                {"tag": "new", "data": {}}])
        returner.clean_old_jobs()
        out = {"jids": sorted(r[0] for r in sql(pg_db, "SELECT jid FROM jids")),
               "returns": sorted(sql(pg_db, "SELECT jid, id FROM salt_returns")),
               "events": [r[0] for r in sql(pg_db, "SELECT tag FROM salt_events")],
               "expect": [old_jid, straggler_jid, new_jid]}
        if archive:
            out["archived"] = [r[0] for r in sql(pg_db, "SELECT jid FROM jids_archive")]
            out["archived_returns"] = sql(pg_db, "SELECT count(*) FROM salt_returns_archive")[0][0]
            out["archived_events"] = [r[0] for r in sql(pg_db, "SELECT tag FROM salt_events_archive")]
        returner.close()
        return out

    out = run(archive=False)
    old_jid, straggler_jid, new_jid = out["expect"]
    assert out["jids"] == [straggler_jid, new_jid]
    assert out["returns"] == [(straggler_jid, "m2"), (new_jid, "m1")]
    assert out["events"] == ["new"]
    out = run(archive=True)
    old_jid, straggler_jid, new_jid = out["expect"]
    assert out["jids"] == [straggler_jid, new_jid] and out["archived"] == [old_jid]
    assert out["archived_returns"] == 2 and out["archived_events"] == ["old"]


def test_keep_jobs_zero_keeps_everything(pg_db, master_opts) -> None:
    returner = create("postgres", pg_opts(pg_db, {**master_opts, "keep_jobs_seconds": 0}, create_schema=True))
    returner.returns([ret_for("20000101000000000000", "m1", stamp="2000-01-01T00:00:00")])
    returner.clean_old_jobs()
    assert returner.get_minions() == ["m1"]
    returner.close()


def test_unique_jid_too_long_for_salts_jids_column(pg) -> None:
    jid = gen_jid(unique_jid=True)
    with pytest.raises(ReturnerError) as err:
        pg.save_load(jid, publish_load(jid))
    msg = str(err.value)
    assert msg.startswith("returner postgres: ") and "varchar(20)" in msg and "\n" not in msg


def test_missing_table_names_it(pg_db, master_opts) -> None:
    returner = create("postgres", pg_opts(pg_db, master_opts))
    with pytest.raises(ReturnerError) as err:
        returner.returns([ret_for(gen_jid(), "m1")])
    assert str(err.value) == (f"returner postgres: table salt_returns does not exist in database {pg_db['db']}; "
                              "create it with: saline-run returners.init postgres (or set create_schema: true)")
    assert not isinstance(err.value, BackendUnavailable)
    with pytest.raises(ReturnerError, match="table jids, salt_returns, salt_events does not exist"):
        returner.check()
    returner.init_schema()
    returner.check()
    returner.close()


def test_missing_database_and_role(pg_db, master_opts) -> None:
    returner = create("postgres", pg_opts({**pg_db, "db": "saline_no_such_db"}, master_opts))
    with pytest.raises(ReturnerError) as err:
        returner.get_jids()
    assert str(err.value).startswith("returner postgres: database saline_no_such_db does not exist on PostgreSQL at 127.0.0.1:")
    assert not isinstance(err.value, BackendUnavailable)
    # The shared server trusts 127.0.0.1 (any password passes), so here a role that does not exist.
    returner = create("postgres", pg_opts({**pg_db, "user": "saline_t_no_role"}, master_opts, passwd="pw-x1"))
    with pytest.raises(ReturnerError) as err:
        returner.get_jids()
    assert str(err.value).startswith("returner postgres: role saline_t_no_role does not exist")


def test_wrong_password_is_one_line_without_the_password(pg_private, master_opts) -> None:
    wrong = "Wrong-Pass-7731"
    returner = create("postgres", pg_opts(pg_private, master_opts, passwd=wrong))
    with pytest.raises(ReturnerError) as err:
        returner.returns([ret_for(gen_jid(), "m1")])
    msg = str(err.value)
    assert msg == f"returner postgres: wrong password for user postgres on PostgreSQL at 127.0.0.1:{pg_private['port']} (password authentication failed)"
    assert not isinstance(err.value, BackendUnavailable) and wrong not in msg
    right = create("postgres", pg_opts(pg_private, master_opts, passwd=pg_private["passwd"], create_schema=True))
    right.returns([ret_for(gen_jid(), "m1")])
    assert right.get_minions() == ["m1"]
    right.close()


def test_sslmode_require(pg_db, pg_private, master_opts) -> None:
    assert sql(pg_db, "SHOW ssl") == [("off",)]  # the shared server: TLS is refused in one line
    returner = create("postgres", pg_opts(pg_db, master_opts, sslmode="require"))
    with pytest.raises(ReturnerError) as err:
        returner.get_jids()
    assert str(err.value) == f"returner postgres: sslmode=require but PostgreSQL at 127.0.0.1:{pg_db['port']} has SSL turned off"
    # the private server speaks TLS: the connection is encrypted, and verify-ca checks its certificate
    returner = create("postgres", pg_opts(pg_private, master_opts, passwd=pg_private["passwd"], sslmode="verify-ca",
                                          sslrootcert=pg_private["cert"], create_schema=True))
    returner.returns([ret_for(gen_jid(), "tls-minion")])
    assert returner.link.run(lambda c: c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()) == (True,)
    returner.close()
    returner = create("postgres", pg_opts(pg_private, master_opts, passwd=pg_private["passwd"], sslmode="verify-ca",
                                          sslrootcert="/nonexistent/root.crt"))
    with pytest.raises(ReturnerError) as err:
        returner.get_jids()
    assert str(err.value).startswith("returner postgres: cannot connect to PostgreSQL at 127.0.0.1:")
    assert "root certificate file" in str(err.value) and "\n" not in str(err.value)


def test_unreachable_is_backend_unavailable(pg_db, master_opts) -> None:
    returner = create("postgres", pg_opts(pg_db, master_opts, port=free_port(), passwd="Secret-99z"))
    with pytest.raises(BackendUnavailable) as err:
        returner.returns([ret_for(gen_jid(), "m1")])
    msg = str(err.value)
    assert msg.startswith("returner postgres: cannot connect to PostgreSQL at 127.0.0.1:") and "Connection refused" in msg
    assert "\n" not in msg and "Secret-99z" not in msg


def test_one_connection_reused_and_reopened_after_the_server_drops_it(pg, pg_db) -> None:
    jid = gen_jid()
    for i in range(20):
        pg.returns([ret_for(jid, f"m{i}")])
        pg.get_jid(jid)
    sessions = sql(pg_db, "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'saline'",
                   (pg_db["db"],))
    assert len(sessions) == 1
    # what a server restart does to a kept connection
    sql(pg_db, "SELECT pg_terminate_backend(%s)", (sessions[0][0],))
    pg.returns([ret_for(jid, "after-restart")])
    assert "after-restart" in pg.get_jid(jid)
    after = sql(pg_db, "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'saline'",
                (pg_db["db"],))
    assert len(after) == 1 and after != sessions


def test_a_forked_child_opens_its_own_connection(pg, pg_db) -> None:
    jid = gen_jid()
    pg.returns([ret_for(jid, "parent")])
    pid = os.fork()
    if pid == 0:  # the child: must not use (nor close) the parent's session
        code = 1
        try:
            pg.returns([ret_for(jid, "child")])
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    pg.returns([ret_for(jid, "parent-again")])  # the parent's connection is intact
    assert set(pg.get_jid(jid)) == {"parent", "child", "parent-again"}


def test_batch_of_1000_is_one_transaction(pg, pg_db) -> None:
    jid = gen_jid()
    pg.init_schema()
    rets = [ret_for(jid, f"minion-{i:04d}", {"i": i, "text": "x" * 200}) for i in range(1000)]
    started = time.perf_counter()
    pg.returns(rets)
    elapsed = time.perf_counter() - started
    print(f"\npostgres: 1000 returns in {elapsed * 1000:.1f} ms = {1000 / elapsed:,.0f} rows/s")
    assert sql(pg_db, "SELECT count(*), count(DISTINCT xmin::text) FROM salt_returns") == [(1000, 1)]
    assert len(pg.get_jid(jid)) == 1000
    # a batch that fails leaves nothing behind
    with pytest.raises(ReturnerError, match="a value is longer than its column allows"):
        pg.returns([ret_for(gen_jid(), "ok"), ret_for("1" * 300, "x")])
    assert sql(pg_db, "SELECT count(*) FROM salt_returns") == [(1000,)]


def test_long_fun_and_id_are_cut_to_the_columns_not_failing_the_batch(pg, pg_db) -> None:
    jid = gen_jid()
    funs = ["test.ping", "test.echo", "cmd.run", "grains.items", "state.apply", "pkg.version"]
    ret = {**ret_for(jid, "m" * 300), "fun": funs}
    pg.returns([ret])
    pg.event_returns([{"tag": "t" * 400, "data": {}}])
    (fun, minion, full), = sql(pg_db, "SELECT fun, id, full_ret FROM salt_returns")
    assert fun == ",".join(funs)[:50] and minion == "m" * 255
    assert json.loads(full)["fun"] == funs and json.loads(full)["id"] == "m" * 300
    assert sql(pg_db, "SELECT length(tag) FROM salt_events") == [(255,)]
    pg.returns([ret])  # the cut id still finds the stored row: delivered twice, stored once
    assert sql(pg_db, "SELECT count(*) FROM salt_returns") == [(1,)]
