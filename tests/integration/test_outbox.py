"""The outbox: a real SQLite file, real processes killed with SIGKILL, real unwritable folders."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from saline.master.outbox import Item, Outbox, OutboxError
from tests.helpers import make_ret

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def outbox(tmp_path: Path):
    box = Outbox(tmp_path / "cache" / "outbox.db")
    yield box
    box.close()


def rets(n: int, start: int = 0, returner: str = "mysql") -> list[Item]:
    return [Item(returner, "ret", make_ret(f"2024010100000000{i:04d}", f"m{i}")) for i in range(start, start + n)]


def test_put_take_done_oldest_first_per_returner(outbox: Outbox) -> None:
    outbox.put(rets(5))
    outbox.put([Item("redis", "event", {"tag": "salt/auth", "data": {"id": "m1"}}),
                Item("mysql", "load", {"jid": "j1", "load": {"fun": "test.ping", "arg": [1, {"k": b"\x00"}]},
                                       "minions": ["m1"]}, "alt", {"db": "other", "port": 3307})])
    first = outbox.take("mysql", 3)
    assert [r.payload["id"] for r in first] == ["m0", "m1", "m2"]
    assert [r.seq for r in first] == sorted(r.seq for r in first)
    # taken items stay stored until acked: a second take sees them again (one consumer per returner)
    assert [r.seq for r in outbox.take("mysql", 3)] == [r.seq for r in first]
    outbox.done("mysql", [r.seq for r in first])
    rest = outbox.take("mysql", 100)
    assert [r.kind for r in rest] == ["ret", "ret", "load"]
    load = rest[-1]
    assert load.payload == {"jid": "j1", "load": {"fun": "test.ping", "arg": [1, {"k": b"\x00"}]}, "minions": ["m1"]}
    assert (load.ret_config, load.ret_kwargs, load.attempts, load.first_failure) == ("alt", {"db": "other", "port": 3307}, 0, None)
    assert [r.payload["tag"] for r in outbox.take("redis", 10)] == ["salt/auth"]
    counts = outbox.counts()
    assert counts["mysql"]["delivered"] == 3 and counts["mysql"]["pending"] == 3
    assert counts["redis"]["pending"] == 1 and counts["redis"]["delivered"] == 0
    assert counts["mysql"]["last_success_time"] is not None
    # acking a seq twice, or another returner's seq, counts nothing
    outbox.done("mysql", [first[0].seq])
    outbox.done("redis", [rest[0].seq])
    assert outbox.counts()["mysql"]["delivered"] == 3
    assert len(outbox.take("mysql", 100)) == 3


def test_retry_waits_then_counts_attempts_and_error(outbox: Outbox) -> None:
    outbox.put(rets(3))
    rows = outbox.take("mysql", 10)
    before = time.time()
    outbox.retry("mysql", [rows[0].seq, rows[1].seq], "BackendUnavailable: down", delay=30)
    due_now = outbox.take("mysql", 10)
    assert [r.seq for r in due_now] == [rows[2].seq]
    later = outbox.take("mysql", 10, now=time.time() + 31)
    assert [r.seq for r in later] == [r.seq for r in rows]
    retried = later[0]
    assert retried.attempts == 1 and retried.last_error == "BackendUnavailable: down"
    assert before <= retried.first_failure <= time.time() and retried.next_try >= before + 30
    first_failure = retried.first_failure
    outbox.retry("mysql", [retried.seq], "ReturnerError: still", delay=0)
    again = outbox.take("mysql", 1)[0]
    assert again.attempts == 2 and again.first_failure == first_failure  # the first failure is kept
    assert outbox.next_due("mysql") <= time.time()
    c = outbox.counts()["mysql"]
    assert (c["pending"], c["retrying"], c["last_error"]) == (3, 2, "ReturnerError: still")
    assert c["last_error_time"] >= before
    assert outbox.next_due("nobody") is None


def test_bury_dead_letters_and_replay(outbox: Outbox) -> None:
    outbox.put(rets(4))
    rows = outbox.take("mysql", 10)
    outbox.retry("mysql", [rows[1].seq], "ReturnerError: too long", delay=0)
    outbox.bury("mysql", [rows[1].seq, rows[3].seq], "ReturnerError: too long")
    assert [r.seq for r in outbox.take("mysql", 10)] == [rows[0].seq, rows[2].seq]
    dead = outbox.dead_letters("mysql")
    assert [d["seq"] for d in dead] == [rows[1].seq, rows[3].seq]
    assert dead[0]["payload"] == rows[1].payload and dead[0]["attempts"] == 2 and dead[1]["attempts"] == 1
    assert all(d["last_error"] == "ReturnerError: too long" and d["died"] >= d["enqueued"] for d in dead)
    assert dead[1]["first_failure"] is not None  # buried without a retry: its first failure is now
    assert outbox.dead_letters("mysql", limit=1) == dead[:1] and outbox.dead_letters("redis") == []
    c = outbox.counts()["mysql"]
    assert (c["pending"], c["dead"], c["buried"]) == (2, 2, 2)

    assert outbox.replay("mysql") == 2
    assert outbox.replay("mysql") == 0
    assert outbox.dead_letters("mysql") == []
    back = outbox.take("mysql", 10)
    assert sorted(r.payload["id"] for r in back) == ["m0", "m1", "m2", "m3"]
    replayed = [r for r in back if r.payload["id"] in ("m1", "m3")]
    # a fresh start: due now, the dead-after clock reset, the last error kept for reference
    assert all(r.attempts == 0 and r.first_failure is None and r.last_error for r in replayed)
    assert len({r.seq for r in back}) == 4
    c = outbox.counts()["mysql"]
    assert (c["pending"], c["dead"], c["buried"]) == (4, 0, 2)


def test_counters_and_queue_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    box.put(rets(10))
    rows = box.take("mysql", 10)
    box.done("mysql", [r.seq for r in rows[:6]])
    box.retry("mysql", [rows[6].seq], "ReturnerError: x", 0)
    box.bury("mysql", [rows[7].seq], "ReturnerError: y")
    before = box.counts()
    box.close()
    with pytest.raises(OutboxError, match="closed"):
        box.put(rets(1))
    box = Outbox(path)
    try:
        assert box.counts() == before
        expected = {"delivered": 6, "pending": 3, "retrying": 1, "dead": 1, "buried": 1, "last_error": "ReturnerError: y"}
        assert {k: before["mysql"][k] for k in expected} == expected
        assert [r.payload["id"] for r in box.take("mysql", 10)] == ["m6", "m8", "m9"]
    finally:
        box.close()


def test_a_second_master_on_the_same_cachedir_is_refused(tmp_path: Path) -> None:
    first = Outbox(tmp_path / "outbox.db")
    try:
        with pytest.raises(OutboxError) as err:
            Outbox(tmp_path / "outbox.db")
        assert "another saline-master" in str(err.value) and "\n" not in str(err.value)
    finally:
        first.close()
    Outbox(tmp_path / "outbox.db").close()  # free again once the first is closed


def test_shared_outbox_one_master_and_its_delivery_processes(tmp_path: Path) -> None:
    """A master whose returners run in processes opens the file shared: a second master is still
    refused, while a delivery process (no guard) takes and acks in the same file."""
    path = tmp_path / "outbox.db"
    master = Outbox(path, shared=True)
    try:
        with pytest.raises(OutboxError) as err:
            Outbox(path, shared=True)
        assert "another saline-master" in str(err.value) and "\n" not in str(err.value)
        master.put(rets(3))
        worker = Outbox(path, shared=True, guard=False)
        try:
            taken = worker.take("mysql", 10)
            assert [r.payload["id"] for r in taken] == ["m0", "m1", "m2"]
            assert [r.payload["id"] for r in worker.take("mysql", 10, after=taken[0].seq)] == ["m1", "m2"]
            worker.done("mysql", [r.seq for r in taken[:2]])
            master.put(rets(1, start=3))
        finally:
            worker.close()
        assert [r.payload["id"] for r in master.take("mysql", 10)] == ["m2", "m3"]
        assert master.counts()["mysql"]["delivered"] == 2
    finally:
        master.close()
    Outbox(path, shared=True).close()  # free again once the first is closed


# -- durability ---------------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import sys
    from saline.master.outbox import Item, Outbox
    box = Outbox(sys.argv[1])
    n = 0
    while True:
        box.put([Item("mysql", "ret", {"id": f"m{n + k}", "jid": "20240101000000000000"}) for k in range(10)])
        n += 10
        sys.stdout.write(f"{n}\\n")
        sys.stdout.flush()
""")


