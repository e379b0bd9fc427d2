"""The real ``pepper`` CLI (PyPI ``salt-pepper``) against saline-api, unmodified."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

import pytest

from .conftest import FILE_USERS, Api

pytestmark = pytest.mark.e2e


def _pepper(api: Api, *args: str) -> Any:
    exe = shutil.which("pepper") or os.path.join(os.path.dirname(sys.executable), "pepper")
    env = {**os.environ, "SALTAPI_URL": api.url, "SALTAPI_USER": "alice", "SALTAPI_PASS": FILE_USERS["alice"],
           "SALTAPI_EAUTH": "file"}
    done = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"pepper {' '.join(args)}: {done.stderr[-1000:]}"
    return json.loads(done.stdout)


def test_pepper_local_runner_wheel_and_async(api: Api) -> None:
    ping = _pepper(api, "*", "test.ping")["return"][0]
    assert sorted(ping) == ["db1", "web1"] and all(r["ret"] is True and r["retcode"] == 0 for r in ping.values())
    jobs = _pepper(api, "--client", "runner", "jobs.list_jobs")["return"][0]
    assert any(job["Function"] == "test.ping" and job["User"] == "alice" for job in jobs.values())
    keys = _pepper(api, "--client", "wheel", "key.list_all")["return"][0]["data"]
    assert keys["success"] is True and keys["return"]["minions"] == ["db1", "web1"]
    started = _pepper(api, "--client", "local_async", "web1", "test.echo", "from pepper")["return"][0]
    assert re.fullmatch(r"\d{20}", started["jid"]) and started["minions"] == ["web1"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = _pepper(api, "--client", "runner", "jobs.lookup_jid", f"jid={started['jid']}")["return"][0]
        if found:
            break
        time.sleep(0.3)
    assert found == {"web1": "from pepper"}
