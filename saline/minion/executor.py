"""Runs a minion's jobs side by side, each in its own thread, with a timeout and a way to stop it.

A job's function gets its context (grains, options, kill event) through
``saline.modules.context``. A job that outlives its timeout is asked to stop (its kill event is
set and its child processes are terminated) and is reported as failed; ``saltutil.kill_job``
does the same on request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import threading
from typing import Any, Callable

from saline.modules.context import ExecContext, use
from saline.modules.loader import execute


class RunningJob:
    def __init__(self, publish: dict[str, Any], ctx: ExecContext) -> None:
        self.publish = publish
        self.ctx = ctx

    def describe(self) -> dict[str, Any]:
        p = self.publish
        return {"jid": p["jid"], "fun": p["fun"], "arg": p.get("arg") or [], "pid": os.getpid(),
                "tgt": p.get("tgt"), "tgt_type": p.get("tgt_type"), "user": p.get("user")}

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.ctx.kill_event.set()
        for proc in list(self.ctx.processes):
            try:
                if proc.poll() is None:
                    os.killpg(proc.pid, sig) if _own_group(proc) else proc.send_signal(sig)
            except (ProcessLookupError, PermissionError, OSError):
                pass


def _own_group(proc: Any) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except OSError:
        return False


class Executor:
    """The jobs one minion runs; shared thread pool, per-minion bookkeeping."""

    def __init__(self, opts: dict[str, Any], grains: dict[str, Any], functions: dict[str, Callable[..., Any]],
                 pool: concurrent.futures.ThreadPoolExecutor) -> None:
        self.opts = opts
        self.grains = grains
        self.functions = functions
        self.pool = pool
        self.running: dict[str, RunningJob] = {}
        self._lock = threading.Lock()

    def running_jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [job.describe() for job in self.running.values()]

    def kill(self, jid: str, sig: int = signal.SIGTERM) -> bool:
        with self._lock:
            job = self.running.get(str(jid))
        if job is None:
            return False
        job.stop(sig)
        return True

    async def run(self, publish: dict[str, Any]) -> dict[str, Any]:
        """Run one published job and build its return (Salt's ``ret``)."""
        jid, fun = publish["jid"], publish["fun"]
        ctx = ExecContext(opts=self.opts, grains=self.grains, jid=jid, running=self.running_jobs,
                          kill=self.kill, functions=self.functions)
        job = RunningJob(publish, ctx)
        with self._lock:
            self.running[jid] = job
        arg = list(publish.get("arg") or [])
        timeout = publish.get("job_timeout") or self.opts.get("job_timeout") or None
        loop = asyncio.get_running_loop()

        def call() -> dict[str, Any]:
            with use(ctx):
                return execute(self.functions, fun, arg, ctx)

        try:
            future = loop.run_in_executor(self.pool, call)
            try:
                result = await asyncio.wait_for(asyncio.shield(future), float(timeout)) if timeout else await future
            except asyncio.TimeoutError:
                job.stop()
                result = {"return": f"The job {jid} ({fun}) was stopped after its timeout of {timeout} seconds",
                          "retcode": 1, "success": False, "out": "nested"}
        finally:
            with self._lock:
                self.running.pop(jid, None)
        ret = {"id": self.opts["id"], "jid": jid, "fun": fun, "fun_args": arg, **result}
        for key in ("user", "metadata"):
            if publish.get(key):
                ret[key] = publish[key]
        if job.ctx.kill_event.is_set() and result.get("retcode") == 0 and fun != "saltutil.kill_job":
            ret.update(retcode=1, success=False)
        return ret
