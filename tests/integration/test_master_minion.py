"""Master and minion objects in one process, over real CURVE sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from saline.config import load_config
from saline.localcluster import LocalCluster
from saline.master.daemon import Master
from saline.minion.daemon import Minion


async def _next_event(sub: Any, timeout: float = 5.0) -> dict:
    return await asyncio.wait_for(sub.queue.get(), timeout)


class Pair:
    def __init__(self, root: Path) -> None:
        self.cluster = LocalCluster(root)
        self.master = Master(load_config("master", self.cluster.master_dir))
        self.tasks: list[asyncio.Task] = []
        self.minions: dict[str, Minion] = {}

    def add_minion(self, mid: str, **extra: Any) -> Minion:
        d = self.cluster.write_minion_config(mid, **extra)
        (d / "pki").mkdir(parents=True, exist_ok=True)
        (d / "pki" / "minion_master.pub").write_text(self.master.public_key)
        minion = Minion(load_config("minion", d))
        self.minions[mid] = minion
        self.tasks.append(asyncio.create_task(minion.run()))
        return minion

    async def accept(self, mid: str) -> None:
        for _ in range(100):
            if mid in self.master.keys.ids("minions_pre"):
                break
            await asyncio.sleep(0.05)
        self.master.keys.move(mid, "minions_pre", "minions")
        for _ in range(100):
            if self.minions[mid].state == "accepted":
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the publish socket reconnects after acceptance


def test_publish_return_ack_and_spool(tmp_path: Path) -> None:
    async def scenario() -> None:
        p = Pair(tmp_path)
        master_task = asyncio.create_task(p.master.run())
        try:
            await asyncio.sleep(0.2)
            minion = p.add_minion("m1", grains={"role": "web"})
            await p.accept("m1")
            sub = p.master.events.subscribe("salt/job/")
            published = p.master.publish({"tgt": "G@role:web", "tgt_type": "compound", "fun": "test.arg",
                                          "arg": ["a", {"__kwarg__": True, "k": 1}]})
            assert published["minions"] == ["m1"]
            new = await _next_event(sub)
            assert new["tag"] == f"salt/job/{published['jid']}/new"
            ret = await _next_event(sub)
            assert ret["tag"] == f"salt/job/{published['jid']}/ret/m1"
            assert ret["data"]["return"] == {"args": ["a"], "kwargs": {"k": 1}}
            assert ret["data"]["retcode"] == 0 and ret["data"]["success"] is True and "_stamp" in ret["data"]
            for _ in range(50):  # the ack empties the minion's spool
                if minion.spool.count("m1") == 0:
                    break
                await asyncio.sleep(0.05)
            assert minion.spool.count("m1") == 0
            assert p.master.job_done(published["jid"])
            assert p.master.delivery.flush(5.0)
            assert p.master.delivery.status()["saline_cache"]["delivered"] >= 2  # the load and the return
        finally:
            for minion in p.minions.values():
                minion.request_stop()
            await asyncio.gather(*p.tasks, return_exceptions=True)
            p.master.request_stop()
            await master_task

    asyncio.run(scenario())


def test_untargeted_minion_does_not_run_and_jobs_run_side_by_side(tmp_path: Path) -> None:
    async def scenario() -> None:
        p = Pair(tmp_path)
        master_task = asyncio.create_task(p.master.run())
        try:
            await asyncio.sleep(0.2)
            p.add_minion("web1")
            p.add_minion("db1")
            await p.accept("web1")
            await p.accept("db1")
            sub = p.master.events.subscribe("salt/job/")
            slow = p.master.publish({"tgt": "web1", "fun": "test.sleep", "arg": [2]})
            fast = p.master.publish({"tgt": "web*", "fun": "test.ping"})
            assert fast["minions"] == ["web1"]
            seen = []
            loop = asyncio.get_running_loop()
            started = loop.time()
            while len(seen) < 2:
                event = await _next_event(sub, 10)
                if "/ret/" in event["tag"]:
                    seen.append((event["data"]["jid"], loop.time() - started))
            assert seen[0][0] == fast["jid"] and seen[0][1] < 1.5  # not stuck behind the sleeping job
            assert seen[1][0] == slow["jid"]
            assert p.minions["db1"].jobs_run == 0
        finally:
            for minion in p.minions.values():
                minion.request_stop()
            await asyncio.gather(*p.tasks, return_exceptions=True)
            p.master.request_stop()
            await master_task

    asyncio.run(scenario())
