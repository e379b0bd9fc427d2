"""Every returner with a read side as ``master_job_cache`` and ``event_return``, with real processes.

The backend config of each comes from its contract case (tests/contract/cases), so a returner
joins this test by having a read side and a case; ``jobs.*`` must read from it, events must land
in it, and ``keep_jobs`` must clean it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from saline.localcluster import LocalCluster
from saline.returners import registry
from tests.contract.harness import ContractCase
from tests.contract.test_contract import CASES

pytestmark = pytest.mark.e2e

JOB_CACHE_CASES = [c for c in CASES if registry.get_class(c.name).has_read_side() and c.name != "multi_returner"]


def _flat(opts: dict[str, Any]) -> dict[str, Any]:
    """Config keys as YAML can hold them (Paths and the like as text)."""
    return yaml.safe_load(yaml.safe_dump(json.loads(json.dumps(opts, default=str))))


@pytest.mark.parametrize("case", JOB_CACHE_CASES, ids=[c.name for c in JOB_CACHE_CASES])
def test_job_cache_and_event_return(case: ContractCase, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    values = {name: request.getfixturevalue(name) for name in case.fixtures}
    backend = case.config(values, tmp_path / "backend")
    (tmp_path / "backend").mkdir(exist_ok=True)
    events_supported = registry.get_class(case.name).supports("event_returns")
    opts = {**_flat(backend), "master_job_cache": case.name, "keep_jobs_seconds": 3, "loop_interval": 1}
    if events_supported:
        opts["event_return"] = case.name
    init = registry.create(case.name, {**opts, "cachedir": str(tmp_path / "master" / "cache")})
    if init.supports("init_schema"):
        init.init_schema()
    init.close()
    with LocalCluster(tmp_path, master_opts=opts) as cluster:
        cluster.start_master()
        cluster.start_minion("c1")
        cluster.accept("c1")
        run = cluster.cli("saline", "c1", "test.echo", f"cached in {case.name}", "-v")
        assert run.returncode == 0, run.stderr
        jid = re.search(r"jid (\d{20})", run.stdout).group(1)
        lookup = cluster.cli("saline-run", "jobs.lookup_jid", jid)
        assert lookup.stdout == f"c1:\n    cached in {case.name}\n", lookup.stderr
        listed = json.loads(cluster.cli("saline-run", "jobs.list_jobs", "--out", "json").stdout)
        assert listed[jid]["Function"] == "test.echo"
        printed = json.loads(cluster.cli("saline-run", "jobs.print_job", jid, "--out", "json").stdout)
        assert printed[jid]["Result"]["c1"]["return"] == f"cached in {case.name}"
        if events_supported:
            count_events = case.extra["count_events"]
            cluster.wait_for(lambda: count_events(values, tmp_path / "backend", jid) >= 2, 20, "the job's events")
        # keep_jobs: the job goes once it is older than keep_jobs_seconds (cleaned every loop_interval),
        # where the returner has retention (elasticsearch, like Salt's, keeps everything).
        time.sleep(4)
        listed_now = lambda: json.loads(cluster.cli("saline-run", "jobs.list_jobs", "--out", "json").stdout)  # noqa: E731
        cls = registry.get_class(case.name)
        if cls.supports("clean_old_jobs") or case.extra.get("expires"):
            cluster.wait_for(lambda: jid not in listed_now(), 20, "clean_old_jobs to drop the job")
        else:
            assert jid in listed_now()
