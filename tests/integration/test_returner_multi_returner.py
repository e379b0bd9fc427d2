"""multi_returner: configuration, fan-out, partial failure and merged reads."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from saline.config import ConfigError
from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import BackendUnavailable, ReturnerError, Unsupported
from saline.returners.multi_returner import MultiReturner


def ret(jid: str, minion: str, value: Any = True) -> dict[str, Any]:
    return {"cmd": "_return", "id": minion, "jid": jid, "fun": "test.ping", "fun_args": [], "return": value,
            "retcode": 0, "success": True}


def test_configuration(master_opts: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="set multi_returner"):
        registry.create("multi_returner", master_opts)
    with pytest.raises(ConfigError, match="cannot contain itself"):
        registry.create("multi_returner", {**master_opts, "multi_returner": ["saline_cache", "multi_returner"]})
    with pytest.raises(ConfigError, match="unknown returner 'nope'"):
        registry.create("multi_returner", {**master_opts, "multi_returner": ["nope"]})
    top = registry.create("multi_returner", {**master_opts, "multi_returner": ["saline_cache", "local_cache"]})
    assert isinstance(top, MultiReturner) and [r.name for r in top.returners] == ["saline_cache", "local_cache"]
    comma = registry.create("multi_returner", {**master_opts, "multi_returner": "local_cache, saline_cache"})
    assert [r.name for r in comma.returners] == ["local_cache", "saline_cache"]
    kwargs = registry.create("multi_returner", {**master_opts, "multi_returner": ["saline_cache"]}, None,
                             {"multi_returner": ["local_cache"]})
    assert [r.name for r in kwargs.returners] == ["local_cache"]


def test_writes_everywhere_and_merges_reads(master_opts: dict[str, Any], tmp_path: Path) -> None:
    opts = {**master_opts, "multi_returner": ["local_cache", "saline_cache", "rawfile_json"],
            "rawfile_json.filename": str(tmp_path / "events")}
    r = registry.create("multi_returner", opts)
    r.init_schema()
    jid = r.prep_jid()  # the first returner's jid, handed to the others
    digest = hashlib.sha256(jid.encode()).hexdigest()
    assert (Path(master_opts["cachedir"]) / "jobs" / digest[:2] / digest[2:] / "jid").read_text() == jid
    r.save_load(jid, {"jid": jid, "fun": "test.ping", "minions": ["a", "b"]})
    r.returns([ret(jid, "a"), ret(jid, "b", "b")])
    r.event_returns([{"tag": "salt/auth", "data": {}}])  # saline_cache and rawfile_json have it
    saline_cache = r.returners[1]
    assert saline_cache.get_jid(jid)["b"]["return"] == "b"
    assert len((tmp_path / "events").read_text().splitlines()) == 3
    # reads merge as Salt: later returners win for the same minion (saline_cache gives whole returns)
    assert r.get_jid(jid)["a"] == ret(jid, "a")
    assert r.get_load(jid)["Minions"] == ["a", "b"]
    assert list(r.get_jids()) == [jid]
    assert r.get_minions() == ["a", "b"]  # from the first that has it
    assert r.supports("get_fun") and not MultiReturner.supports("no_such_thing")


def test_a_failing_returner_does_not_stop_the_others(master_opts: dict[str, Any], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    opts = {**master_opts, "multi_returner": ["sqlite3", "saline_cache"], "sqlite3.database": str(blocker / "x.db")}
    r = registry.create("multi_returner", opts)
    jid = gen_jid()
    with pytest.raises(BackendUnavailable) as info:
        r.returns([ret(jid, "a")])
    assert str(info.value).startswith("returner multi_returner: sqlite3: cannot use ")
    assert r.returners[1].get_jid(jid) != {}  # saline_cache got the batch anyway
    both_bad = registry.create("multi_returner", {**opts, "saline_cache.database": str(blocker / "y.db")})
    with pytest.raises(ReturnerError) as info:
        both_bad.returns([ret(jid, "a")])
    assert "sqlite3: " in str(info.value) and "; saline_cache: " in str(info.value) and "\n" not in str(info.value)


def test_without_a_read_side(master_opts: dict[str, Any], tmp_path: Path) -> None:
    r = registry.create("multi_returner", {**master_opts, "multi_returner": ["rawfile_json", "local"],
                                           "rawfile_json.filename": str(tmp_path / "events")})
    assert not r.has_read_side() and not r.supports("get_jid") and not r.supports("save_loads")
    with pytest.raises(Unsupported, match="none of rawfile_json, local has get_jid"):
        r.get_jid("1")
    r.clean_old_jobs()  # none cleans: nothing happens
