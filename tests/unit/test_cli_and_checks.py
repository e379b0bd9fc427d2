"""The pieces behind first contact, one at a time: every command's --help, --version and
--versions-report, option typos under a returner's prefix, the ids a target names, the pending-key
gate, the master-key service and its client, and the trust rules for the master's key."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from saline.master.admission import PendingGate
from saline.minion.master_key import MasterKeyError, configured_key
from saline.returners.checks import unknown_returner_keys
from saline.targeting import named_ids
from saline.transport import bootstrap
from saline.transport.keys import ensure_keypair, fingerprint, same_fingerprint

COMMANDS = ("saline", "master", "minion", "key", "run", "call", "swarm")


def _parser(command: str):
    import importlib

    module = importlib.import_module(f"saline.cli.{command}")
    if hasattr(module, "build_parser"):
        return module.build_parser()
    captured = {}
    import argparse

    original = argparse.ArgumentParser.parse_args

    def grab(self, *a, **k):  # the parser main() builds, stopped before it acts
        captured["parser"] = self
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = grab  # type: ignore[method-assign]
    argparse.ArgumentParser.parse_intermixed_args = grab  # type: ignore[method-assign]
    try:
        with pytest.raises(SystemExit):
            module.main(["x"])
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
        del argparse.ArgumentParser.parse_intermixed_args
    return captured["parser"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_and_argument_has_help(command: str) -> None:
    parser = _parser(command)
    silent = [a.option_strings or a.dest for a in parser._actions if not (a.help or "").strip()]
    assert not silent, f"saline-{command}: no help for {silent}"


@pytest.mark.parametrize("command", COMMANDS)
def test_version_and_versions_report(command: str) -> None:
    run = subprocess.run([sys.executable, "-m", f"saline.cli.{command}", "--version"], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 0 and run.stdout.split()[-1][0].isdigit(), run
    report = subprocess.run([sys.executable, "-m", f"saline.cli.{command}", "--versions-report"], capture_output=True,
                            text=True, timeout=30)
    assert report.returncode == 0, report
    for part in ("Saline Version:", "Python Version:", "libzmq:", "pyzmq:", "PyMySQL:", "psycopg:"):
        assert part in report.stdout, report.stdout


def test_a_bare_saline_names_only_what_is_required_and_run_help_lists_the_runners() -> None:
    bare = subprocess.run([sys.executable, "-m", "saline.cli.saline"], capture_output=True, text=True, timeout=30)
    assert bare.returncode == 2 and bare.stderr.strip().endswith("the following arguments are required: target, fun")
    helped = subprocess.run([sys.executable, "-m", "saline.cli.run", "--help"], capture_output=True, text=True, timeout=30)
    runners = helped.stdout.split("runners:\n")[1]
    for name in ("jobs.lookup_jid", "jobs.list_jobs", "returners.status", "returners.replay", "manage.status",
                 "state.event"):
        line = next(l for l in runners.splitlines() if l.split()[0] == name)
        assert len(line.split()) > 2, f"{name} has no description"


def test_typos_under_a_returners_prefix_are_named_with_the_closest_option() -> None:
    lines = unknown_returner_keys({
        "mysql.prot": 3306, "mysql.host": "db", "mysql": {"usr": "salt", "db": "salt"},
        "alt.mysql.dbb": "x", "alt.mysql.db": "y", "returner.postgres.hots": "h", "returner.postgres.host": "h",
        "redis.cluster.startup_nodes": [], "id": "m", "timeout": 5, "nosuchreturner.x": 1})
    assert lines == [
        "unknown option 'mysql.prot' for returner mysql (did you mean 'mysql.port'?); ignored",
        "unknown option 'mysql.usr' for returner mysql (did you mean 'mysql.user'?); ignored",
        "unknown option 'alt.mysql.dbb' for returner mysql (did you mean 'alt.mysql.db'?); ignored",
        "unknown option 'returner.postgres.hots' for returner postgres (did you mean 'returner.postgres.host'?); ignored",
    ]


def test_named_ids_are_what_salt_reports_as_missing() -> None:
    assert named_ids("web1,typo", "list") == ["web1", "typo"]
    assert named_ids(["a", "b", "a"], "list") == ["a", "b"]
    assert named_ids("web1 or L@a,b or G@os:Debian or web* or not gone", "compound") == ["web1", "a", "b"]
    assert named_ids("web1", "glob") == [] and named_ids("G@os:x", "grain") == []


def test_the_pending_gate_caps_entries_and_rate() -> None:
    gate = PendingGate(max_pending=3, per_second=2)
    assert [gate.admit(n) for n in (0, 1)] == [True, True]
    assert gate.admit(2) is False  # the burst of two per second is spent
    time.sleep(0.55)
    assert gate.admit(2) is True
    assert gate.admit(3) is False and gate.refused == 2  # the cap, whatever the rate


def test_the_key_service_sends_the_key_and_bad_answers_are_one_line(tmp_path: Path) -> None:
    public, _ = ensure_keypair(tmp_path, "master")

    async def scenario() -> tuple[str, str, str]:
        server = await bootstrap.serve("127.0.0.1", 0, public)
        port = server.sockets[0].getsockname()[1]

        async def liar(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"HTTP/1.0 200 OK\r\n\r\n")
            await w.drain()
            w.close()

        other = await asyncio.start_server(liar, "127.0.0.1", 0)
        got = await bootstrap.fetch("127.0.0.1", port)
        errors = []
        for target in (other.sockets[0].getsockname()[1], 1):
            try:
                await bootstrap.fetch("127.0.0.1", target, timeout=2)
            except bootstrap.BootstrapError as exc:
                errors.append(str(exc))
        server.close()
        other.close()
        return got, errors[0], errors[1]

    got, bad, closed = asyncio.run(scenario())
    assert got == public
    assert bad.endswith("did not answer with a saline master key") and "\n" not in bad
    assert closed.startswith("cannot connect to 127.0.0.1:1: ")


def test_trust_rules_for_the_masters_key(tmp_path: Path) -> None:
    public, _ = ensure_keypair(tmp_path / "m", "master")
    opts = {"pki_dir": str(tmp_path / "pki")}
    assert configured_key(opts) == (None, str(tmp_path / "pki" / "minion_master.pub"))  # first contact ahead
    assert configured_key({**opts, "master_pub": public})[0] == public
    assert configured_key({**opts, "master_pub": public, "master_finger": fingerprint(public).upper()})[0] == public
    with pytest.raises(MasterKeyError, match="not the master_finger"):
        configured_key({**opts, "master_pub": public, "master_finger": "aa:bb"})
    with pytest.raises(MasterKeyError, match="does not exist"):
        configured_key({**opts, "master_pub": str(tmp_path / "missing.pub")})
    assert same_fingerprint(fingerprint(public), fingerprint(public).replace(":", "").upper())
    assert len(fingerprint(public).split(":")) == 32
