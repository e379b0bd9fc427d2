"""local_cache: Salt's exact on-disk layout and msgpack contents (the contract suite covers the rest)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from pathlib import Path
from typing import Any, Iterator

import msgpack
import pytest

from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.local_cache import LocalCacheReturner


@pytest.fixture
def returner(master_opts: dict[str, Any]) -> Iterator[LocalCacheReturner]:
    r = registry.create("local_cache", master_opts)
    assert isinstance(r, LocalCacheReturner)
    r.init_schema()
    yield r
    r.close()


def job_dir(cachedir: str | Path, jid: str, hash_type: str = "sha256") -> Path:
    digest = hashlib.new(hash_type, jid.encode()).hexdigest()
    return Path(cachedir) / "jobs" / digest[:2] / digest[2:]


def unpack(path: Path) -> Any:
    return msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)


def ret(jid: str, minion: str, value: Any = True, **extra: Any) -> dict[str, Any]:
    return {"cmd": "_return", "id": minion, "jid": jid, "fun": "test.ping", "fun_args": [], "return": value,
            "retcode": 0, "success": True, "_stamp": "2024-01-05T12:34:56.123456", **extra}


def test_exact_layout(returner: LocalCacheReturner, master_opts: dict[str, Any]) -> None:
    jid = gen_jid()
    load = {"cmd": "publish", "jid": jid, "fun": "state.apply", "arg": [], "tgt": "web*", "tgt_type": "glob",
            "user": "root", "minions": ["web1", "web2"]}
    returner.save_load(jid, load, ["web1", "web2"])
    returner.returns([ret(jid, "web1", {"x": b"\x00\xff"}, out="highstate", retcode=2, success=False),
                      {"jid": jid, "id": "web2", "return": "ok"}])
    path = job_dir(master_opts["cachedir"], jid)  # the default cachedir is the master's
    assert (path / "jid").read_bytes() == jid.encode()
    assert unpack(path / ".load.p") == load
    assert unpack(path / ".minions.p") == ["web1", "web2"]
    assert unpack(path / "web1" / "return.p") == {"return": {"x": b"\x00\xff"}, "retcode": 2, "success": False}
    assert unpack(path / "web1" / "out.p") == "highstate"
    assert unpack(path / "web2" / "return.p") == {"return": "ok"}  # only the keys the return had
    assert not (path / "web2" / "out.p").exists()
    # bytes are msgpack bin (use_bin_type=True), strings str: raw=True shows the two kinds apart
    raw = msgpack.unpackb((path / "web1" / "return.p").read_bytes(), raw=True)
    assert raw[b"return"][b"x"] == b"\x00\xff" and isinstance(raw[b"return"], dict)
    assert msgpack.unpackb((path / "web1" / "return.p").read_bytes(), raw=False)["return"]["x"] == b"\x00\xff"
    assert sorted(p.name for p in path.iterdir()) == [".load.p", ".minions.p", "jid", "web1", "web2"]  # no temp files
    assert returner.get_load(jid) == {**load, "Minions": ["web1", "web2"]}
    assert returner.get_jid(jid) == {"web1": {"return": {"x": b"\x00\xff"}, "retcode": 2, "success": False, "out": "highstate"},
                                     "web2": {"return": "ok"}}


def test_reads_a_tree_salt_wrote(returner: LocalCacheReturner, master_opts: dict[str, Any]) -> None:
    jid = "20240105123456123456"
    path = job_dir(master_opts["cachedir"], jid)
    (path / "m1").mkdir(parents=True)
    (path / "m2").mkdir()
    (path / "jid").write_text(jid)
    pack = lambda obj: msgpack.packb(obj, use_bin_type=True)  # noqa: E731
    (path / ".load.p").write_bytes(pack({"jid": jid, "fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob",
                                         "user": "sudo_ops"}))
    (path / ".minions.p").write_bytes(pack(["m1", "m2"]))
    (path / ".minions.syndic1.p").write_bytes(pack(["m3"]))
    (path / "m1" / "return.p").write_bytes(pack({"return": True, "retcode": 0, "success": True}))
    (path / "m2" / "return.p").write_bytes(pack(True))  # an old single-value return.p
    (path / "endtime").write_text("2024, Jan 05 12:34:57.000000")
    assert returner.get_load(jid)["Minions"] == ["m1", "m2", "m3"]
    assert returner.get_jid(jid) == {"m1": {"return": True, "retcode": 0, "success": True}, "m2": {"return": True}}
    assert returner.get_jids()[jid] == {"Function": "test.ping", "Arguments": [], "Target": "*", "Target-type": "glob",
                                        "User": "sudo_ops", "StartTime": "2024, Jan 05 12:34:56.123456"}
    assert returner.get_endtime(jid) == "2024, Jan 05 12:34:57.000000"
    assert returner.get_minions() == ["m1", "m2"]
    assert returner.get_fun("test.ping") == {"m1": {"return": True, "retcode": 0, "success": True}, "m2": {"return": True}}


def test_a_second_return_from_a_minion_is_ignored(returner: LocalCacheReturner, master_opts: dict[str, Any]) -> None:
    jid = gen_jid()
    returner.returns([ret(jid, "m", "first")])
    before = (job_dir(master_opts["cachedir"], jid) / "m" / "return.p").stat().st_mtime_ns
    returner.returns([ret(jid, "m", "replayed"), ret(jid, "m", "again")])
    assert returner.get_jid(jid) == {"m": {"return": "first", "retcode": 0, "success": True}}
    assert (job_dir(master_opts["cachedir"], jid) / "m" / "return.p").stat().st_mtime_ns == before


def test_prep_jid_nocache_endtime_and_req(returner: LocalCacheReturner, master_opts: dict[str, Any]) -> None:
    jid = returner.prep_jid(nocache=True)
    path = job_dir(master_opts["cachedir"], jid)
    assert (path / "jid").read_text() == jid and (path / "nocache").exists()
    returner.returns([ret(jid, "m")])  # a nocache job: returns are discarded
    assert returner.get_jid(jid) == {}
    assert returner.prep_jid(passed_jid="20240105123456123456") == "20240105123456123456"
    returner.update_endtime(jid, "2024, Jan 05 12:34:57.000000")
    assert (path / "endtime").read_text() == "2024, Jan 05 12:34:57.000000"
    assert returner.get_endtime(jid) == "2024, Jan 05 12:34:57.000000"
    assert returner.get_endtime(gen_jid()) is False
    returner.returns([ret("req", "caller")])  # salt-call: a new jid, the return is the load
    jobs = returner.get_jids()
    (req_jid,) = [j for j, job in jobs.items() if job["Target"] == "unknown-target"]
    assert returner.get_jid(req_jid) == {"caller": {"return": True, "retcode": 0, "success": True}}


def test_save_minions_merges_and_syndics(returner: LocalCacheReturner, master_opts: dict[str, Any]) -> None:
    jid = gen_jid()
    returner.save_load(jid, {"jid": jid, "fun": "test.ping", "tgt": "*"})
    returner.save_minions(jid, ["b", "a"])
    returner.save_minions(jid, ["c", "a"])
    returner.save_minions(jid, ["s1"], syndic_id="syndic1")
    path = job_dir(master_opts["cachedir"], jid)
    assert unpack(path / ".minions.p") == ["b", "a", "c"]
    assert unpack(path / ".minions.syndic1.p") == ["s1"]
    assert returner.get_load(jid)["Minions"] == ["a", "b", "c", "s1"]


def test_hash_type_and_datetimes(master_opts: dict[str, Any]) -> None:
    r = registry.create("local_cache", {**master_opts, "hash_type": "md5"})
    jid = gen_jid()
    when = dt.datetime(2024, 1, 5, 12, 34, 56, 123456)
    r.returns([ret(jid, "m", {"when": when, "big": 2**70, "set": {1}})])
    path = job_dir(master_opts["cachedir"], jid, "md5")
    data = msgpack.unpackb((path / "m" / "return.p").read_bytes(), raw=False)
    assert data["return"]["when"] == msgpack.ExtType(78, b"20240105T12:34:56.123456")  # Salt's datetime
    assert data["return"]["big"] == str(2**70) and data["return"]["set"] == [1]
    assert r.get_jid(jid)["m"]["return"]["when"] == when


def test_unsafe_minion_ids_stay_inside_the_job(returner: LocalCacheReturner, master_opts: dict[str, Any]) -> None:
    jid = gen_jid()
    evil = ["../../../escape", ".load.p", "a/b", "50%"]
    returner.returns([ret(jid, m, m) for m in evil])
    path = job_dir(master_opts["cachedir"], jid)
    assert sorted(p.name for p in path.iterdir() if p.is_dir()) == sorted(["%2E.%2F..%2F..%2Fescape", "%2Eload.p", "a%2Fb", "50%25"])
    assert not (Path(master_opts["cachedir"]) / "escape").exists()
    assert {m: v["return"] for m, v in returner.get_jid(jid).items()} == {m: m for m in evil}
    assert returner.get_load(jid) == {}  # ".load.p" the minion did not become the job's load


def test_clean_old_jobs_by_jid_file_age(master_opts: dict[str, Any]) -> None:
    r = registry.create("local_cache", {**master_opts, "keep_jobs_seconds": 3600})
    old, new = gen_jid(), gen_jid()
    for jid in (old, new):
        r.save_load(jid, {"jid": jid, "fun": "test.ping"})
        r.returns([ret(jid, "m")])
    root = Path(master_opts["cachedir"])
    long_ago = time.time() - 7200
    os.utime(job_dir(root, old) / "jid", (long_ago, long_ago))
    broken = root / "jobs" / "zz" / "broken-entry-without-jid"
    broken.mkdir(parents=True)
    os.utime(broken, (long_ago, long_ago))
    fresh_broken = root / "jobs" / "zy" / "being-written"
    fresh_broken.mkdir(parents=True)
    r.clean_old_jobs()
    assert not job_dir(root, old).exists() and r.get_jid(old) == {}
    assert r.get_jid(new) != {} and new in r.get_jids()
    assert not broken.exists() and not (root / "jobs" / "zz").exists()  # empty hash folders go too
    assert fresh_broken.exists()  # a job folder made a moment ago may still get its jid file
    registry.create("local_cache", {**master_opts, "keep_jobs_seconds": 0}).clean_old_jobs()
    assert job_dir(root, new).exists()
