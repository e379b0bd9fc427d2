"""saline-key on a master's pki folder: every flag Salt users type."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from saline.transport.keys import ACCEPTED, DENIED, PENDING, REJECTED, KeyStore, ensure_keypair, fingerprint

pytestmark = pytest.mark.e2e


def _key(cfg: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saline.cli.key", "-c", str(cfg), *args], input=stdin,
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, KeyStore, dict[str, str]]:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "master").write_text(yaml.safe_dump({"pki_dir": str(tmp_path / "pki")}))
    store = KeyStore(tmp_path / "pki")
    ensure_keypair(tmp_path / "pki", "master")
    keys = {mid: ensure_keypair(tmp_path / "k" / mid, "minion")[0] for mid in ("web1", "web2", "db1", "old1")}
    for mid in ("web1", "web2", "db1"):
        store.add(PENDING, mid, keys[mid])
    store.add(DENIED, "old1", keys["old1"])
    return cfg, store, keys


def test_list_accept_reject_delete_and_fingerprints(pki: tuple[Path, KeyStore, dict[str, str]]) -> None:
    cfg, store, keys = pki
    listing = _key(cfg, "-L").stdout
    assert listing == ("Accepted Keys:\nDenied Keys:\nold1\nUnaccepted Keys:\ndb1\nweb1\nweb2\n"
                       "Rejected Keys:\n")
    assert _key(cfg, "-l", "un").stdout == "Unaccepted Keys:\ndb1\nweb1\nweb2\n"
    unknown = _key(cfg, "-l", "nope")
    assert unknown.returncode == 2 and "unknown key state" in unknown.stderr
    declined = _key(cfg, "-a", "web*", stdin="n\n")
    assert "Proceed?" in declined.stdout and store.refresh() is False and declined.returncode == 1
    unanswered = _key(cfg, "-a", "web*", stdin="")  # no terminal and no -y: nothing done, and it says so
    assert unanswered.returncode == 1 and "not confirmed (use -y to answer yes)" in unanswered.stderr
    assert store.refresh() is False
    pending_delete = _key(cfg, "-d", "db1", stdin="n\n")  # the heading is the key's real state
    assert pending_delete.stdout.startswith("The following keys are going to be deleted:\nUnaccepted Keys:\ndb1\n")
    assert _key(cfg, "-a", "web*", "-y").stdout.count("accepted.") == 2
    store.refresh()
    assert store.ids(ACCEPTED) == ["web1", "web2"]
    assert "Key for minion db1 rejected." in _key(cfg, "-r", "db1", "-y").stdout
    assert _key(cfg, "-a", "db1", "-y").returncode == 1  # rejected keys need --include-rejected
    assert "db1 accepted" in _key(cfg, "-A", "-y", "--include-rejected").stdout
    store.refresh()
    assert store.ids(ACCEPTED) == ["db1", "web1", "web2"] and store.ids(REJECTED) == []
    assert "web2 rejected" in _key(cfg, "-R", "-y", "--include-accepted").stdout.replace("Key for minion ", "")
    fingers = _key(cfg, "-F").stdout
    assert f"web1:  {fingerprint(keys['web1'])}" in fingers and "master.pub:" in fingers
    assert _key(cfg, "-f", "db1").stdout.splitlines()[1] == f"db1:  {fingerprint(keys['db1'])}"
    assert "web1 deleted" in _key(cfg, "-d", "web1", "-y").stdout
    assert _key(cfg, "-D", "-y").returncode == 0
    store.refresh()
    assert all(store.ids(state) == [] for state in (ACCEPTED, PENDING, REJECTED, DENIED))
