"""saline-api against Salt 3006's salt-api (rest_cherrypy) on this machine: ``POST /`` with a
``local`` ``test.ping`` lowstate to one minion, its round trip and requests per second.

Both sides get the same work and the same client: a master, one minion, the API on loopback over
plain HTTP, file eauth, one login, then lowstates with the ``X-Auth-Token`` header on keep-alive
connections (aiohttp's client, in this process). Salt comes from PyPI (``salt==3006.*`` and
CherryPy) into a virtualenv of its own (``bench/.venv-salt``, made on first use, ignored by git):
it is only run, never imported, and nothing of it enters saline.

    python bench/run.py --only api [--merge]     # smoke mode (--smoke) measures saline-api alone
    python bench/api_bench.py [--smoke]          # prints the rows
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import cluster, figure, percentile, stop_processes  # noqa: E402

SALT_VENV = Path(os.environ.get("SALINE_BENCH_SALT_VENV") or BENCH / ".venv-salt")
USER, PASSWORD = "bench", "bench-pass"
Rows = list[dict[str, Any]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{what} did not answer on {url}")


# -- the client: the same for both ----------------------------------------------------------------------
async def _measure(url: str, sequential: int, concurrency: int, seconds: float) -> dict[str, Any]:
    import aiohttp

    low = {"client": "local", "tgt": "bench1", "fun": "test.ping"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async with http.post(url + "/login", json={"username": USER, "password": PASSWORD, "eauth": "file"}) as r:
            token = (await r.json())["return"][0]["token"]
        headers = {"X-Auth-Token": token, "Accept": "application/json"}

        async def one() -> float:
            began = time.perf_counter()
            async with http.post(url + "/", json=low, headers=headers) as r:
                body = await r.json()
            if r.status != 200 or body != {"return": [{"bench1": True}]}:
                raise RuntimeError(f"unexpected answer {r.status}: {str(body)[:200]}")
            return time.perf_counter() - began

        for _ in range(5):  # warm up
            await one()
        rtts: list[float] = []
        stop = time.monotonic() + 60  # Salt's round trip is long: at most a minute of sequential samples
        while len(rtts) < sequential and (time.monotonic() < stop or len(rtts) < 20):
            rtts.append(await one())
        done = failed = 0
        end = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done, failed
            while time.monotonic() < end:
                try:
                    await one()
                    done += 1
                except RuntimeError:  # counted, not fatal: salt-api answers some with a 500 under load
                    failed += 1

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        rate = done / (time.monotonic() - began)
    return {"rtts": rtts, "rate": rate, "failed": failed}


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return total


def _run(url: str, pids: list[int], smoke: bool) -> dict[str, Any]:
    sequential, seconds = (20, 3.0) if smoke else (300, 20.0)
    cpu0 = _cpu_seconds(pids)
    out = asyncio.run(_measure(url, sequential, 8, seconds))
    out["cpu"] = _cpu_seconds(pids) - cpu0
    return out


# -- saline -------------------------------------------------------------------------------------------
def _saline(smoke: bool, folder: Path) -> dict[str, Any]:
    port = _free_port()
    users = folder / "users.txt"
    folder.mkdir(parents=True, exist_ok=True)
    users.write_text(f"{USER}:{PASSWORD}\n")
    opts = {"rest_cherrypy": {"port": port, "host": "127.0.0.1", "disable_ssl": True},
            "external_auth": {"file": {"^filename": str(users), USER: [".*"]}},
            "netapi_enable_clients": ["local"]}
    with cluster(folder / "saline", opts) as c:
        c.start_minion("bench1")
        c.accept("bench1")
        api = subprocess.Popen([sys.executable, "-m", "saline.cli.api", "-c", str(c.master_dir)], env=c._env(),
                               stdout=subprocess.DEVNULL, stderr=open(folder / "api.stderr", "ab"))
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_http(url + "/", api, "saline-api")
            return _run(url, [api.pid, c.master_pid()], smoke)
        finally:
            api.terminate()
            api.wait(10)


# -- Salt 3006 ----------------------------------------------------------------------------------------
def salt_venv() -> Path:
    """Salt 3006 and CherryPy in their own virtualenv (made once)."""
    if not (SALT_VENV / "bin" / "salt-api").exists():
        print(f"  installing salt==3006.* and cherrypy into {SALT_VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(SALT_VENV)], check=True)
        subprocess.run([str(SALT_VENV / "bin" / "pip"), "install", "-q", "salt==3006.*", "cherrypy"], check=True)
    return SALT_VENV


def _salt(smoke: bool, folder: Path) -> dict[str, Any]:
    import yaml

    venv = salt_venv()
    root = folder / "salt"
    conf = root / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    users = root / "users.txt"
    users.write_text(f"{USER}:{PASSWORD}\n")
    pub, ret, api_port = _free_port(), _free_port(), _free_port()
    common = {"root_dir": str(root), "user": "root", "log_level": "warning", "log_file": str(root / "log"),
              "pki_dir": str(root / "pki"), "cachedir": str(root / "cache"), "sock_dir": str(root / "sock")}
    (conf / "master").write_text(yaml.safe_dump({
        **common, "interface": "127.0.0.1", "publish_port": pub, "ret_port": ret, "auto_accept": True,
        "pki_dir": str(root / "pki" / "master"), "cachedir": str(root / "cache" / "master"),
        "sock_dir": str(root / "sock" / "master"), "log_file": str(root / "master.log"),
        "rest_cherrypy": {"port": api_port, "host": "127.0.0.1", "disable_ssl": True},
        "external_auth": {"file": {"^filename": str(users), USER: [".*"]}},
        "netapi_enable_clients": ["local"], "api_logfile": str(root / "api.log"),
        "api_pidfile": str(root / "api.pid")}))
    (conf / "minion").write_text(yaml.safe_dump({
        **common, "id": "bench1", "master": "127.0.0.1", "master_port": ret, "publish_port": pub,
        "pki_dir": str(root / "pki" / "minion"), "cachedir": str(root / "cache" / "minion"),
        "sock_dir": str(root / "sock" / "minion"), "log_file": str(root / "minion.log")}))
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
    procs: list[subprocess.Popen] = []
    try:
        for daemon in ("salt-master", "salt-minion"):
            procs.append(subprocess.Popen([str(venv / "bin" / daemon), "-c", str(conf)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=open(root / f"{daemon}.stderr", "ab")))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # until the minion answers through the master
            ping = subprocess.run([str(venv / "bin" / "salt"), "-c", str(conf), "bench1", "test.ping", "--out", "json",
                                   "-t", "5"], env=env, capture_output=True, text=True)
            if '"bench1": true' in ping.stdout:
                break
            time.sleep(1)
        else:
            raise TimeoutError("Salt's minion did not answer")
        api = subprocess.Popen([str(venv / "bin" / "salt-api"), "-c", str(conf)], env=env,
                               stdout=subprocess.DEVNULL, stderr=open(root / "salt-api.stderr", "ab"))
        procs.append(api)
        url = f"http://127.0.0.1:{api_port}"
        _wait_http(url + "/", api, "salt-api")
        master_pids = [int(p) for p in subprocess.run(["pgrep", "-f", f"salt-master -c {conf}"], capture_output=True,
                                                      text=True).stdout.split()]
        api_pids = [int(p) for p in subprocess.run(["pgrep", "-f", f"salt-api -c {conf}"], capture_output=True,
                                                   text=True).stdout.split()]
        return _run(url, api_pids + master_pids, smoke)
    finally:
        stop_processes(list(reversed(procs)), wait=20)


def bench_api(smoke: bool, folder: Path) -> Rows:
    """The rows; in smoke mode saline-api alone (Salt's virtualenv takes minutes to make)."""
    ours = _saline(smoke, folder)
    theirs = None if smoke else _salt(smoke, folder)
    salt = "Salt 3006.x salt-api (rest_cherrypy), same machine and client"
    rows: Rows = []
    for label, key in (("median", 50), ("p99", 99)):
        value = percentile(ours["rtts"], key) * 1000
        floor = percentile(theirs["rtts"], key) * 1000 if theirs else None
        rows.append(figure(f"saline-api POST / local test.ping, 1 minion, round trip {label}", value, "ms",
                           goal="below salt-api's", met=(value < floor) if floor else None, floor=floor,
                           floor_what=salt if theirs else "",
                           note=f"{len(ours['rtts'])} sequential requests"
                                + (f" ({len(theirs['rtts'])} to salt-api)" if theirs else "")
                                + ", keep-alive, X-Auth-Token"))
    rate = ours["rate"]
    salt_rate = theirs["rate"] if theirs else None
    rows.append(figure("saline-api POST / local test.ping, 1 minion, requests/s (8 concurrent)", rate, "/s",
                       goal="above salt-api's", met=(rate > salt_rate) if salt_rate else None, floor=salt_rate,
                       floor_what=salt if theirs else "",
                       note=f"CPU of API + master over the timed runs: saline {ours['cpu']:.1f} s"
                            + (f", Salt {theirs['cpu']:.1f} s" if theirs else "")
                            + f"; failed answers: saline {ours['failed']}"
                            + (f", salt-api {theirs['failed']} (HTTP 500)" if theirs else "")))
    return rows


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="saline-bench-api-") as tmp:
        for row in bench_api("--smoke" in sys.argv, Path(tmp)):
            print(row)


if __name__ == "__main__":
    main()
