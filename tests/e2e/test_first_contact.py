"""What a Salt user meets in the first hour, with real processes: the master's key taken on first
contact (and pinned, and never re-trusted silently), the first job after ``saline-key -a``, a
listed minion that does not exist, a minion that is not connected, ``-d`` that says why it
cannot start, a minion that says why it cannot reach its master, option typos and ``root_dir``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from saline.localcluster import LocalCluster, free_port
from saline.transport.keys import ensure_keypair, fingerprint

pytestmark = pytest.mark.e2e


def _log(cluster: LocalCluster, mid: str) -> str:
    path = cluster.minion_dir(mid) / "minion.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _run_minion(cfg_dir: Path, *extra: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saline.cli.minion", "-c", str(cfg_dir), *extra],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("first")) as c:
        c.start_master()
        yield c


def test_a_new_minion_takes_the_key_is_pending_and_gets_the_first_job_at_once(cluster: LocalCluster) -> None:
    cluster.start_minion("fresh1", copy_master_key=False)
    cluster.wait_for(lambda: (cluster.master_dir / "pki" / "minions_pre" / "fresh1").exists(), 20, "fresh1 pending")
    listing = cluster.cli("saline-key", "-L").stdout
    assert listing.split("Unaccepted Keys:\n")[1].startswith("fresh1\n"), listing
    kept = cluster.minion_dir("fresh1") / "pki" / "minion_master.pub"
    master_pub = (cluster.master_dir / "pki" / "master.pub").read_text().strip()
    assert kept.read_text().strip() == master_pub and kept.stat().st_mode & 0o777 == 0o600
    assert f"trusting the master's public key on first use: fingerprint {fingerprint(master_pub)}" in _log(cluster, "fresh1")
    # the fingerprint saline-key -F master prints is the one the minion logged (what master_finger pins)
    finger = cluster.cli("saline-key", "-F", "master").stdout
    assert finger == f"Local Keys:\nmaster.pub:  {fingerprint(master_pub)}\n"
    assert cluster.cli("saline-key", "-y", "-a", "fresh1").returncode == 0
    started = time.monotonic()
    first = cluster.cli("saline", "fresh1", "test.ping", "-t", "5")
    took = time.monotonic() - started
    # acceptance_wait_time is 0.5 s in these configs: the answer must not wait for the next hello
    assert first.returncode == 0 and first.stdout == "fresh1:\n    True\n", first
    assert took < 3.0, took


def test_master_finger_pins_the_key(cluster: LocalCluster, tmp_path: Path) -> None:
    master_pub = (cluster.master_dir / "pki" / "master.pub").read_text().strip()
    good = cluster.write_minion_config("pinned", master_finger=fingerprint(master_pub).upper())
    proc = cluster.start_minion("pinned", copy_master_key=False)
    cluster.wait_for(lambda: (cluster.master_dir / "pki" / "minions_pre" / "pinned").exists(), 20, "pinned pending")
    assert proc.poll() is None and "matches master_finger" in _log(cluster, "pinned")
    cluster.stop("pinned")
    # a finger that does not match: the minion refuses the served key and stops, with one line
    wrong = "ab:" * 31 + "cd"
    d = cluster.write_minion_config("mispinned", master_finger=wrong)
    run = _run_minion(d)
    assert run.returncode == 77, run
    assert f"not the master_finger {wrong}: refusing it" in run.stderr and "Traceback" not in run.stderr
    assert not (d / "pki" / "minion_master.pub").exists()
    assert good.exists()


def test_a_changed_master_key_is_refused(cluster: LocalCluster) -> None:
    d = cluster.write_minion_config("trusting")
    other_pub, _ = ensure_keypair(d / "old-master", "master")
    (d / "pki").mkdir(parents=True, exist_ok=True)
    (d / "pki" / "minion_master.pub").write_text(other_pub + "\n")  # kept from an earlier master
    run = _run_minion(d)
    master_pub = (cluster.master_dir / "pki" / "master.pub").read_text().strip()
    assert run.returncode == 77, run
    assert f"presents a key with fingerprint {fingerprint(master_pub)}, not the trusted one" in run.stderr, run.stderr
    assert "refusing it" in run.stderr and "Traceback" not in run.stderr
    assert (d / "pki" / "minion_master.pub").read_text().strip() == other_pub  # never replaced silently


def test_list_target_names_unknown_ids_and_a_down_minion_is_not_waited_for(cluster: LocalCluster) -> None:
    for mid in ("web1", "web2"):
        cluster.start_minion(mid)
        cluster.accept(mid)
    listed = cluster.cli("saline", "-L", "web1,typo-host", "test.ping")
    assert listed.returncode == 1, listed
    assert listed.stdout == "typo-host:\n    Minion did not return. [No response]\nweb1:\n    True\n" or \
        listed.stdout == "web1:\n    True\ntypo-host:\n    Minion did not return. [No response]\n", listed.stdout
    ghost = cluster.cli("saline", "ghost", "test.ping")
    assert ghost.returncode == 2 and "No minions matched the target. No command was sent, no jid was assigned." in ghost.stderr
    cluster.stop("web2")
    cluster.wait_for(lambda: "web2" not in cluster.cli("saline", "web*", "test.ping", "-t", "2").stdout.split(
        "Minion did not return. [Not connected]")[0].split("web1")[0], 10, "the master to see web2 gone")
    started = time.monotonic()
    down = cluster.cli("saline", "web*", "test.ping", "-t", "10")
    took = time.monotonic() - started
    assert down.returncode == 1 and "web1:\n    True\n" in down.stdout, down
    assert "web2:\n    Minion did not return. [Not connected]\n" in down.stdout, down.stdout
    assert took < 5.0, took  # not timeout (10 s) + gather_job_timeout: the master knows it is gone


def test_the_progress_bar_shows_on_a_terminal_and_never_in_json(cluster: LocalCluster) -> None:
    import pty

    def on_terminal(*args: str) -> str:
        main, sub = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "saline.cli.saline", "-c", str(cluster.master_dir), *args],
                                stdin=sub, stdout=sub, stderr=sub, env={**cluster._env(), "COLUMNS": "100"})
        os.close(sub)
        chunks = []
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(30)
        os.close(main)
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))

    shown = on_terminal("web1", "test.ping", "--progress")
    assert "returns" in shown and "1/1" in shown, shown
    assert "web1:" in shown
    plain = on_terminal("web1", "test.ping", "--progress", "--out", "json")
    assert "1/1" not in plain and '"web1": true' in plain
    piped = cluster.cli("saline", "web1", "test.ping", "--progress")
    assert piped.stdout == "web1:\n    True\n" and piped.stderr == ""


def test_daemon_mode_says_why_it_cannot_start(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path)
    with c:
        c.start_master()
        # a second master on the same ports cannot bind: -d exits non-zero with the cause
        other = tmp_path / "other"
        other.mkdir()
        cfg = yaml.safe_load((c.master_dir / "master").read_text())
        cfg.update(cachedir=str(other / "cache"), sock_dir=str(other / "sock"), pidfile=str(other / "pid"),
                   pki_dir=str(other / "pki"), log_file=str(other / "master.log"))
        (other / "master").write_text(yaml.safe_dump(cfg))
        run = subprocess.run([sys.executable, "-m", "saline.cli.master", "-c", str(other), "-d"],
                             capture_output=True, text=True, timeout=30)
        assert run.returncode == 1 and "Address already in use" in run.stderr and "Traceback" not in run.stderr, run
        # a minion whose kept key does not match master_finger: exits 2 before detaching, one line
        d = c.write_minion_config("pin", master_finger="00:11")
        (d / "pki").mkdir(parents=True, exist_ok=True)
        (d / "pki" / "minion_master.pub").write_text((c.master_dir / "pki" / "master.pub").read_text())
        run = _run_minion(d, "-d")
        assert run.returncode == 1 and "not the master_finger 00:11" in run.stderr and run.stderr.count("\n") == 1, run
        # a served key that does not match master_finger: found after detaching, still reported
        d = c.write_minion_config("pin2", master_finger="00:11")
        run = _run_minion(d, "-d")
        assert run.returncode == 1 and "not the master_finger 00:11: refusing it" in run.stderr, run
        # a good start detaches and exits 0, showing what the user must know: the key it trusted
        d = c.write_minion_config("fine")
        run = _run_minion(d, "-d")
        assert run.returncode == 0 and run.stderr.startswith("[WARNING ] trusting the master's public key on first use"), run
        assert run.stderr.count("\n") == 1
        pid = int((d / "minion.pid").read_text()) if (d / "minion.pid").exists() else None
        c.wait_for(lambda: (c.master_dir / "pki" / "minions_pre" / "fine").exists(), 20, "the daemon minion's hello")
        if pid:
            os.kill(pid, 15)


def test_a_minion_says_once_why_it_cannot_reach_its_master(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path)
    with c:
        d = c.write_minion_config("lost", master="no-such-master.invalid")
        proc = c.start_minion("lost", copy_master_key=False)
        c.wait_for(lambda: "not found or not responsive" in _log(c, "lost"), 20, "the unresolvable name to be said")
        time.sleep(2.5)
        log = _log(c, "lost")
        assert log.count("Master hostname: 'no-such-master.invalid' not found or not responsive") == 1, log
        assert proc.poll() is None
        c.stop("lost")
        # a master that does not answer, with a key given: one warning naming the address
        closed = free_port()
        c.start_minion("silent", copy_master_key=False, master_pub="x" * 40, master_port=closed,
                       publish_port=free_port())
        c.wait_for(lambda: "cannot reach the master" in _log(c, "silent"), 20, "the unreachable master to be said")
        time.sleep(1.5)
        log = _log(c, "silent")
        assert log.count(f"cannot reach the master at 127.0.0.1:{closed}") == 1 and "Connection refused" in log, log
        assert "lost the master" not in log
        assert d.exists()


def test_returner_option_typos_are_named_and_root_dir_moves_the_defaults(tmp_path: Path) -> None:
    root = tmp_path / "root"
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "master").write_text(yaml.safe_dump({
        "root_dir": str(root), "interface": "127.0.0.1", "publish_port": free_port(), "ret_port": free_port(),
        "master_pub_port": free_port(), "log_level": "warning", "mysql.prot": 3306, "mysql": {"usr": "salt"}}))
    proc = subprocess.Popen([sys.executable, "-m", "saline.cli.master", "-c", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={k: v for k, v in os.environ.items()
                                                                   if k != "SALINE_ROOT_DIR"})
    try:
        LocalCluster.wait_for(lambda: (root / "var/run/saline/master/master.sock").exists() or proc.poll() is not None,
                              20, "the master under root_dir")
        assert proc.poll() is None
        assert (root / "etc/saline/pki/master/master.pub").exists() and (root / "var/cache/saline/master").is_dir()
    finally:
        proc.terminate()
        err = proc.communicate(timeout=20)[1]
    assert "unknown option 'mysql.prot' for returner mysql (did you mean 'mysql.port'?)" in err, err
    assert "unknown option 'mysql.usr' for returner mysql (did you mean 'mysql.user'?)" in err
    assert (root / "var/log/saline/master").exists()
