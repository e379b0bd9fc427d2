"""mysql: what is special to it, on the real MariaDB server (the contract suite covers the rest),
with each driver (mysqlclient and PyMySQL)."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import uuid
from typing import Any, Iterator

import pymysql
import pytest

from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import BackendUnavailable, ReturnerError
from saline.returners.mysql import DDL, MysqlReturner

# Salt's DDL as its documentation gives it (salt-compat.md), charset utf8 (MariaDB's utf8mb3)
SALT_DDL = [
    """CREATE TABLE `jids` (`jid` varchar(255) NOT NULL, `load` mediumtext NOT NULL,
       UNIQUE KEY `jid` (`jid`)) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
    """CREATE TABLE `salt_returns` (`fun` varchar(50) NOT NULL, `jid` varchar(255) NOT NULL,
       `return` mediumtext NOT NULL, `id` varchar(255) NOT NULL, `success` varchar(10) NOT NULL,
       `full_ret` mediumtext NOT NULL, `alter_time` TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
       KEY `id` (`id`), KEY `jid` (`jid`), KEY `fun` (`fun`)) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
    """CREATE TABLE `salt_events` (`id` BIGINT NOT NULL AUTO_INCREMENT, `tag` varchar(255) NOT NULL,
       `data` mediumtext NOT NULL, `alter_time` TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
       `master_id` varchar(255) NOT NULL, PRIMARY KEY (`id`), KEY `tag` (`tag`))
       ENGINE=InnoDB DEFAULT CHARSET=utf8""",
]


def root(db: dict[str, Any], database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["pass"],
                           database=database, autocommit=True)


def query(db: dict[str, Any], sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = root(db, db["db"])
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args or None)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.fixture
def account(mysql_db: dict[str, Any]) -> Iterator[dict[str, str]]:
    """A MariaDB user with a password, allowed on the test database only; dropped afterwards."""
    user, password = f"saline_t_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    conn = root(mysql_db)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
            cur.execute(f"GRANT ALL PRIVILEGES ON `{mysql_db['db']}`.* TO %s@'%%'", (user,))
        yield {"user": user, "password": password}
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        conn.close()


@pytest.fixture(params=["mysqlclient", "pymysql"])
def driver(request: pytest.FixtureRequest) -> str:
    """Every test here runs with each driver (mysql.driver forces it; auto takes mysqlclient)."""
    return str(request.param)


@pytest.fixture
def opts(master_opts: dict[str, Any], mysql_db: dict[str, Any], account: dict[str, str], driver: str) -> dict[str, Any]:
    return {**master_opts, "mysql.host": mysql_db["host"], "mysql.port": mysql_db["port"],
            "mysql.user": account["user"], "mysql.pass": account["password"], "mysql.db": mysql_db["db"],
            "mysql.driver": driver}


@pytest.fixture
def returner(opts: dict[str, Any]) -> Iterator[MysqlReturner]:
    r = registry.create("mysql", opts)
    assert isinstance(r, MysqlReturner)
    r.init_schema()
    yield r
    r.close()


def ping(jid: str, minion: str, **extra: Any) -> dict[str, Any]:
    return {"cmd": "_return", "id": minion, "jid": jid, "fun": "test.ping", "fun_args": [], "return": True,
            "retcode": 0, "success": True, "_stamp": "2024-01-05T12:34:56.123456", **extra}


def columns(db: dict[str, Any], database: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = root(db)
    try:
        with conn.cursor() as cur:
            out = {}
            for table in ("jids", "salt_returns", "salt_events"):
                cur.execute("SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA FROM "
                            "information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
                            "ORDER BY ORDINAL_POSITION", (database, table))
                out[table] = list(cur.fetchall())
                cur.execute("SELECT INDEX_NAME, COLUMN_NAME, NON_UNIQUE FROM information_schema.STATISTICS "
                            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY INDEX_NAME, SEQ_IN_INDEX",
                            (database, table))
                out[table + " keys"] = list(cur.fetchall())
            return out
    finally:
        conn.close()


# -- values, exactly as Salt writes them -----------------------------------------------------------
def test_row_values_are_salts(returner: MysqlReturner, mysql_db: dict[str, Any]) -> None:
    jid = gen_jid()
    load = {"cmd": "publish", "jid": jid, "fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob",
            "user": "root", "ret": "mysql", "minions": ["web1", "web2"]}
    returner.save_load(jid, load, ["web1", "web2"])
    ok = ping(jid, "web1")
    failed = {**ping(jid, "web2"), "return": "Minion did not return. [Not connected]", "retcode": 1, "success": False}
    returner.returns([ok, failed])
    rows = query(mysql_db, "SELECT fun, jid, `return`, id, success, full_ret, alter_time FROM salt_returns "
                           "WHERE jid = %s ORDER BY id", jid)
    assert [r[:5] for r in rows] == [("test.ping", jid, "true", "web1", "1"),
                                     ("test.ping", jid, '"Minion did not return. [Not connected]"', "web2", "0")]
    # the whole return, Salt's JSON: ensure_ascii=False, default separators, keys in order
    assert rows[0][5] == json.dumps(ok, ensure_ascii=False)
    assert rows[1][5] == json.dumps(failed, ensure_ascii=False)
    assert rows[0][6] is not None
    assert query(mysql_db, "SELECT `load` FROM jids WHERE jid = %s", jid) == [(json.dumps(load, ensure_ascii=False),)]
    # reading back: get_jid gives each minion's whole return
    assert returner.get_jid(jid) == {"web1": ok, "web2": failed}


def test_success_missing_is_0_and_multi_function_fun(returner: MysqlReturner, mysql_db: dict[str, Any]) -> None:
    jid = gen_jid()
    ssh = {"jid": jid, "id": "ssh-host", "return": "x", "fun": "cmd.run"}  # salt-ssh sends no success
    multi = {**ping(jid, "multi"), "fun": ["test.ping", "test.echo"], "return": {"test.ping": True, "test.echo": "hi"}}
    returner.returns([ssh, multi])
    assert query(mysql_db, "SELECT id, fun, success FROM salt_returns WHERE jid = %s ORDER BY id", jid) == [
        ("multi", "test.ping,test.echo", "1"), ("ssh-host", "cmd.run", "0")]


def test_events_and_loads(returner: MysqlReturner, mysql_db: dict[str, Any], master_opts: dict[str, Any]) -> None:
    jid = gen_jid()
    data = {"jid": jid, "fun": "test.ping", "_stamp": "2024-01-05T12:34:56.123456", "minions": ["a"]}
    returner.event_returns([{"tag": f"salt/job/{jid}/new", "data": data}, {"tag": "salt/auth", "data": {"id": "a"}}])
    rows = query(mysql_db, "SELECT tag, data, master_id FROM salt_events ORDER BY id")
    assert rows == [(f"salt/job/{jid}/new", json.dumps(data, ensure_ascii=False), master_opts["id"]),
                    ("salt/auth", '{"id": "a"}', master_opts["id"])]
    # a jid keeps its first load, as Salt (publish load before the return loads)
    returner.save_loads([(jid, {"jid": jid, "fun": "first"}, None), (jid, {"jid": jid, "fun": "second"}, None)])
    returner.save_load(jid, {"jid": jid, "fun": "third"})
    assert returner.get_load(jid) == {"jid": jid, "fun": "first"}
    assert query(mysql_db, "SELECT COUNT(*) FROM jids WHERE jid = %s", jid) == [(1,)]


def test_req_jid_gets_a_new_jid_and_its_load(returner: MysqlReturner) -> None:
    returner.returns([{**ping("req", "caller"), "fun_args": ["a"]}])
    jobs = returner.get_jids()
    assert len(jobs) == 1
    jid = next(iter(jobs))
    assert jid != "req" and len(jid) == 20
    assert returner.get_jid(jid)["caller"]["jid"] == jid
    assert returner.get_load(jid)["id"] == "caller"


def test_duplicate_check_is_per_jid_id_fun(returner: MysqlReturner, mysql_db: dict[str, Any]) -> None:
    jid = gen_jid()
    batch = [ping(jid, f"m{i}") for i in range(50)]
    returner.returns(batch + batch[:5])  # duplicates inside one batch too
    returner.returns(batch)
    returner.returns([{**ping(jid, "m1"), "_stamp": "2030-01-01T00:00:00"}])  # same return, re-stamped
    assert query(mysql_db, "SELECT COUNT(*) FROM salt_returns WHERE jid = %s", jid) == [(50,)]
    returner.returns([{**ping(jid, "m1"), "fun": "test.echo"}])  # another function: another row
    assert query(mysql_db, "SELECT COUNT(*) FROM salt_returns WHERE jid = %s", jid) == [(51,)]


def test_a_first_delivery_writes_the_same_rows_without_the_lookup(returner: MysqlReturner,
                                                                  mysql_db: dict[str, Any]) -> None:
    """``returns_first``: for a batch never sent before, the same rows with no duplicate lookup
    (copies inside the batch are still left out); what may have been sent goes through ``returns``."""
    checked, first = gen_jid(), gen_jid()
    returner.returns([ping(checked, f"m{i}", **{"return": {"n": i, "ü": "✓"}}) for i in range(20)])
    batch = [ping(first, f"m{i}", **{"return": {"n": i, "ü": "✓"}}) for i in range(20)]
    returner.returns_first(batch + batch[:3])
    columns = "fun, `return`, id, success, REPLACE(full_ret, jid, 'J')"
    assert query(mysql_db, f"SELECT {columns} FROM salt_returns WHERE jid = %s ORDER BY id", first) == \
        query(mysql_db, f"SELECT {columns} FROM salt_returns WHERE jid = %s ORDER BY id", checked)
    returner.returns(batch)  # a redelivery: found and left out
    assert query(mysql_db, "SELECT COUNT(*) FROM salt_returns WHERE jid = %s", first) == [(20,)]
    returner.returns_first(batch[:2])  # the caller vouches these were never sent: no lookup
    assert query(mysql_db, "SELECT COUNT(*) FROM salt_returns WHERE jid = %s", first) == [(22,)]


def test_get_jids_filter_and_get_fun(returner: MysqlReturner) -> None:
    jids = [gen_jid() for _ in range(4)]
    returner.save_loads([(jids[0], {"jid": jids[0], "fun": "test.ping", "tgt": "*"}, None),
                         (jids[1], {"jid": jids[1], "fun": "saltutil.find_job", "arg": [jids[0]]}, None),
                         (jids[2], {"jid": jids[2], "fun": "test.ping", "tgt": "*"}, None),
                         (jids[3], {"jid": jids[3], "fun": "cmd.run", "arg": ["ls"]}, None)])
    assert [j["JID"] for j in returner.get_jids_filter(2)] == [jids[2], jids[3]]
    assert [j["JID"] for j in returner.get_jids_filter(3)] == [jids[0], jids[2], jids[3]]
    assert [j["JID"] for j in returner.get_jids_filter(3, False)] == jids[1:]
    returner.returns([ping(jids[0], "a"), ping(jids[0], "b"), {**ping(jids[2], "a"), "return": "later"}])
    latest = returner.get_fun("test.ping")
    assert latest["a"]["jid"] == jids[2] and latest["a"]["return"] == "later"
    assert latest["b"]["jid"] == jids[0]
    assert returner.get_minions() == ["a", "b"]


# -- the schema ----------------------------------------------------------------------------------------
def test_init_schema_is_salts_ddl(returner: MysqlReturner, mysql_db: dict[str, Any]) -> None:
    reference = f"{mysql_db['db']}_ref"
    conn = root(mysql_db)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{reference}`")
            cur.execute(f"USE `{reference}`")
            for ddl in SALT_DDL:
                cur.execute(ddl)
        # same columns, types, defaults, keys; only the charset differs (utf8mb4, see the docs)
        assert columns(mysql_db, mysql_db["db"]) == columns(mysql_db, reference)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{reference}`")
        conn.close()
    charsets = query(mysql_db, "SELECT DISTINCT CHARACTER_SET_NAME FROM information_schema.COLUMNS "
                               "WHERE TABLE_SCHEMA = DATABASE() AND CHARACTER_SET_NAME IS NOT NULL")
    assert charsets == [("utf8mb4",)]
    returner.init_schema()  # again: IF NOT EXISTS, nothing changes
    assert set(DDL) == {"jids", "salt_returns", "salt_events"}


def test_tables_made_by_hand_from_salts_ddl(opts: dict[str, Any], mysql_db: dict[str, Any]) -> None:
    conn = root(mysql_db, mysql_db["db"])
    with conn.cursor() as cur:
        for ddl in SALT_DDL:
            cur.execute(ddl)
    conn.close()
    r = registry.create("mysql", opts)  # no init_schema: the user's tables as they are
    jid = gen_jid()
    value = {"text": "emoji 😀 and 漢字", "😀": ["🎉"]}
    r.returns([{**ping(jid, "web😀1"), "return": value}])
    r.event_returns([{"tag": "salt/x/😀", "data": {"v": "😀"}}])
    r.save_load(jid, {"jid": jid, "fun": "test.ping", "arg": ["😀"]})
    # utf8 (3-byte) columns: characters beyond the BMP travel as JSON escapes, read back the same
    stored = query(mysql_db, "SELECT id, `return` FROM salt_returns WHERE jid = %s", jid)
    assert stored == [("web\ufffd1", json.dumps(value, ensure_ascii=False).replace("😀", "\\ud83d\\ude00").replace("🎉", "\\ud83c\\udf89"))]
    assert r.get_jid(jid)["web\ufffd1"]["return"] == value
    assert r.get_load(jid)["arg"] == ["😀"]
    assert query(mysql_db, "SELECT tag FROM salt_events") == [("salt/x/\ufffd",)]
    r.close()


def test_seed_ddl_left_only_jids(opts: dict[str, Any], mysql_db: dict[str, Any]) -> None:
    """The seed's DDL stops at its duplicate index: only `jids` exists. One line says what to do."""
    conn = root(mysql_db, mysql_db["db"])
    with conn.cursor() as cur:
        cur.execute(SALT_DDL[0])
        with pytest.raises(pymysql.err.OperationalError, match="Duplicate key name"):
            cur.execute("CREATE INDEX jid ON jids(jid) USING BTREE")
    conn.close()
    r = registry.create("mysql", opts)
    with pytest.raises(ReturnerError) as info:
        r.returns([ping(gen_jid(), "a")])
    assert str(info.value) == (f"returner mysql: table {mysql_db['db']}.salt_returns does not exist "
                               f"(run: saline-run returners.init mysql)")
    with pytest.raises(ReturnerError, match="salt_returns does not exist"):
        r.check()
    r.init_schema()
    r.check()
    jid = gen_jid()
    r.returns([ping(jid, "a")])
    assert list(r.get_jid(jid)) == ["a"]
    r.close()