def test_items_survive_a_sigkill_of_the_writer(tmp_path: Path) -> None:
    """Everything ``put`` returned for is there after the process is killed mid-stream."""
    path = tmp_path / "outbox.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT)
    acked = 0
    assert child.stdout is not None
    for line in child.stdout:
        acked = int(line)
        if acked >= 5000:
            break
    child.send_signal(signal.SIGKILL)  # while it is still writing
    child.wait(10)
    assert child.returncode == -signal.SIGKILL
    box = Outbox(path)
    try:
        ids = {r.payload["id"] for r in box.take("mysql", 1_000_000)}
    finally:
        box.close()
    assert {f"m{i}" for i in range(acked)} <= ids  # every acknowledged item
    assert len(ids) >= acked and len(ids) % 10 == 0  # and whole transactions only


def test_put_is_one_transaction(outbox: Outbox) -> None:
    class Unpackable:
        def __str__(self) -> str:
            raise ValueError("no text either")

    with pytest.raises(OutboxError, match="cannot encode"):
        outbox.put(rets(3) + [Item("mysql", "ret", {"x": Unpackable()})])
    assert outbox.take("mysql", 10) == []


def test_put_from_many_threads_while_draining(outbox: Outbox) -> None:
    """Concurrent writers and a consumer: every item delivered exactly once."""
    seen: list[str] = []
    stop = threading.Event()

    def drain() -> None:
        while True:
            rows = outbox.take("mysql", 200)
            if not rows and stop.is_set():
                return
            seen.extend(r.payload["id"] for r in rows)
            outbox.done("mysql", [r.seq for r in rows])

    def write(k: int) -> None:
        for i in range(100):
            outbox.put([Item("mysql", "ret", {"id": f"w{k}-{i}-{j}"}) for j in range(5)])

    consumer = threading.Thread(target=drain)
    consumer.start()
    writers = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    consumer.join(30)
    assert len(seen) == 2000 and len(set(seen)) == 2000
    assert outbox.counts()["mysql"]["delivered"] == 2000


