"""django: the signals reach a real Django project's receivers, which store rows in SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import ReturnerError
from tests.contract.cases.django import project, rows

ROOT = __file__.rsplit("/tests/", 1)[0]


def opts(master_opts: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {**master_opts, "django": {"settings": "salinedj.settings", "path": [str(project())], **more}}


def ret(jid: str, minion: str, value: Any = True) -> dict[str, Any]:
    return {"id": minion, "jid": jid, "fun": "test.ping", "fun_args": [], "return": value, "retcode": 0, "success": True}


def test_returns_and_loads_reach_the_receivers(master_opts: dict[str, Any]) -> None:
    r = registry.create("django", opts(master_opts))
    jid = gen_jid()
    load = {"jid": jid, "fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob", "user": "root"}
    r.save_load(jid, load, ["web1", "web2"])
    r.returns([ret(jid, "web1", {"ü": [1, 2]}), ret(jid, "web2", False)])
    from salinedj.returns.models import Job  # type: ignore[import-not-found]

    job = Job.objects.get(jid=jid)
    assert json.loads(job.load) == load and json.loads(job.minions) == ["web1", "web2"]
    stored = {row.minion: json.loads(row.full_ret) for row in rows(jid)}
    assert stored == {"web1": ret(jid, "web1", {"ü": [1, 2]}), "web2": ret(jid, "web2", False)}
    r.check()
    r.close()
    r.returns([ret(jid, "web3")])  # a closed returner opens its connection again
    assert len(rows(jid)) == 3


def test_a_failing_receiver_rolls_the_batch_back(master_opts: dict[str, Any]) -> None:
    r = registry.create("django", opts(master_opts))
    jid = gen_jid()
    with pytest.raises(ReturnerError) as info:
        r.returns([ret(jid, "a"), ret(jid, "explode"), ret(jid, "b")])
    assert str(info.value) == ("returner django: a returner receiver failed: RuntimeError: "
                               "this receiver refuses minion explode")
    assert rows(jid) == []  # "a" was rolled back with the batch: a retry will not write it twice
    loose = registry.create("django", opts(master_opts, atomic=False))
    with pytest.raises(ReturnerError):
        loose.returns([ret(jid, "a"), ret(jid, "explode")])
    assert [row.minion for row in rows(jid)] == ["a"]


def test_the_returner_sets_django_up_in_a_fresh_master_process() -> None:
    root = project()
    jid = gen_jid()
    script = textwrap.dedent(f"""
        import django.conf
        from saline.returners import registry
        assert not django.conf.settings.configured
        r = registry.create("django", {{"django.settings": "salinedj.settings", "django.path": [{str(root)!r}]}})
        r.returns([{{"id": "fresh", "jid": {jid!r}, "fun": "test.ping", "return": True, "success": True}}])
        r.check()
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [row.minion for row in rows(jid)] == ["fresh"]
    unset = "from saline.returners import registry\nregistry.create('django', {}).returns([{'id': 'x', 'jid': '1'}])"
    done = subprocess.run([sys.executable, "-c", unset], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT})
    assert "ConfigError: returner django: Django is not set up in the master: set django.settings" in done.stderr
