"""A browser app served by saline-api from the same origin (``app``/``static``), doing what SaltGUI
does, in headless Chromium: ``fetch`` with a JSON body and no Content-Type (the browser sends
``text/plain``), the token in ``X-Auth-Token``, and an ``EventSource`` on ``/events`` that only the
``session_id`` cookie authenticates. SaltGUI itself is on neither PyPI nor npm."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from saline.localcluster import free_port

from .conftest import FILE_USERS, Api, chromium

pytestmark = pytest.mark.e2e

PAGE = """<!doctype html>
<html><body>
<pre id="perms"></pre><pre id="keys"></pre><pre id="motd"></pre><pre id="events"></pre><pre id="errors"></pre>
<script>
const show = (id, text) => { document.getElementById(id).textContent += text + "\\n"; };
async function main() {
  // SaltGUI posts JSON without a Content-Type: the browser sends text/plain;charset=UTF-8
  const login = await (await fetch("/login", {method: "POST",
      body: JSON.stringify({username: "alice", password: "%(password)s", eauth: "file"})})).json();
  const token = login.return[0].token;
  show("perms", "perms " + JSON.stringify(login.return[0].perms));
  const call = async (low) => (await fetch("/", {method: "POST", body: JSON.stringify(low),
      headers: {"X-Auth-Token": token, "Accept": "application/json"}})).json();
  const values = await call({client: "wheel", fun: "config.values"});
  show("keys", "token_expire " + values.return[0].data.return.token_expire);  // SaltGUI reads its saltgui_* here
  const keys = await call({client: "wheel", fun: "key.list_all"});
  show("keys", "minions " + JSON.stringify(keys.return[0].data.return.minions));
  const motd = await fetch("/static/salt-motd.txt");
  show("motd", "motd " + motd.status + " " + (await motd.text()).trim());
  const auth = await fetch("/static/salt-auth.txt");
  show("motd", "auth " + auth.status);
  const events = new EventSource("/events");  // no header: the session_id cookie
  events.onopen = async () => {
    const started = await call({client: "local_async", tgt: "web1", fun: "test.echo", arg: ["from the browser"]});
    show("events", "jid " + started.return[0].jid);
  };
  events.onmessage = (e) => {
    const ev = JSON.parse(e.data);
    if (ev.tag.includes("/ret/")) show("events", ev.tag + " " + JSON.stringify(ev.data.return));
  };
  events.onerror = () => show("errors", "eventsource error");
}
main().catch((e) => show("errors", String(e)));
</script></body></html>
"""


def test_saltgui_style_app_in_chromium(api: Api, tmp_path: Path) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "salt-motd.txt").write_text("welcome to saline\n")
    (tmp_path / "index.html").write_text(PAGE % {"password": FILE_USERS["alice"]})
    opts = yaml.safe_load((api.cluster.master_dir / "master").read_text())
    port = free_port()
    opts["rest_cherrypy"].update(port=port, app=str(tmp_path / "index.html"), static=str(static))
    opts.update(cachedir=str(tmp_path / "cache"))
    (tmp_path / "master").write_text(yaml.safe_dump(opts))
    proc = subprocess.Popen([sys.executable, "-m", "saline.cli.api", "-c", str(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "stderr", "ab"))
    driver = None
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(url + "/", timeout=1)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr").read_text()
                time.sleep(0.1)
        driver = chromium(tmp_path / "profile")
        driver.get(url + "/app")
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            text = driver.find_element("tag name", "body").text
            if "salt/job/" in text or "error" in text.lower():
                break
            time.sleep(0.2)
        assert "error" not in text.lower(), text
        assert 'perms [".*","@runner","@wheel","@jobs"]' in text
        assert "token_expire 3600" in text  # the master's own options
        assert 'minions ["db1","web1"]' in text
        assert "motd 200 welcome to saline" in text and "auth 404" in text
        jid = text.split("jid ", 1)[1].split()[0]
        assert f'salt/job/{jid}/ret/web1 "from the browser"' in text
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(10)
