"""Alcali (PyPI ``alcali`` 3006.3.0), set up as its docs say, against saline: a real MariaDB with
saline's mysql job cache and ``event_return: mysql``, ``rest`` eauth pointing at Alcali's token
check; its jobs and events pages opened in headless Chromium show saline's jobs and returns.

Alcali pins Django 4.2.5, DRF and an old pepper, so it lives in a virtualenv of its own, made by
``scripts/services.d/api-clients.sh`` (with mysqlclient, and Debian's ``chromium`` and
``chromium-driver``); set ``SALINE_SCREENSHOTS=<folder>`` to keep the screenshots.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from saline.localcluster import LocalCluster, free_port

from .conftest import Api, chromium

pytestmark = pytest.mark.e2e

ALCALI_VENV = Path(os.environ.get("SALINE_ALCALI_VENV")
                   or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "saline-alcali" / "venv")
ADMIN, ADMIN_PASS = "admin", "Alcali-admin-9"


def _need(path: Path, what: str) -> None:
    if not path.exists():
        pytest.fail(f"{what} is missing at {path}: run scripts/services.sh (scripts/services.d/api-clients.sh)",
                    pytrace=False)


class Alcali:
    """Alcali's gunicorn, configured through its .env file as its docs say."""

    def __init__(self, folder: Path, db: dict[str, Any], api_url: str, port: int) -> None:
        _need(ALCALI_VENV / "bin" / "alcali", "Alcali's virtualenv")
        self.folder = folder
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".env").write_text("\n".join([
            "DB_BACKEND=mysql", f"DB_NAME={db['db']}", f"DB_USER={db['user']}", f"DB_PASS={db['pass']}",
            f"DB_HOST={db['host']}", f"DB_PORT={db['port']}", "MASTER_MINION_ID=master",
            "SECRET_KEY=saline-test-not-a-secret-0123456789abcdef", "ALLOWED_HOSTS=127.0.0.1 localhost",
            f"SALT_URL={api_url}", "SALT_AUTH=rest", ""]))
        self.env = {**os.environ, "ENV_PATH": str(folder), "PYTHONWARNINGS": "ignore"}
        self.manage("migrate")
        self.manage("createsuperuser", "--noinput", "--username", ADMIN, "--email", "admin@example.com",
                    env={"DJANGO_SUPERUSER_PASSWORD": ADMIN_PASS})
        self.token = self.manage("manage_token", ADMIN).strip().split()[-1]
        self.proc = subprocess.Popen([str(ALCALI_VENV / "bin" / "gunicorn"), "--bind", f"127.0.0.1:{self.port}",
                                      "--workers", "2", "--timeout", "60", "config.wsgi:application"],
                                     cwd=folder, env=self.env, stdout=open(folder / "gunicorn.log", "ab"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (folder / "gunicorn.log").read_text()[-2000:]
            try:
                requests.get(self.url + "/", timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        raise TimeoutError("Alcali did not start")

    def manage(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run([str(ALCALI_VENV / "bin" / "alcali"), *args], cwd=self.folder,
                              env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"alcali {args[0]}: {done.stderr[-2000:]}"
        return done.stdout

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # gunicorn's quick shutdown (SIGTERM waits for its workers)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _wait_text(driver: Any, words: list[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = driver.find_element("tag name", "body").text
        if all(w in text for w in words):
            return text
        time.sleep(0.3)
    raise AssertionError(f"{words} not all on {driver.current_url} after {timeout:.0f} s; the page shows:\n{text[:3000]}")


@pytest.fixture
def alcali_db(mysql_db: dict) -> dict:
    """The test's database, reached by saline and Alcali as a user of their own (as their docs set up)."""
    import pymysql

    conn = pymysql.connect(host=mysql_db["host"], port=mysql_db["port"], user=mysql_db["user"],
                           password=mysql_db["pass"], autocommit=True)
    with conn.cursor() as cur:
        for host in ("127.0.0.1", "localhost"):
            cur.execute(f"CREATE USER IF NOT EXISTS 'saline_alcali'@'{host}' IDENTIFIED BY 'alcali-db-pass'")
            cur.execute(f"GRANT ALL ON `{mysql_db['db']}`.* TO 'saline_alcali'@'{host}'")
    conn.close()
    return {**mysql_db, "user": "saline_alcali", "pass": "alcali-db-pass"}


@pytest.fixture
def stack(tmp_path: Path, alcali_db: dict) -> Iterator[tuple[LocalCluster, Api, Alcali]]:
    mysql_db = alcali_db
    api_port, alcali_port = free_port(), free_port()
    verify = f"http://127.0.0.1:{alcali_port}/api/token/verify/"
    opts = {
        "master_job_cache": "mysql", "event_return": "mysql", "mysql.host": mysql_db["host"],
        "mysql.port": mysql_db["port"], "mysql.user": mysql_db["user"], "mysql.pass": mysql_db["pass"],
        "mysql.db": mysql_db["db"],
        "rest_cherrypy": {"port": api_port, "host": "127.0.0.1", "disable_ssl": True},
        "external_auth": {"rest": {"^url": verify, ADMIN: [".*", "@runner", "@wheel", "@jobs"]}},
        "netapi_enable_clients": ["local", "local_async", "local_batch", "runner", "runner_async", "wheel"],
    }
    with LocalCluster(tmp_path / "saline", opts) as cluster:
        cluster.start_master()
        init = cluster.cli("saline-run", "returners.init", "mysql")
        assert init.returncode == 0, init.stderr
        cluster.start_minion("m1")
        cluster.accept("m1")
        api = Api(cluster, api_port)
        alcali = None
        try:
            alcali = Alcali(tmp_path / "alcali", mysql_db, api.url, alcali_port)
            yield cluster, api, alcali
        finally:
            if alcali is not None:
                alcali.stop()
            api.stop()


def test_alcali_shows_salines_jobs_and_events(stack: tuple[LocalCluster, Api, Alcali], tmp_path: Path) -> None:
    cluster, api, alcali = stack
    # Alcali runs a command through saline-api with pepper, logging in with rest eauth (saline-api
    # asks Alcali's /api/token/verify/ whether the user's Alcali token is right)
    jwt = requests.post(alcali.url + "/api/token/", json={"username": ADMIN, "password": ADMIN_PASS}, timeout=30)
    assert jwt.status_code == 200, jwt.text
    run = requests.post(alcali.url + "/api/run/", data={"raw": "true", "command": "salt m1 test.echo from-alcali"},
                        headers={"Authorization": f"Bearer {jwt.json()['access']}"}, timeout=60)
    assert run.status_code == 200 and "from-alcali" in run.text, run.text
    echo = cluster.cli("saline", "m1", "test.echo", "hello-alcali", "-v")
    assert echo.returncode == 0, echo.stderr
    jid = echo.stdout.split("jid ", 1)[1].split()[0] if "jid " in echo.stdout else None
    assert jid and len(jid) == 20, echo.stdout

    shots = Path(os.environ.get("SALINE_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    driver = chromium(tmp_path / "chromium-profile")
    try:
        driver.get(alcali.url + "/#/login")  # Alcali's Vue router uses the hash
        _wait_text(driver, ["SIGN IN"], 30)
        user = driver.find_element("css selector", "input[type=text], input:not([type])")
        user.send_keys(ADMIN)
        password = driver.find_element("css selector", "input[type=password]")
        password.send_keys(ADMIN_PASS)
        password.send_keys("\n")
        deadline = time.monotonic() + 30
        while "login" in driver.current_url and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "login" not in driver.current_url, driver.find_element("tag name", "body").text[:2000]
        driver.get(alcali.url + "/#/jobs")
        jobs = _wait_text(driver, [jid, "m1", "test.echo"])
        assert "test.echo" in jobs
        driver.save_screenshot(str(shots / "alcali-jobs.png"))
        driver.get(f"{alcali.url}/#/jobs/{jid}/m1")
        _wait_text(driver, ["hello-alcali"])
        driver.save_screenshot(str(shots / "alcali-job.png"))
        driver.get(alcali.url + "/#/events")
        _wait_text(driver, [f"salt/job/{jid}/ret/m1"])
        driver.save_screenshot(str(shots / "alcali-events.png"))
    finally:
        driver.quit()
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