def test_create_schema_on_first_connect(opts: dict[str, Any], mysql_db: dict[str, Any]) -> None:
    r = registry.create("mysql", {**opts, "mysql.create_schema": True})
    jid = gen_jid()
    r.returns([ping(jid, "a")])
    assert query(mysql_db, "SELECT COUNT(*) FROM salt_returns") == [(1,)]
    r.close()


def test_missing_database(opts: dict[str, Any], mysql_db: dict[str, Any]) -> None:
    name = f"{mysql_db['db']}_missing"
    r = registry.create("mysql", {**opts, "mysql.user": "root", "mysql.db": name}, None, {"pass": ""})
    with pytest.raises(ReturnerError) as info:
        r.returns([ping(gen_jid(), "a")])
    assert not isinstance(info.value, BackendUnavailable)
    assert str(info.value) == (f"returner mysql: database '{name}' does not exist on "
                               f"{mysql_db['host']}:{mysql_db['port']} (run: saline-run returners.init mysql)")
    try:
        r.init_schema()  # creates the database, then the tables
        r.returns([ping(gen_jid(), "a")])
        assert r.get_minions() == ["a"]
    finally:
        r.close()
        conn = root(mysql_db)
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


def test_wrong_password(opts: dict[str, Any], account: dict[str, str]) -> None:
    wrong = "Wr0ng-" + uuid.uuid4().hex
    r = registry.create("mysql", {**opts, "mysql.pass": wrong})
    with pytest.raises(ReturnerError) as info:
        r.returns([ping(gen_jid(), "a")])
    message = str(info.value)
    assert message.startswith(f"returner mysql: access denied for user '{account['user']}'@")
    assert "check mysql.user and mysql.pass" in message
    assert wrong not in message and account["password"] not in message and "\n" not in message
    assert not isinstance(info.value, BackendUnavailable)  # a retry will not fix it


