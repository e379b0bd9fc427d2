"""The holes a careful operator found on first contact, closed: a minion holding another minion's
key runs nothing, unknown keys cannot make the master write without limit, every file under
cachedir and pki_dir is private, and a job's ``--return_config``/``--return_kwargs`` reach every
write of its ``--return`` returners (Salt's #43451) while the job cache keeps its own options."""

from __future__ import annotations

import json
import shutil
import stat
import time
from pathlib import Path
from typing import Iterator

import pymysql
import pytest
import zmq

from tests.conftest import MYSQL, unique_name
from tests.faults.conftest import Cluster, RawPeer, logs, master_key, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    opts = {"log_level": "info", "max_pending_keys": 40, "pending_hellos_per_second": 200}
    with Cluster(tmp_path_factory.mktemp("holes"), master_opts=opts) as c:
        c.start_master()
        c.start_minions("real1", "real2")
        yield c


def test_a_minion_with_another_minions_key_runs_nothing_and_stops(cluster: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    d = cluster.write_minion_config("imposter", id="real2")  # real2's id ...
    (d / "pki").mkdir(parents=True, exist_ok=True)
    for name in ("minion.pub", "minion.key"):  # ... with real1's key
        shutil.copy(cluster.minion_dir("real1") / "pki" / name, d / "pki" / name)
    before = cluster.runner("master.stats")["id_mismatch"]
    proc = cluster.start_minion("imposter")
    # real2's and everyone's jobs go on while the imposter tries
    for _ in range(3):
        out = cluster.cli("saline", "*", "cmd.run", f"echo x >> {marker}", "-t", "5", "--out", "json", "--static")
        assert sorted(json.loads(out.stdout)) == ["real1", "real2"], out
    assert proc.wait(20) == 77
    err = (cluster.minion_dir("imposter") / "minion.log").read_text()
    assert "its key is accepted as real1, but this minion's id is real2" in err, err
    assert marker.read_text().count("x") == 6  # real1 and real2, three times: the imposter ran none
    stats = cluster.runner("master.stats")
    assert stats["id_mismatch"] > before
    assert "says hello as real2: refused (no session; it runs no job and stops)" in cluster.master_log()
    # real1 (the key's owner) still gets its jobs
    assert cluster.cli("saline", "real1", "test.ping").returncode == 0


def test_unknown_keys_cannot_fill_the_pending_folder(cluster: Cluster) -> None:
    server = master_key(cluster)
    pending = cluster.master_dir / "pki" / "minions_pre"
    peers = [RawPeer(zmq.DEALER, cluster.ret_port, server) for _ in range(120)]
    try:
        for n, peer in enumerate(peers):  # new keys, new ids, and one accepted id with a new key
            peer.send({"cmd": "hello", "id": "real1" if n == 0 else f"flood-{n}", "grains": {}})
        wait_for(lambda: cluster.runner("master.stats")["pending_refused"] > 0, 20, "the cap to refuse keys")
        answered = cluster.cli("saline", "real*", "test.ping", "-t", "5")  # the real minions still answer
        assert answered.returncode == 0 and answered.stdout.count("True") == 2, answered
        for peer in peers:
            peer.send({"cmd": "hello", "id": "again", "grains": {}})
        time.sleep(1.0)
    finally:
        for peer in peers:
            peer.close()
    waiting = len(list(pending.iterdir())) + len(list((cluster.master_dir / "pki" / "minions_denied").iterdir()))
    assert waiting <= 40, waiting
    assert "keys are pending or denied (max_pending_keys: 40)" in cluster.master_log(), logs(cluster)
    assert cluster.master_log().count("max_pending_keys: 40") <= 2  # one line, not one per hello
    for folder in ("minions_pre", "minions_denied"):  # leave the module's cluster as it was
        for path in (cluster.master_dir / "pki" / folder).iterdir():
            path.unlink()
    assert cluster.cli("saline", "real*", "test.ping", "-t", "3").stdout.count("True") == 2


def test_every_file_the_master_and_minion_write_is_private(cluster: Cluster) -> None:
    assert cluster.cli("saline", "*", "test.ping").returncode == 0
    roots = [cluster.master_dir / "cache", cluster.master_dir / "pki", cluster.master_dir / "sock",
             cluster.minion_dir("real1") / "cache", cluster.minion_dir("real1") / "pki"]
    loose = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() or path.is_socket():
                if path.name == "minion_master.pub" and path.parent.parent == cluster.minion_dir("real1"):
                    continue  # written by the test harness (the strict set-up: copied by hand)
                if stat.S_IMODE(path.stat().st_mode) & 0o077:
                    loose.append(f"{path} {oct(stat.S_IMODE(path.stat().st_mode))}")
    assert not loose, loose
    names = {p.name for p in (cluster.master_dir / "cache").iterdir()}
    assert {"outbox.db", "master.db"} <= names
    assert stat.S_IMODE((cluster.master_dir / "master.log").stat().st_mode) == 0o600


def _count(db: dict, sql: str, *args: object) -> int:
    try:
        conn = pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["pass"], database=db["db"])
    except pymysql.err.OperationalError:
        return 0  # the database does not exist (yet): nothing was written there
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return int(cur.fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def three_dbs() -> Iterator[tuple[dict, dict, dict]]:
    from tests.e2e.test_mysql_walkthrough import DDL

    dbs = tuple({**MYSQL, "db": unique_name(f"saline_{n}")} for n in ("default", "alt", "kw"))
    conn = pymysql.connect(host=MYSQL["host"], port=MYSQL["port"], user=MYSQL["user"], password=MYSQL["pass"],
                           autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE USER IF NOT EXISTS 'salt'@'127.0.0.1' IDENTIFIED BY 'saltpass'")
        for db in dbs:
            cur.execute(f"CREATE DATABASE `{db['db']}`")
            cur.execute(f"GRANT ALL ON `{db['db']}`.* TO 'salt'@'127.0.0.1'")
            cur.execute(f"USE `{db['db']}`")
            for statement in DDL:
                cur.execute(statement)
    conn.close()
    try:
        yield dbs  # type: ignore[misc]
    finally:
        conn = pymysql.connect(host=MYSQL["host"], port=MYSQL["port"], user=MYSQL["user"], password=MYSQL["pass"],
                               autocommit=True)
        with conn.cursor() as cur:
            for db in dbs:
                cur.execute(f"DROP DATABASE IF EXISTS `{db['db']}`")
        conn.close()


def test_return_config_and_kwargs_reach_the_load_and_never_the_job_cache(tmp_path: Path,
                                                                          three_dbs: tuple[dict, dict, dict]) -> None:
    default, alt, kw = three_dbs
    opts = {"mysql.host": MYSQL["host"], "mysql.port": MYSQL["port"], "mysql.user": "salt",
            "mysql.pass": "saltpass", "mysql.db": default["db"], "alt.mysql.db": alt["db"]}
    with Cluster(tmp_path, master_opts=opts) as c:
        c.start_master()
        c.start_minions("m1")
        by_config = c.cli("saline", "m1", "test.ping", "--return", "mysql", "--return_config", "alt", "--show-jid")
        by_kwargs = c.cli("saline", "m1", "test.ping", "--return", "mysql", "--return_kwargs",
                          json.dumps({"db": kw["db"], "pass": "saltpass"}), "--show-jid")
        jids = [r.stdout.split("jid ")[1].split()[0] for r in (by_config, by_kwargs)]
        assert by_config.returncode == 0 and by_kwargs.returncode == 0, (by_config, by_kwargs)
        for db, jid in ((alt, jids[0]), (kw, jids[1])):
            wait_for(lambda: _count(db, "SELECT COUNT(*) FROM salt_returns WHERE jid = %s", jid) == 1, 30,
                     f"the return of {jid} in {db['db']}")
            wait_for(lambda: _count(db, "SELECT COUNT(*) FROM jids WHERE jid = %s", jid) == 1, 30,
                     f"the load of {jid} in {db['db']}")
        c.cli("saline-run", "returners.status")  # lets pending deliveries finish first
        for jid in jids:  # nothing in the default database, and the job cache has the returns
            assert _count(default, "SELECT COUNT(*) FROM salt_returns WHERE jid = %s", jid) == 0
            assert _count(default, "SELECT COUNT(*) FROM jids WHERE jid = %s", jid) == 0
            looked = c.runner("jobs.lookup_jid", jid)
            assert looked == {"m1": True}, looked
        status = c.runner("returners.status")
        assert status["saline_cache"]["dead"] == 0 and status["mysql"]["dead"] == 0, status
        # an option that cannot heal by waiting is refused before anything is published
        listed = len(c.runner("jobs.list_jobs"))
        bad = c.cli("saline", "m1", "test.ping", "--return", "mysql", "--return_kwargs", '{"prot": 1}')
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad
        assert "returner mysql: --return_kwargs names unknown option 'prot'" in bad.stderr
        wrong_type = c.cli("saline", "m1", "test.ping", "--return", "mysql", "--return_kwargs", '{"port": "abc"}')
        assert wrong_type.returncode == 2 and "option 'port' must be int" in wrong_type.stderr, wrong_type
        assert len(c.runner("jobs.list_jobs")) == listed
        # returners.status: ISO times, and whether the last error is older than the last success
        shown = c.runner("returners.status")["mysql"]
        assert shown["state"] == "ok" and shown["last_success_time"].endswith("+00:00"), shown
