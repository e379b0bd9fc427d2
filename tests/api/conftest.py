"""A real master, two minions and a real ``saline-api`` process for the API tests.

The API runs as its own process (``python -m saline.cli.api``) against the master's local socket,
as in production. eauth is real: ``file`` (a text file and an htpasswd file written here),
``pam`` (a system user made with useradd/chpasswd: the tests run as root), and ``rest`` (a
small HTTP endpoint in the test answering as Alcali's token check does).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs

import pytest
import requests

from saline.localcluster import LocalCluster, free_port

PAM_USER, PAM_PASS = "saline-apitest", "Pam-pass-7x!"
FILE_USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret", "nobody": "nobody-secret"}
HTPASSWD_USER, HTPASSWD_PASS = "harry", "harry-secret"
REST_USER, REST_TOKEN = "rita", "rita-token-123"
ENABLED = ["local", "local_async", "local_batch", "runner", "runner_async", "wheel", "wheel_async"]


def ensure_pam_user() -> None:
    """A system user for the pam eauth (idempotent; its password is set each time)."""
    if subprocess.run(["id", PAM_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", PAM_USER], check=True, capture_output=True)
    subprocess.run(["chpasswd"], input=f"{PAM_USER}:{PAM_PASS}\n", text=True, check=True, capture_output=True)


class RestAuth:
    """An HTTP endpoint answering like Alcali's /api/token/verify/: a form with username and
    password; 200 and ``[]`` when the token is right, 401 otherwise. It records what it got."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                outer.seen.append({"content_type": self.headers.get("Content-Type"), **form})
                ok = form.get("username") == REST_USER and form.get("password") == REST_TOKEN
                payload = b"[]" if ok else b"Unauthorized"
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json" if ok else "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/token/verify/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_htpasswd(path: Path) -> None:
    from passlib.apache import HtpasswdFile

    ht = HtpasswdFile(str(path), new=True, default_scheme="bcrypt")
    ht.set_password(HTPASSWD_USER, HTPASSWD_PASS)
    ht.save()


def api_master_opts(root: Path, port: int, rest_url: str, **rest: Any) -> dict[str, Any]:
    users = root / "users.txt"
    users.write_text("".join(f"{u}:{p}\n" for u, p in FILE_USERS.items()))
    write_htpasswd(root / "htpasswd")
    every = [".*", "@runner", "@wheel", "@jobs"]
    return {
        "rest_cherrypy": {"port": port, "host": "127.0.0.1", "disable_ssl": True, "max_failed_logins": 5,
                          "failed_login_window": 60, **rest},
        "external_auth": {
            "file": {"^filename": str(users), "^filetype": "text",
                     "alice": every,
                     "bob": [{"web*": ["test.*"]}, "@jobs"],        # test.* on web* only, and the jobs runner
                     "carol": ["test.ping", {"@wheel": ["key.list_all"]}],
                     },                                              # nobody: no entry, no permissions
            "pam": {PAM_USER: every},
        },
        "token_expire": 3600,
        "netapi_enable_clients": ENABLED,
    }


class Api:
    """The saline-api process and a few helpers to call it."""

    def __init__(self, cluster: LocalCluster, port: int) -> None:
        self.cluster = cluster
        self.url = f"http://127.0.0.1:{port}"
        self.log = cluster.root / "api.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "saline.cli.api", "-c", str(cluster.master_dir),
                                      "--log-file", str(self.log)], stdout=subprocess.DEVNULL,
                                     stderr=open(cluster.root / "api.stderr", "ab"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"saline-api exited: {(cluster.root / 'api.stderr').read_text()[-2000:]}")
            try:
                requests.get(self.url + "/", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise TimeoutError("saline-api did not start")

    def login(self, user: str = "alice", password: str | None = None, eauth: str = "file") -> str:
        password = FILE_USERS.get(user, "") if password is None else password
        r = requests.post(self.url + "/login", json={"username": user, "password": password, "eauth": eauth}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["return"][0]["token"]

    def post(self, path: str, body: Any, token: str | None = None, timeout: float = 60) -> requests.Response:
        headers = {"Accept": "application/json", **({"X-Auth-Token": token} if token else {})}
        return requests.post(self.url + path, json=body, headers=headers, timeout=timeout)

    def get(self, path: str, token: str | None = None, timeout: float = 60) -> requests.Response:
        headers = {"Accept": "application/json", **({"X-Auth-Token": token} if token else {})}
        return requests.get(self.url + path, headers=headers, timeout=timeout)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def chromium(profile: Path) -> Any:
    """Debian's headless Chromium driven by selenium through Debian's chromedriver (never a download)."""
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must never fetch a driver or a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for exe in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not Path(exe).exists():
            pytest.fail(f"{exe} is missing: run scripts/services.sh (scripts/services.d/api-clients.sh)", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


@pytest.fixture(scope="package")
def rest_auth() -> Iterator[RestAuth]:
    server = RestAuth()
    yield server
    server.close()


@pytest.fixture(scope="package")
def api(tmp_path_factory: pytest.TempPathFactory, rest_auth: RestAuth) -> Iterator[Api]:
    """Master, minions web1 and db1, and saline-api with file, pam and rest eauth."""
    ensure_pam_user()
    root = tmp_path_factory.mktemp("api")
    port = free_port()
    opts = api_master_opts(root, port, rest_auth.url)
    opts["mysql.pass"] = "hunter2-secret"  # config.values must mask it
    opts["external_auth"]["rest"] = {"^url": rest_auth.url, REST_USER: [".*", "@runner", "@wheel"]}
    with LocalCluster(root, opts) as cluster:
        cluster.start_master()
        for mid in ("web1", "db1"):
            cluster.start_minion(mid)
        for mid in ("web1", "db1"):
            cluster.accept(mid)
        server = Api(cluster, port)
        try:
            yield server
        finally:
            server.stop()

