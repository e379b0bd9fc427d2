"""The eauth backends on real files (text with hashes, htpasswd in each scheme Apache writes,
htdigest) and Salt's permission syntax, without a server."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

from saline.api.eauth import Eauth, EauthError, Identity
from saline.api.perms import Call, local_allowed, master_side_allowed


def _auth(settings: dict[str, Any], user: str, password: str) -> Identity | None:
    return asyncio.run(Eauth({"file": settings}).authenticate("file", user, password))


def test_text_file_plain_and_hashed(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("ann:pw1\nben:pw2\n")
    assert _auth({"^filename": str(plain)}, "ann", "pw1").user == "ann"
    assert _auth({"^filename": str(plain)}, "ann", "pw2") is None
    assert _auth({"^filename": str(plain)}, "zed", "pw1") is None
    hashed = tmp_path / "hashed"
    hashed.write_text(f"x|ann|{hashlib.sha256(b's3cret').hexdigest()}\n")
    settings = {"^filename": str(hashed), "^hashtype": "sha256", "^field_separator": "|", "^username_field": 2,
                "^password_field": 3}
    assert _auth(settings, "ann", "s3cret") is not None
    assert _auth(settings, "ann", "other") is None
    with pytest.raises(EauthError, match="unknown \\^hashtype 'nope'"):
        _auth({**settings, "^hashtype": "nope"}, "ann", "s3cret")
    with pytest.raises(EauthError, match="cannot read"):
        _auth({"^filename": str(tmp_path / "missing")}, "ann", "pw1")
    with pytest.raises(EauthError, match="\\^filename"):
        _auth({}, "ann", "pw1")


@pytest.mark.parametrize("scheme", ["bcrypt", "apr_md5_crypt", "ldap_sha1"])
def test_htpasswd_schemes(tmp_path: Path, scheme: str) -> None:
    from passlib.apache import HtpasswdFile

    path = tmp_path / "htpasswd"
    ht = HtpasswdFile(str(path), new=True, default_scheme=scheme)
    ht.set_password("web", "Web-pass-1")
    ht.save()
    settings = {"^filename": str(path), "^filetype": "htpasswd"}
    assert _auth(settings, "web", "Web-pass-1") is not None
    assert _auth(settings, "web", "web-pass-1") is None
    assert _auth(settings, "other", "Web-pass-1") is None


def test_htdigest(tmp_path: Path) -> None:
    from passlib.apache import HtdigestFile

    path = tmp_path / "htdigest"
    hd = HtdigestFile(str(path), new=True)
    hd.set_password("dee", "salt", "Dee-pass-1")
    hd.save()
    settings = {"^filename": str(path), "^filetype": "htdigest", "^realm": "salt"}
    assert _auth(settings, "dee", "Dee-pass-1") is not None
    assert _auth(settings, "dee", "nope") is None
    with pytest.raises(EauthError, match="\\^realm"):
        _auth({**settings, "^realm": None}, "dee", "Dee-pass-1")


def test_perms_of_users_globs_and_groups() -> None:
    eauth = Eauth({"pam": {"ann": ["test.*"], "dev*": ["@runner"], "admins%": ["@wheel"], "^x": 1}})
    assert eauth.perms(Identity("ann", "pam")) == ["test.*"]
    assert eauth.perms(Identity("devon", "pam", ["admins"])) == ["@runner", "@wheel"]
    assert eauth.perms(Identity("zed", "pam", ["users"])) == []
    rest = Eauth({"rest": {"^url": "http://x/", "rita": [".*"]}})
    assert rest.perms(Identity("rita", "rest", extra_perms=["@runner", ".*"])) == [".*", "@runner"]


def _local(perms: list[Any], fun: str, minions: list[str], args: tuple = (), kwargs: tuple = ()) -> bool:
    async def expand(target: Any, kind: str) -> list[str]:
        import fnmatch

        return [m for m in ("web1", "web2", "db1") if fnmatch.fnmatch(m, str(target))]

    return asyncio.run(local_allowed(perms, Call("local", fun, args, kwargs), minions, expand))


def test_local_permissions() -> None:
    assert _local([".*"], "cmd.run", ["db1"])
    assert _local(["test.*"], "test.ping", ["db1"]) and not _local(["test.*"], "cmd.run", ["db1"])
    assert not _local(["cmd.run"], "cmd.run_all", ["db1"])  # the whole name must match
    assert not _local(["test"], "test.ping", ["db1"])
    web = [{"web*": ["test.*", "cmd.run"]}]
    assert _local(web, "cmd.run", ["web1", "web2"]) and not _local(web, "cmd.run", ["web1", "db1"])
    assert not _local(web, "grains.items", ["web1"])
    assert _local(web, "test.ping", [])  # a target that reaches no one grants what it lists
    restricted = [{"*": [{"test.arg": {"args": ["a.*"], "kwargs": {"k": "v[0-9]"}}}]}]
    assert _local(restricted, "test.arg", ["db1"], ("abc",), (("k", "v1"),))
    assert not _local(restricted, "test.arg", ["db1"], ("xbc",), (("k", "v1"),))
    assert not _local(restricted, "test.arg", ["db1"], ("abc",), (("k", "vx"),))
    assert not _local(["@runner", "@wheel", {"@runner": [".*"]}], "test.ping", ["db1"])
    assert not _local(["(unclosed"], "test.ping", ["db1"])


def test_master_side_permissions() -> None:
    def ok(perms: list[Any], kind: str, fun: str) -> bool:
        return master_side_allowed(perms, Call(kind, fun))

    assert ok(["@runner"], "runner", "manage.status") and not ok(["@runner"], "wheel", "key.list_all")
    assert ok(["@wheel"], "wheel", "key.accept") and not ok([".*"], "wheel", "key.accept")
    assert ok(["@jobs"], "runner", "jobs.list_jobs") and not ok(["@jobs"], "runner", "manage.status")
    assert ok([{"@runner": ["jobs.*"]}], "runner", "jobs.lookup_jid")
    assert not ok([{"@runner": ["jobs.*"]}], "runner", "returners.replay")
    assert ok([{"@wheel": ["key.list_all", "key.finger"]}], "wheel", "key.finger")
    assert not ok([".*"], "runner", "jobs.list_jobs")
