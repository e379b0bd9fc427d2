"""End to end: the command line's Salt habits (batches, events, async, daemons, runners, errors)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from saline.localcluster import LocalCluster

pytestmark = pytest.mark.e2e


@pytest.fixture
def three(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path) as cluster:
        cluster.start_master()
        for mid in ("a1", "a2", "a3"):
            cluster.start_minion(mid)
        for mid in ("a1", "a2", "a3"):
            cluster.accept(mid)
        yield cluster


def test_batches_async_and_job_listing(three: LocalCluster) -> None:
    batched = three.cli("saline", "*", "test.ping", "-b", "2", "--out", "json", "--static")
    assert batched.returncode == 0
    merged: dict = {}
    for doc in re.findall(r"\{[^{}]*\}", batched.stdout):
        merged.update(json.loads(doc))
    assert merged == {"a1": True, "a2": True, "a3": True}
    pct = three.cli("saline", "*", "test.echo", "x", "--batch-size", "34%", "-v")
    assert pct.returncode == 0 and pct.stdout.count("Executing job with jid") == 3
    published = three.cli("saline", "a2", "test.sleep", "1", "--async")
    jid = re.fullmatch(r"Executed command with job ID: (\d{20})\n", published.stdout).group(1)
    three.wait_for(lambda: "True" in three.cli("saline-run", "jobs.lookup_jid", jid).stdout, 15, "the async job")
    listed = json.loads(three.cli("saline-run", "jobs.list_jobs", "search_function=test.sleep", "--out", "json").stdout)
    assert list(listed) == [jid] and listed[jid]["Target"] == "a2" and listed[jid]["Arguments"] == [1]
    printed = json.loads(three.cli("saline-run", "jobs.print_job", jid, "--out", "json").stdout)
    assert printed[jid]["Result"]["a2"]["return"] is True and printed[jid]["Minions"] == ["a2"]


def test_state_event_shows_job_events_live(three: LocalCluster) -> None:
    watcher = subprocess.Popen([sys.executable, "-m", "saline.cli.run", "-c", str(three.master_dir), "state.event",
                                "tagmatch=salt/job/*"], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(watcher.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        jids = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the watcher is subscribed and has seen one whole job
            out = three.cli("saline", "a1,a2", "-L", "test.ping", "-v").stdout
            jids.append(re.search(r"jid (\d{20})", out).group(1))
            time.sleep(0.3)
            seen = [line for line in list(lines) if any(j in line for j in jids)]
            if any(f"{j}/new" in "".join(seen) for j in jids):
                jid = next(j for j in jids if f"{j}/new" in "".join(seen))
                mine = [line for line in seen if jid in line.split("\t", 1)[0]]
                if len(mine) == 3:
                    break
        tags = [line.split("\t", 1)[0] for line in mine]
        assert tags[0] == f"salt/job/{jid}/new"
        assert {t.rsplit("/", 1)[-1] for t in tags[1:]} == {"a1", "a2"}
        data = json.loads(mine[1].split("\t", 1)[1])
        assert data["return"] is True and data["_stamp"]
    finally:
        watcher.terminate()
        watcher.wait(10)


def test_jobs_active_lists_a_running_job(three: LocalCluster) -> None:
    jid = re.search(r"(\d{20})", three.cli("saline", "a3", "test.sleep", "6", "--async").stdout).group(1)
    time.sleep(0.5)
    active = json.loads(three.cli("saline-run", "jobs.active", "--out", "json").stdout)
    assert jid in active and active[jid]["Function"] == "test.sleep"
    assert list(active[jid]["Running"][0]) == ["a3"]


def test_sys_grains_status_and_exit_codes(three: LocalCluster) -> None:
    doc = json.loads(three.cli("saline", "a1", "sys.doc", "test.ping", "--out", "json").stdout)
    assert "minion is up" in doc["a1"]["test.ping"]
    grains = json.loads(three.cli("saline", "a1", "grains.items", "--out", "json").stdout)["a1"]
    assert grains["id"] == "a1" and grains["kernel"] == "Linux" and grains["num_cpus"] >= 1
    retcode = three.cli("saline", "a1", "test.retcode", "5")
    assert retcode.returncode == 1
    exc = three.cli("saline", "a1", "test.exception", "boom")
    assert exc.returncode == 1 and "The minion function caused an exception" in exc.stdout


def test_saline_call_local_needs_no_master(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path)
    cfg = cluster.write_minion_config("lonely")
    run = subprocess.run([sys.executable, "-m", "saline.cli.call", "-c", str(cfg), "--local", "test.echo", "hi"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and run.stdout == "local:\n    hi\n"
    fail = subprocess.run([sys.executable, "-m", "saline.cli.call", "-c", str(cfg), "--local", "cmd.retcode", "exit 3"],
                          capture_output=True, text=True, timeout=30)
    assert fail.returncode == 1 and "local:\n    3" in fail.stdout


def test_daemon_mode_pidfile_and_clean_stop(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path)
    subprocess.run([sys.executable, "-m", "saline.cli.master", "-c", str(cluster.master_dir), "-d"], check=True, timeout=30)
    pidfile = cluster.master_dir / "master.pid"
    cluster.wait_for(lambda: pidfile.exists() and (cluster.master_dir / "sock" / "master.sock").exists(), 20, "the daemon")
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGTERM)
    cluster.wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], 20,
                     "the daemon to stop")
    assert not pidfile.exists() and not (cluster.master_dir / "sock" / "master.sock").exists()


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "master").write_text("ret_port: many\n")
    bad = subprocess.run([sys.executable, "-m", "saline.cli.master", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "option 'ret_port' must be int" in bad.stderr and str(cfg / "master") in bad.stderr
    (cfg / "master").write_text(f"cachedir: {tmp_path}/c\npki_dir: {tmp_path}/p\nsock_dir: {tmp_path}/s\nreturn: nosuch\n")
    unknown = subprocess.run([sys.executable, "-m", "saline.cli.master", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 2 and "unknown returner 'nosuch'" in unknown.stderr and "Traceback" not in unknown.stderr
    (tmp_path / "mp").mkdir()
    (tmp_path / "mp" / "minion_master.pub").write_text("x" * 40 + "\n")
    (cfg / "minion").write_text(f"pki_dir: {tmp_path}/mp\ncachedir: {tmp_path}/mc\nmaster_finger: 'aa:bb'\n")
    pinned = subprocess.run([sys.executable, "-m", "saline.cli.minion", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert pinned.returncode == 2 and pinned.stderr.count("\n") == 1, pinned.stderr
    assert "not the master_finger aa:bb: refusing it" in pinned.stderr


def test_job_timeout_stops_the_job_on_the_minion(three: LocalCluster) -> None:
    started = time.monotonic()
    result = three.cli("saline", "a1", "cmd.run", "sleep 30; echo never", "--job-timeout", "1", "-t", "10")
    assert time.monotonic() - started < 8
    assert result.returncode == 1 and "never" not in result.stdout
    assert "timeout" in result.stdout.lower() or "timed out" in result.stdout.lower() or "killed" in result.stdout.lower()