# -- TLS --------------------------------------------------------------------------------------------
def _self_signed(folder: Any) -> tuple[str, str]:
    cert, key = folder / "client.pem", folder / "client.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=client",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def test_tls_options_reach_the_driver(opts: dict[str, Any], driver: str, tmp_path: Any, mysql_db: dict[str, Any]) -> None:
    plain = registry.create("mysql", opts)
    assert plain.ssl_options() == {} and "ssl" not in plain.connect_args()
    if driver == "pymysql":
        assert plain.connect_args()["ssl_disabled"] is True
    else:
        assert plain.connect_args()["ssl_mode"] == "DISABLED"

    ca = "/etc/ssl/certs/ca-certificates.crt"
    tls = registry.create("mysql", {**opts, "mysql.ssl_ca": ca, "mysql.ssl_cert": "None", "mysql": {"ssl_key": ""}})
    assert tls.ssl_options() == {"ca": ca}  # "None" and "" mean unset, as in Salt
    args = tls.connect_args()
    assert args["ssl"] == {"ca": ca} and "ssl_disabled" not in args
    if driver == "pymysql":
        # what PyMySQL makes of it: TLS required, the CA loaded, the server's certificate verified
        conn = pymysql.connections.Connection(**args, defer_connect=True)
        assert conn.ssl and conn.ctx.verify_mode == ssl.CERT_REQUIRED and conn.ctx.check_hostname
        assert conn.ctx.cert_store_stats()["x509_ca"] > 0
    else:
        # the C library: TLS required, certificate and host name verified (test_mysql_tls.py
        # shows it against a server with TLS)
        assert args["ssl_mode"] == "VERIFY_IDENTITY"
    # this server has no TLS: required TLS is an error, never a silent plain-text connection
    with pytest.raises(ReturnerError) as info:
        tls.returns([ping(gen_jid(), "a")])
    assert "TLS failed" in str(info.value) and "SSL is required" in str(info.value)

    # a client certificate without a CA: TLS required, the server's certificate not verified
    cert, key = _self_signed(tmp_path)
    client = registry.create("mysql", {**opts, "mysql.ssl_cert": cert, "mysql.ssl_key": key})
    assert client.connect_args()["ssl"] == {"cert": cert, "key": key}
    if driver == "mysqlclient":
        assert client.connect_args()["ssl_mode"] == "REQUIRED"
    with pytest.raises(ReturnerError) as info:  # with mysqlclient: found right after the handshake
        client.returns([ping(gen_jid(), "a")])
    assert "TLS failed" in str(info.value) and "SSL is required" in str(info.value), str(info.value)
    assert not isinstance(info.value, BackendUnavailable)

    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    both = registry.create("mysql", {**opts, "mysql.ssl_cert": str(bad), "mysql.ssl_key": str(bad)})
    assert both.ssl_options() == {"cert": str(bad), "key": str(bad)}
    with pytest.raises(ReturnerError, match="cannot set up TLS from ssl_ca/ssl_cert/ssl_key"):
        both.returns([ping(gen_jid(), "a")])
    missing = registry.create("mysql", {**opts, "mysql.ssl_ca": str(tmp_path / "missing.pem")})
    with pytest.raises(ReturnerError, match="cannot set up TLS from ssl_ca/ssl_cert/ssl_key: .*No such file"):
        missing.returns([ping(gen_jid(), "a")])
    assert query(mysql_db, "SHOW TABLES") == []  # nothing was written in plain text