# -- unwritable places ---------------------------------------------------------------------------
OPEN_AND_PUT = textwrap.dedent("""
    import resource, signal, sys
    from saline.master.outbox import Item, Outbox, OutboxError
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    if limit:  # a file size limit: the disk is "full" at that size
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        box = Outbox(sys.argv[1])
        for i in range(10000):
            box.put([Item("mysql", "ret", {"id": "m", "return": "x" * 4000})])
    except OutboxError as exc:
        print("OutboxError:", exc)
    else:
        print("no error")
    if limit:  # space is back: the same outbox takes writes again
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        box.put([Item("mysql", "ret", {"id": "after", "return": "x"})])
        box.close()
""")


def _drop_dac_override() -> None:
    """In the child before exec: drop root's power to write where the mode bits say no (Linux
    capabilities CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH leave the bounding set, so the exec'd
    Python runs without them), as ``setpriv --bounding-set=-dac_override`` does."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(97)


def test_read_only_cache_folder_is_one_line_outbox_error(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(tmp_path, 0o755)
    cache.chmod(0o555)
    result = subprocess.run([sys.executable, "-c", OPEN_AND_PUT, str(cache / "outbox.db")], capture_output=True,
                            text=True, cwd=ROOT, timeout=60,
                            preexec_fn=_drop_dac_override if os.geteuid() == 0 else None)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("OutboxError: outbox "), result.stdout + result.stderr
    assert str(cache) in lines[0] and "not writable" in lines[0]
    assert "Traceback" not in result.stderr


def test_disk_full_while_running_is_one_line_outbox_error(tmp_path: Path) -> None:
    limit = 2 * 1024 * 1024
    result = subprocess.run([sys.executable, "-c", OPEN_AND_PUT, str(tmp_path / "outbox.db"), str(limit)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("OutboxError: outbox "), result.stdout + result.stderr
    # SQLite says "database or disk is full" or "disk I/O error (SQLITE_IOERR_WRITE)" by where it hit
    assert re.search(r"cannot write items: (database or disk is full|disk I/O error)", lines[0]), lines[0]
    assert result.returncode == 0, result.stderr
    # what was stored before the disk filled up is intact, and so is what came after
    box = Outbox(tmp_path / "outbox.db")
    try:
        stored = box.take("mysql", 100_000)
        assert len(stored) > 100 and all(r.payload["return"] == "x" * 4000 for r in stored[:-1])
        assert stored[-1].payload["id"] == "after"
    finally:
        box.close()
