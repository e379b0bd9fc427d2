"""A master and minions as real processes on 127.0.0.1, in one folder: the demo and the e2e tests.

Each role gets its own config folder under ``root`` with every path (pki, cache, sockets, logs,
pid file) inside ``root``, and free ports, so several clusters can run side by side without
root privileges.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalCluster:
    def __init__(self, root: str | Path, master_opts: dict[str, Any] | None = None,
                 minion_opts: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.publish_port, self.ret_port, self.master_pub_port = free_port(), free_port(), free_port()
        self.master_dir = self.root / "master"
        self.master_extra = master_opts or {}
        self.minion_extra = minion_opts or {}
        self.procs: dict[str, subprocess.Popen] = {}
        self._write_master_config()

    # -- configs ---------------------------------------------------------------------------------
    def _write_master_config(self) -> None:
        d = self.master_dir
        d.mkdir(parents=True, exist_ok=True)
        opts = {"id": "master", "interface": "127.0.0.1", "publish_port": self.publish_port,
                "ret_port": self.ret_port, "master_pub_port": self.master_pub_port, "pki_dir": str(d / "pki"), "cachedir": str(d / "cache"),
                "sock_dir": str(d / "sock"), "pidfile": str(d / "master.pid"), "log_file": str(d / "master.log"),
                "log_level": "info", "timeout": 5, "gather_job_timeout": 2, **self.master_extra}
        (d / "master").write_text(yaml.safe_dump(opts))

    def minion_dir(self, mid: str) -> Path:
        return self.root / f"minion-{mid}"

    def write_minion_config(self, mid: str, **extra: Any) -> Path:
        d = self.minion_dir(mid)
        d.mkdir(parents=True, exist_ok=True)
        opts = {"id": mid, "master": "127.0.0.1", "master_port": self.ret_port, "publish_port": self.publish_port,
                "master_pub_port": self.master_pub_port,
                "pki_dir": str(d / "pki"), "cachedir": str(d / "cache"), "sock_dir": str(d / "sock"),
                "pidfile": str(d / "minion.pid"), "log_file": str(d / "minion.log"), "log_level": "info",
                "acceptance_wait_time": 0.5, "spool_resend_seconds": 1, "ping_interval": 2,
                **self.minion_extra, **extra}
        (d / "minion").write_text(yaml.safe_dump(opts))
        return d

    # -- processes -------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("SALINE_CONFIG_DIR", None)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start_master(self) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "saline.cli.master", "-c", str(self.master_dir)],
                                env=self._env(), stdout=subprocess.DEVNULL,
                                stderr=open(self.master_dir / "stderr.log", "ab"))
        self.procs["master"] = proc
        self.wait_for(lambda: (self.master_dir / "sock" / "master.sock").exists() or proc.poll() is not None, 20,
                      "the master to start")
        if proc.poll() is not None:
            raise RuntimeError(f"the master exited: {(self.master_dir / 'stderr.log').read_text()[-2000:]}")
        return proc

    def start_minion(self, mid: str, copy_master_key: bool = True, **extra: Any) -> subprocess.Popen:
        """Start minion ``mid``; with ``copy_master_key`` it is given the master's public key (the
        strict set-up), else it takes it on first contact."""
        d = self.minion_dir(mid)
        if not (d / "minion").exists() or extra:
            self.write_minion_config(mid, **extra)
        (d / "pki").mkdir(parents=True, exist_ok=True)
        if copy_master_key:
            master_pub = (self.master_dir / "pki" / "master.pub").read_text()
            (d / "pki" / "minion_master.pub").write_text(master_pub)
        proc = subprocess.Popen([sys.executable, "-m", "saline.cli.minion", "-c", str(d)], env=self._env(),
                                stdout=subprocess.DEVNULL, stderr=open(d / "stderr.log", "ab"))
        self.procs[mid] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)

    def stop_all(self) -> None:
        for name in [n for n in self.procs if n != "master"] + ["master"]:
            self.stop(name)

    # -- commands --------------------------------------------------------------------------------
    def cli(self, tool: str, *args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
        """Run ``saline``, ``saline-key``, ``saline-run`` (master side) or ``saline-call``."""
        module = {"saline": "saline", "saline-key": "key", "saline-run": "run", "saline-call": "call"}[tool]
        cmd = [sys.executable, "-m", f"saline.cli.{module}", "-c", str(self.master_dir), *args]
        return subprocess.run(cmd, env=self._env(), capture_output=True, text=True, timeout=timeout, check=check)

    def accept(self, mid: str, timeout: float = 20) -> None:
        self.wait_for(lambda: (self.master_dir / "pki" / "minions_pre" / mid).exists(), timeout,
                      f"the key of {mid} to be pending")
        self.cli("saline-key", "-y", "-a", mid, check=True)
        self.wait_for(lambda: self.cli("saline", mid, "test.ping", "-t", "3").returncode == 0, timeout,
                      f"{mid} to answer")

    @staticmethod
    def wait_for(predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise TimeoutError(f"timed out waiting for {what}")

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