# -- the connection ------------------------------------------------------------------------------------
def test_one_connection_reused_and_reopened_when_the_server_drops_it(returner: MysqlReturner, mysql_db: dict[str, Any]) -> None:
    returner.returns([ping(gen_jid(), "a")])
    first = returner._conn
    assert first is not None
    thread = first.thread_id()
    returner.returns([ping(gen_jid(), "b")])
    returner.get_jids()
    assert returner._conn is first and first.thread_id() == thread  # no new connection per call
    conn = root(mysql_db)
    with conn.cursor() as cur:
        cur.execute("KILL CONNECTION %s", (thread,))  # what a server restart does to the client
    conn.close()
    time.sleep(0.2)
    jid = gen_jid()
    returner.returns([ping(jid, "c")])  # reconnects once, transparently
    assert returner._conn is not None and returner._conn.thread_id() != thread
    assert list(returner.get_jid(jid)) == ["c"]


def test_too_large_for_mediumtext_is_refused_before_sending(returner: MysqlReturner, mysql_db: dict[str, Any]) -> None:
    jid = gen_jid()
    huge = {**ping(jid, "huge"), "return": "x" * (17 * 1024 * 1024)}
    with pytest.raises(ReturnerError) as info:
        returner.returns([ping(jid, "small"), huge])
    assert "the return of huge for job" in str(info.value) and "mediumtext" in str(info.value)
    assert not isinstance(info.value, BackendUnavailable)
    assert query(mysql_db, "SELECT COUNT(*) FROM salt_returns WHERE jid = %s", jid) == [(0,)]  # all or nothing
    returner.returns([ping(jid, "small")])  # the connection is still good
    assert list(returner.get_jid(jid)) == ["small"]


