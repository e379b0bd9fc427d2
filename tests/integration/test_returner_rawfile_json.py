"""rawfile_json: exact lines, the lock, and writers in several processes."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import Unsupported
from saline.returners.rawfile_json import RawfileJsonReturner


def ret(jid: str, minion: str, value: Any = True) -> dict[str, Any]:
    return {"cmd": "_return", "id": minion, "jid": jid, "fun": "test.ping", "fun_args": [], "return": value,
            "retcode": 0, "success": True, "_stamp": "2024-01-05T12:34:56.123456"}


def test_default_filename_is_salts(master_opts: dict[str, Any]) -> None:
    assert registry.create("rawfile_json", master_opts).filename == "/var/log/salt/events"


def test_one_json_object_per_line(master_opts: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "log" / "events"
    r = registry.create("rawfile_json", {**master_opts, "rawfile_json.filename": str(path)})
    jid = gen_jid()
    first, second = ret(jid, "a", "multi\nline ü 😀"), ret(jid, "b", {"k": b"\xffbytes"})
    r.returns([first, second])
    r.event_returns([{"tag": f"salt/job/{jid}/new", "data": {"jid": jid}, "ignored": "extra key"}])
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines == [json.dumps(first, ensure_ascii=False), json.dumps({**second, "return": {"k": "\ufffdbytes"}}, ensure_ascii=False),
                     json.dumps({"tag": f"salt/job/{jid}/new", "data": {"jid": jid}}), ""]
    assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0  # not readable by everyone
    assert not r.supports("save_loads") and not r.has_read_side()
    with pytest.raises(Unsupported):
        r.save_load(jid, {"jid": jid})


def test_waits_for_the_lock(master_opts: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "events"
    r = registry.create("rawfile_json", {**master_opts, "rawfile_json.filename": str(path)})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
    fcntl.flock(fd, fcntl.LOCK_EX)  # someone else is appending
    done = threading.Event()
    writer = threading.Thread(target=lambda: (r.returns([ret(gen_jid(), "a")]), done.set()))
    writer.start()
    time.sleep(0.3)
    assert not done.is_set() and path.read_text() == ""
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    writer.join(5)
    assert done.is_set() and len(path.read_text().splitlines()) == 1


def _append_many(filename: str, worker: int) -> None:
    r = registry.create("rawfile_json", {"rawfile_json.filename": filename})
    for batch in range(20):
        r.returns([ret(f"w{worker}", f"m{batch}-{i}", "x" * 20_000) for i in range(10)])


def test_writers_in_several_processes_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "events"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), n)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = [json.loads(line) for line in path.read_text().split("\n") if line]
    assert len(records) == 4 * 20 * 10
    assert {r["jid"] for r in records} == {"w0", "w1", "w2", "w3"}


def test_check(master_opts: dict[str, Any], tmp_path: Path) -> None:
    r = registry.create("rawfile_json", {**master_opts, "rawfile_json.filename": str(tmp_path / "new" / "events")})
    assert isinstance(r, RawfileJsonReturner)
    r.check()
    assert (tmp_path / "new" / "events").exists()
