"""rest_cherrypy's contract, endpoint by endpoint, against a real saline-api, master and minions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import yaml
import zmq

from saline.localcluster import free_port

from .conftest import FILE_USERS, PAM_PASS, PAM_USER, REST_TOKEN, REST_USER, Api, RestAuth

pytestmark = pytest.mark.e2e


def _ok(r: requests.Response) -> Any:
    assert r.status_code == 200, f"{r.status_code}: {r.text}"
    return r.json()["return"]


def _error(r: requests.Response, status: int, *words: str) -> str:
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    reason = r.json()["return"]
    assert isinstance(reason, str) and "\n" not in reason and "Traceback" not in reason
    for word in words:
        assert word in reason, reason
    return reason


# -- login, sessions ----------------------------------------------------------------------------------
def test_login_json_form_and_text_plain(api: Api) -> None:
    creds = {"username": "alice", "password": FILE_USERS["alice"], "eauth": "file"}
    as_json = requests.post(api.url + "/login", json=creds, timeout=10)
    as_form = requests.post(api.url + "/login", data=creds, timeout=10)
    as_text = requests.post(api.url + "/login", data=json.dumps(creds),
                            headers={"Content-Type": "text/plain;charset=UTF-8"}, timeout=10)
    for r in (as_json, as_form, as_text):
        body = _ok(r)[0]
        assert re.fullmatch(r"[0-9a-f]{40}", body["token"])
        assert r.headers["X-Auth-Token"] == body["token"] == r.cookies["session_id"]
        assert body["user"] == "alice" and body["eauth"] == "file"
        assert body["perms"] == [".*", "@runner", "@wheel", "@jobs"]
        assert body["expire"] - body["start"] == pytest.approx(3600)
    assert len({r.json()["return"][0]["token"] for r in (as_json, as_form, as_text)}) == 3


def test_login_refusals(api: Api) -> None:
    def login(body: Any, **kw: Any) -> requests.Response:
        return requests.post(api.url + "/login", json=body, timeout=30, **kw)

    _error(login({"username": "alice", "password": "wrong", "eauth": "file"}), 401, "Could not authenticate")
    _error(login({"username": "alice", "password": FILE_USERS["alice"], "eauth": "ldap"}), 401, "ldap", "not configured")
    _error(login({"username": "nobody", "password": FILE_USERS["nobody"], "eauth": "file"}), 401, "no permissions")
    _error(login({"username": "alice", "eauth": "file"}), 401, "required")
    _error(requests.post(api.url + "/login", data="{not json", headers={"Content-Type": "application/json"},
                         timeout=10), 400, "malformed JSON")
    _error(requests.post(api.url + "/login", data=b"x", headers={"Content-Type": "image/png"}, timeout=10),
           415, "image/png")
    _error(login(["alice"]), 400, "mapping")


def test_pam_login(api: Api) -> None:
    body = _ok(requests.post(api.url + "/login", json={"username": PAM_USER, "password": PAM_PASS, "eauth": "pam"},
                             timeout=30))[0]
    assert body["user"] == PAM_USER and body["eauth"] == "pam"
    assert _ok(api.post("/", {"client": "local", "tgt": "web1", "fun": "test.ping"}, body["token"])) == [{"web1": True}]
    _error(requests.post(api.url + "/login", json={"username": PAM_USER, "password": "not-it", "eauth": "pam"},
                         timeout=30), 401, "Could not authenticate")


def test_rest_login_posts_the_credentials_as_a_form(api: Api, rest_auth: RestAuth) -> None:
    body = _ok(requests.post(api.url + "/login", json={"username": REST_USER, "password": REST_TOKEN,
                                                        "eauth": "rest"}, timeout=30))[0]
    assert body["perms"] == [".*", "@runner", "@wheel"]
    seen = rest_auth.seen[-1]
    assert seen == {"content_type": "application/x-www-form-urlencoded", "username": REST_USER,
                    "password": REST_TOKEN}
    _error(requests.post(api.url + "/login", json={"username": REST_USER, "password": "stale", "eauth": "rest"},
                         timeout=30), 401)


def test_stats_and_logout(api: Api) -> None:
    token = api.login()
    assert api.get("/stats", token).status_code == 200
    session = requests.Session()
    session.post(api.url + "/login", json={"username": "alice", "password": FILE_USERS["alice"], "eauth": "file"})
    assert session.get(api.url + "/stats").status_code == 200  # the session_id cookie alone
    assert _ok(api.post("/logout", {}, token)) == "Your token has been cleared"
    _error(api.get("/stats", token), 401, "log in again")
    _error(api.post("/", {"client": "local", "tgt": "*", "fun": "test.ping"}, token), 401)
    _error(api.get("/stats"), 401, "X-Auth-Token")
    _error(api.get("/stats", "0" * 40), 401)


def test_token_and_run(api: Api) -> None:
    r = api.post("/token", {"username": "alice", "password": FILE_USERS["alice"], "eauth": "file"})
    assert r.status_code == 200
    tok = r.json()[0]
    assert tok["name"] == "alice" and tok["eauth"] == "file" and re.fullmatch(r"[0-9a-f]{40}", tok["token"])
    low = {"client": "local", "tgt": "db1", "fun": "test.ping"}
    assert _ok(api.post("/run", [{**low, "token": tok["token"]}])) == [{"db1": True}]
    creds = {"username": "alice", "password": FILE_USERS["alice"], "eauth": "file"}
    assert _ok(api.post("/run", {**low, **creds})) == [{"db1": True}]
    _error(api.post("/run", {**low, **creds, "password": "wrong"}), 401)
    _error(api.post("/run", {**low, "token": "f" * 40}), 401)


# -- POST / with each client -------------------------------------------------------------------------------
def test_local_clients(api: Api) -> None:
    token = api.login()
    ping = {"client": "local", "tgt": "*", "fun": "test.ping"}
    assert _ok(api.post("/", ping, token)) == [{"web1": True, "db1": True}]
    full = _ok(api.post("/", {**ping, "full_return": True}, token))[0]
    assert full["web1"]["ret"] is True and full["web1"]["retcode"] == 0 and re.fullmatch(r"\d{20}", full["web1"]["jid"])
    two = _ok(api.post("/", [{**ping, "tgt": "web1"}, {"client": "local", "tgt": "db1,web1", "tgt_type": "list",
                                                        "fun": "test.arg", "arg": ["a", "k=v"], "kwarg": {"x": 1}}],
                       token))
    assert two[0] == {"web1": True}
    assert two[1]["db1"]["args"] == ["a"] and two[1]["db1"]["kwargs"]["k"] == "v" and two[1]["db1"]["kwargs"]["x"] == 1
    async_ = _ok(api.post("/", {"client": "local_async", "tgt": "*", "fun": "test.echo", "arg": ["later"]}, token))[0]
    assert sorted(async_["minions"]) == ["db1", "web1"] and re.fullmatch(r"\d{20}", async_["jid"])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = _ok(api.post("/", {"client": "runner", "fun": "jobs.lookup_jid", "jid": async_["jid"]}, token))[0]
        if len(found) == 2:
            break
        time.sleep(0.2)
    assert found == {"db1": "later", "web1": "later"}
    batch = _ok(api.post("/", {"client": "local_batch", "tgt": "*", "fun": "test.ping", "batch": "1"}, token))
    assert sorted(batch, key=lambda d: list(d)) == [{"db1": True}, {"web1": True}]


def test_runner_and_wheel_clients(api: Api) -> None:
    token = api.login()
    jobs = _ok(api.post("/", {"client": "runner", "fun": "jobs.list_jobs"}, token))[0]
    assert jobs and all(re.fullmatch(r"\d{20}", jid) and "Function" in job for jid, job in jobs.items())
    started = _ok(api.post("/", {"client": "runner_async", "fun": "manage.status"}, token))[0]
    assert started["tag"] == f"salt/run/{started['jid']}"
    assert _ok(api.post("/", {"client": "runner", "fun": "no.such"}, token))[0].startswith("'no.such' is not available")

    listing = _ok(api.post("/", {"client": "wheel", "fun": "key.list_all"}, token))[0]
    assert listing["tag"] == f"salt/wheel/{listing['data']['jid']}"
    data = listing["data"]
    assert data["fun"] == "wheel.key.list_all" and data["user"] == "alice" and data["success"] is True
    assert data["return"]["minions"] == ["db1", "web1"] and data["return"]["minions_pre"] == []
    assert set(data["return"]) == {"minions", "minions_pre", "minions_rejected", "minions_denied", "local"}

    def wheel(fun: str, **kw: Any) -> Any:
        return _ok(api.post("/", {"client": "wheel", "fun": fun, **kw}, token))[0]["data"]["return"]

    assert sorted(wheel("minions.connected")) == ["db1", "web1"]
    values = wheel("config.values")
    assert values["mysql.pass"] == "******" and values["token_expire"] == 3600
    assert "hunter2-secret" not in json.dumps(values)
    finger = wheel("key.finger", match="web1")
    assert re.fullmatch(r"([0-9a-f]{2}:){31}[0-9a-f]{2}", finger["minions"]["web1"])
    # a pending key: accepted, then rejected, then deleted, through the wheel
    pki = api.cluster.master_dir / "pki"
    (pki / "minions_pre" / "newbie").write_text(zmq.curve_keypair()[0].decode())
    assert wheel("key.list_all")["minions_pre"] == ["newbie"]
    assert wheel("key.accept", match="newb*") == {"minions": ["newbie"]}
    assert wheel("key.reject", match="newbie", include_accepted=True) == {"minions_rejected": ["newbie"]}
    assert wheel("key.delete", match="newbie") == {"minions_rejected": ["newbie"]}
    assert "newbie" not in json.dumps(wheel("key.list_all"))
    later = _ok(api.post("/", {"client": "wheel_async", "fun": "key.list_all"}, token))[0]
    assert later["tag"] == f"salt/wheel/{later['jid']}"
    _error(api.post("/", {"client": "wheel", "fun": "key.nope"}, token), 400, "key.nope", "not available")


def test_bad_lowstates(api: Api) -> None:
    token = api.login()
    _error(api.post("/", {"client": "bogus", "tgt": "*", "fun": "test.ping"}, token), 400, "Invalid client", "bogus")
    _error(api.post("/", {"client": "ssh", "tgt": "*", "fun": "test.ping"}, token), 400, "Client disabled", "ssh",
           "netapi_enable_clients")
    _error(api.post("/", {"tgt": "*", "fun": "test.ping"}, token), 400, "client")
    _error(api.post("/", {"client": "local", "tgt": "*"}, token), 400, "fun")
    _error(api.post("/", {"client": "local", "fun": "test.ping"}, token), 400, "tgt")
    _error(api.post("/", ["not a lowstate"], token), 400, "lowstate 0")
    _error(api.post("/", {"client": "local", "tgt": "*", "fun": "test.ping", "kwarg": [1]}, token), 400, "kwarg")
    _error(api.post("/", {"client": "local", "tgt": "web1 and", "tgt_type": "compound", "fun": "test.ping"}, token),
           400, "bad target", "a target is missing")
    _error(api.post("/", {"client": "local", "tgt": "*", "tgt_type": "bogus", "fun": "test.ping"}, token),
           400, "unknown target type 'bogus'")
    _error(requests.post(api.url + "/", data="[{", headers={"X-Auth-Token": token, "Content-Type": "application/json"},
                         timeout=10), 400, "malformed JSON")
    # JSON sent as text/plain (SaltGUI's fetch without a Content-Type) is read as JSON
    r = requests.post(api.url + "/", data=json.dumps({"client": "local", "tgt": "web1", "fun": "test.ping"}),
                      headers={"X-Auth-Token": token, "Content-Type": "text/plain;charset=UTF-8"}, timeout=30)
    assert _ok(r) == [{"web1": True}]
    _error(api.post("/", {"client": "local", "tgt": "*", "fun": "test.ping"}), 401)


def test_permissions_are_enforced_and_named(api: Api) -> None:
    bob, carol = api.login("bob"), api.login("carol")
    assert _ok(api.post("/", {"client": "local", "tgt": "web*", "fun": "test.ping"}, bob)) == [{"web1": True}]
    assert _ok(api.post("/", {"client": "local", "tgt": "web1", "fun": "test.echo", "arg": ["x"]}, bob)) == [{"web1": "x"}]
    _error(api.post("/", {"client": "local", "tgt": "*", "fun": "test.ping"}, bob), 403, "test.ping", "'*'")
    _error(api.post("/", {"client": "local", "tgt": "web1", "fun": "cmd.run", "arg": ["id"]}, bob), 403, "cmd.run")
    assert _ok(api.post("/", {"client": "runner", "fun": "jobs.list_jobs"}, bob))
    _error(api.post("/", {"client": "runner", "fun": "manage.status"}, bob), 403, "manage.status")
    _error(api.post("/", {"client": "wheel", "fun": "key.list_all"}, bob), 403, "key.list_all")
    # a list is checked whole before anything runs
    _error(api.post("/", [{"client": "local", "tgt": "web1", "fun": "test.ping"},
                          {"client": "local", "tgt": "db1", "fun": "test.ping"}], bob), 403, "'db1'")
    assert _ok(api.post("/", {"client": "local", "tgt": "*", "fun": "test.ping"}, carol)) == [{"web1": True, "db1": True}]
    _error(api.post("/", {"client": "local", "tgt": "*", "fun": "test.pingx"}, carol), 403, "test.pingx")
    assert _ok(api.post("/", {"client": "wheel", "fun": "key.list_all"}, carol))
    _error(api.post("/", {"client": "wheel", "fun": "key.accept", "match": "*"}, carol), 403, "key.accept")
    _error(api.post("/", {"client": "runner", "fun": "jobs.list_jobs"}, carol), 403, "jobs.list_jobs")
    _error(api.get("/keys", bob), 403)
    _error(api.get("/minions", bob), 403, "grains.items")


# -- the resource endpoints ------------------------------------------------------------------------------
def test_minions_jobs_keys(api: Api) -> None:
    token = api.login()
    welcome = requests.get(api.url + "/", timeout=10).json()
    assert welcome["return"] == "Welcome" and "local" in welcome["clients"]
    grains = _ok(api.get("/minions", token))[0]
    assert sorted(grains) == ["db1", "web1"] and grains["web1"]["id"] == "web1"
    assert list(_ok(api.get("/minions/db1", token))[0]) == ["db1"]
    r = api.post("/minions", {"tgt": "web1", "fun": "test.echo", "arg": ["via minions"]}, token)
    assert r.status_code == 202
    started = r.json()
    jid = started["return"][0]["jid"]
    assert started["return"][0]["minions"] == ["web1"] and started["_links"]["jobs"] == [{"href": f"/jobs/{jid}"}]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{jid}", token)
        if job.status_code == 200 and job.json()["return"][0]:
            break
        time.sleep(0.2)
    assert job.json()["return"] == [{"web1": "via minions"}]
    assert job.json()["info"][0]["Function"] == "test.echo" and job.json()["info"][0]["Minions"] == ["web1"]
    assert jid in _ok(api.get("/jobs", token))[0]
    _error(api.get("/jobs/20000101000000000000", token), 404, "20000101000000000000")
    _error(api.get("/jobs/not-a-jid", token), 404)
    keys = api.get("/keys", token).json()["return"]
    assert keys["minions"] == ["db1", "web1"] and "minions_pre" in keys
    assert list(api.get("/keys/web1", token).json()["return"]["minions"]) == ["web1"]
    yaml_answer = requests.get(api.url + "/keys", headers={"X-Auth-Token": token, "Accept": "application/x-yaml"},
                               timeout=10)
    assert yaml.safe_load(yaml_answer.text)["return"]["minions"] == ["db1", "web1"]


# -- a second API on the same master: short sessions, few clients, the rate limit, a browser app ----------------
@pytest.fixture(scope="module")
def short_api(api: Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    folder = tmp_path_factory.mktemp("short")
    (folder / "static").mkdir()
    (folder / "static" / "salt-motd.txt").write_text("hello from static\n")
    (folder / "index.html").write_text("<html><body>the app</body></html>\n")
    opts = yaml.safe_load((api.cluster.master_dir / "master").read_text())
    port = free_port()
    opts["rest_cherrypy"].update(port=port, static=str(folder / "static"), app=str(folder / "index.html"),
                                 max_failed_logins=3)
    opts.update(token_expire=1, netapi_enable_clients=["local"], cachedir=str(folder / "cache"))
    (folder / "master").write_text(yaml.safe_dump(opts))

    class Short(Api):
        def __init__(self) -> None:  # the same cluster, another config folder
            self.cluster = api.cluster
            self.url = f"http://127.0.0.1:{port}"
            self.proc = subprocess.Popen([sys.executable, "-m", "saline.cli.api", "-c", str(folder)],
                                         stdout=subprocess.DEVNULL, stderr=open(folder / "stderr", "ab"))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    requests.get(self.url + "/", timeout=1)
                    return
                except requests.ConnectionError:
                    assert self.proc.poll() is None, (folder / "stderr").read_text()
                    time.sleep(0.1)

    server = Short()
    yield server
    server.stop()


def test_expired_token(short_api: Api) -> None:
    token = short_api.login()
    assert short_api.post("/", {"client": "local", "tgt": "web1", "fun": "test.ping"}, token).status_code == 200
    time.sleep(1.2)
    _error(short_api.post("/", {"client": "local", "tgt": "web1", "fun": "test.ping"}, token), 401, "expired")
    _error(short_api.get("/stats", token), 401)


def test_enabled_clients_and_app(short_api: Api) -> None:
    token = short_api.login()
    _error(short_api.post("/", {"client": "runner", "fun": "jobs.list_jobs"}, token), 400, "Client disabled: 'runner'")
    assert requests.get(short_api.url + "/", timeout=5).json()["clients"] == ["local"]
    assert "the app" in requests.get(short_api.url + "/app", timeout=5).text
    assert "the app" in requests.get(short_api.url + "/app/some/route", timeout=5).text
    assert requests.get(short_api.url + "/static/salt-motd.txt", timeout=5).text == "hello from static\n"
    assert requests.get(short_api.url + "/static/salt-auth.txt", timeout=5).status_code == 404


def test_failed_logins_are_rate_limited(short_api: Api) -> None:
    wrong = {"username": "alice", "password": "wrong", "eauth": "file"}
    for _ in range(3):
        _error(requests.post(short_api.url + "/login", json=wrong, timeout=10), 401)
    reason = _error(requests.post(short_api.url + "/login", json={**wrong, "password": FILE_USERS["alice"]},
                                  timeout=10), 429, "too many failed logins", "127.0.0.1")
    assert re.search(r"try again in \d+ s", reason)
    _error(requests.post(short_api.url + "/run", json={"client": "local", "tgt": "*", "fun": "test.ping",
                                                        **wrong}, timeout=10), 429)


def test_bad_config_is_one_line(api: Api, tmp_path: Path) -> None:
    opts = yaml.safe_load((api.cluster.master_dir / "master").read_text())
    cases = [({"rest_cherrypy": {"port": 8000}}, "ssl_crt and ssl_key are required unless disable_ssl"),
             ({"rest_cherrypy": {"disable_ssl": True, "prot": 1}}, "unknown option 'prot' (did you mean 'port'?)"),
             ({"rest_cherrypy": {"ssl_crt": "/nope.crt", "ssl_key": "/nope.key"}}, "ssl_crt /nope.crt does not exist"),
             ({"netapi_enable_clients": ["local", "lcoal"]}, "unknown client 'lcoal'")]
    for extra, words in cases:
        (tmp_path / "master").write_text(yaml.safe_dump({**opts, **extra}))
        done = subprocess.run([sys.executable, "-m", "saline.cli.api", "-c", str(tmp_path)], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode != 0 and words in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def _self_signed(folder: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    crt, pem = folder / "api.crt", folder / "api.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def test_tls_with_ssl_crt_and_ssl_key(api: Api, tmp_path: Path) -> None:
    crt, pem = _self_signed(tmp_path)
    opts = yaml.safe_load((api.cluster.master_dir / "master").read_text())
    port = free_port()
    opts["rest_cherrypy"] = {"port": port, "host": "127.0.0.1", "ssl_crt": str(crt), "ssl_key": str(pem)}
    opts["cachedir"] = str(tmp_path / "cache")
    (tmp_path / "master").write_text(yaml.safe_dump(opts))
    proc = subprocess.Popen([sys.executable, "-m", "saline.cli.api", "-c", str(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "stderr", "ab"))
    try:
        url = f"https://localhost:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                requests.get(url + "/", verify=str(crt), timeout=1)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, (tmp_path / "stderr").read_text()
                time.sleep(0.1)
        login = requests.post(url + "/login", json={"username": "alice", "password": FILE_USERS["alice"],
                                                   "eauth": "file"}, verify=str(crt), timeout=10)
        assert login.status_code == 200 and "Secure" in login.headers["Set-Cookie"]
        token = login.json()["return"][0]["token"]
        r = requests.post(url + "/", json={"client": "local", "tgt": "web1", "fun": "test.ping"},
                          headers={"X-Auth-Token": token}, verify=str(crt), timeout=30)
        assert r.json() == {"return": [{"web1": True}]}
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://localhost:{port}/", timeout=5)
    finally:
        proc.terminate()
        proc.wait(10)


def test_master_down_is_503(api: Api, tmp_path: Path) -> None:
    opts = yaml.safe_load((api.cluster.master_dir / "master").read_text())
    port = free_port()
    opts["rest_cherrypy"]["port"] = port
    opts.update(sock_dir=str(tmp_path / "no-master"), cachedir=str(tmp_path / "cache"))
    (tmp_path / "master").write_text(yaml.safe_dump(opts))
    proc = subprocess.Popen([sys.executable, "-m", "saline.cli.api", "-c", str(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                requests.get(url + "/login", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        token = requests.post(url + "/login", json={"username": "alice", "password": FILE_USERS["alice"],
                                                   "eauth": "file"}, timeout=10).json()["return"][0]["token"]
        r = requests.post(url + "/", json={"client": "local", "tgt": "*", "fun": "test.ping"},
                          headers={"X-Auth-Token": token}, timeout=10)
        _error(r, 503, "the master is not running")
        assert requests.get(url + "/login", timeout=5).json()["return"] == "Please log in"
    finally:
        proc.terminate()
        proc.wait(10)