def test_long_fun_and_tag_are_cut_not_failed(returner: MysqlReturner, mysql_db: dict[str, Any]) -> None:
    jid = gen_jid()
    fun = "custom_module." + "f" * 80
    returner.returns([{**ping(jid, "a"), "fun": fun}])
    returner.event_returns([{"tag": "t/" + "x" * 300, "data": {}}])
    assert query(mysql_db, "SELECT fun FROM salt_returns") == [(fun[:50],)]
    assert returner.get_jid(jid)["a"]["fun"] == fun  # full_ret keeps the whole
    assert len(query(mysql_db, "SELECT tag FROM salt_events")[0][0]) == 255


def test_batch_speed(returner: MysqlReturner, mysql_db: dict[str, Any]) -> None:
    jid = gen_jid()
    batch = [ping(jid, f"minion{i:05d}") for i in range(10_000)]
    started = time.perf_counter()
    returner.returns(batch)
    elapsed = time.perf_counter() - started
    assert query(mysql_db, "SELECT COUNT(*) FROM salt_returns WHERE jid = %s", jid) == [(10_000,)]
    assert elapsed < 5, f"10,000 returns took {elapsed:.2f}s"  # one transaction, multi-row INSERTs


# -- retention -------------------------------------------------------------------------------------
def test_clean_old_jobs_archives_and_keeps_jobs_with_recent_returns(opts: dict[str, Any], mysql_db: dict[str, Any]) -> None:
    r = registry.create("mysql", {**opts, "keep_jobs_seconds": 3600, "archive_jobs": True})
    r.init_schema()
    old, mixed, recent = gen_jid(), gen_jid(), gen_jid()
    silent = "20010101000000000000"  # a job from long ago that no minion answered
    r.save_loads([(j, {"jid": j, "fun": "test.ping"}, None) for j in (old, mixed, recent, silent)])
    r.returns([ping(old, "a"), ping(old, "b"), ping(mixed, "a"), ping(mixed, "b"), ping(recent, "a")])
    r.event_returns([{"tag": "old", "data": {}}, {"tag": "new", "data": {}}])
    query(mysql_db, "UPDATE salt_returns SET alter_time = NOW() - INTERVAL 2 HOUR "
                    "WHERE jid = %s OR (jid = %s AND id = 'a')", old, mixed)
    query(mysql_db, "UPDATE salt_events SET alter_time = NOW() - INTERVAL 2 HOUR WHERE tag = 'old'")
    r.clean_old_jobs()
    assert sorted(j for (j,) in query(mysql_db, "SELECT jid FROM jids")) == sorted([mixed, recent])
    assert sorted(query(mysql_db, "SELECT jid, id FROM salt_returns")) == sorted([(mixed, "b"), (recent, "a")])
    assert query(mysql_db, "SELECT tag FROM salt_events") == [("new",)]
    assert sorted(j for (j,) in query(mysql_db, "SELECT jid FROM jids_archive")) == sorted([old, silent])
    assert sorted(query(mysql_db, "SELECT jid, id FROM salt_returns_archive")) == sorted([(old, "a"), (old, "b"), (mixed, "a")])
    assert query(mysql_db, "SELECT tag FROM salt_events_archive") == [("old",)]
    assert r.get_jid(mixed) == {"b": ping(mixed, "b")}
    r.clean_old_jobs()  # again: nothing more, archives unchanged
    assert query(mysql_db, "SELECT COUNT(*) FROM salt_returns_archive") == [(3,)]
    r.close()
