"""The CLI's Unix socket: only the master's user gets in; arguments reach modules literally."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from pathlib import Path
from typing import Iterator

import pytest

from saline.modules.args import parse_cli_args
from saline.transport.local import pack
from tests.faults.conftest import Cluster, figure, logs, wait_for

pytestmark = pytest.mark.e2e

NOBODY = 65534


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("local")) as c:
        c.start_master()
        c.start_minions("m1")
        yield c


def _as_nobody(path: Path) -> tuple[str, bytes]:
    """In a forked child running as nobody: connect to the socket, send a publish, read the answer.
    Returns (what happened, the bytes read)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no Python-level cleanup, only system calls, then _exit
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            try:
                sock.connect(str(path))
            except OSError as exc:
                os.write(write_fd, f"connect:{errno.errorcode.get(exc.errno, exc.errno)}\n".encode())
                os._exit(0)
            try:
                sock.sendall(pack({"cmd": "publish", "tgt": "*", "fun": "cmd.run", "arg": ["id"], "wait": False}))
            except OSError as exc:  # the master may have closed already
                os.write(write_fd, f"send:{errno.errorcode.get(exc.errno, exc.errno)}\n".encode())
                os._exit(0)
            try:
                data = sock.recv(65536)
                os.write(write_fd, b"read:" + (data or b"EOF") + b"\n")
            except OSError as exc:
                os.write(write_fd, f"read:{errno.errorcode.get(exc.errno, exc.errno)}\n".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    out = b""
    while chunk := os.read(read_fd, 65536):
        out += chunk
    os.close(read_fd)
    os.waitpid(pid, 0)
    text = out.decode(errors="replace").strip()
    kind, _, rest = text.partition(":")
    return kind, rest.encode()


def test_another_user_cannot_connect(cluster: Cluster) -> None:
    sock_path = cluster.master_dir / "sock" / "master.sock"
    assert stat.S_IMODE(sock_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600
    kind, detail = _as_nobody(sock_path)
    assert (kind, detail) == ("connect", b"EACCES")


def test_peer_credentials_are_checked_even_when_modes_are_wrong(cluster: Cluster) -> None:
    """A careless chmod opens the folder and the socket: SO_PEERCRED still refuses the other user."""
    sock_path = cluster.master_dir / "sock" / "master.sock"
    jobs_before = set(cluster.runner("jobs.list_jobs"))
    # the path to the socket must be traversable by nobody for this test
    opened = [p for p in [*reversed(sock_path.parents)] if str(p).startswith(str(cluster.root.parent.parent))]
    saved = {p: stat.S_IMODE(p.stat().st_mode) for p in [*opened, sock_path]}
    try:
        for p in opened:
            os.chmod(p, saved[p] | 0o755 if p.is_dir() else saved[p])
        os.chmod(sock_path, 0o777)
        kind, detail = _as_nobody(sock_path)
    finally:
        for p, mode in saved.items():
            os.chmod(p, mode)
    # accepted by the kernel, closed by the master without an answer
    assert (kind, detail) in {("read", b"EOF"), ("read", b"ECONNRESET"), ("send", b"EPIPE"),
                              ("send", b"ECONNRESET")}, (kind, detail)
    wait_for(lambda: "refused a local connection from another user" in cluster.master_log(), 5, "the refusal logged")
    assert set(cluster.runner("jobs.list_jobs")) == jobs_before  # nothing was published
    figure("local_socket_other_user", modes="0700/0600: EACCES", peercred="connection closed, nothing published")


INJECTIONS = ["echo $(id)", '"; touch {canary}"', "'; touch {canary}; '", "`touch {canary}`", "a && touch {canary}",
              "| touch {canary}", "$(touch {canary})", "x\ntouch {canary}", "{{touch,{canary}}}"]


def test_arguments_reach_the_module_literally(cluster: Cluster, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    typed = [text.format(canary=canary) for text in INJECTIONS]
    # test.arg returns what the function received: every argument, byte for byte
    result = cluster.cli("saline", "m1", "test.arg", *typed, "--out", "json")
    assert result.returncode == 0, result.stderr
    received = json.loads(result.stdout)["m1"]["args"]
    # Salt reads each argument as YAML ('"x"' is the string x), and nothing else happens to it
    assert received == parse_cli_args(typed)
    assert received[0] == "echo $(id)" and received[1] == f"; touch {canary}" and received[3] == f"`touch {canary}`"
    assert received[6] == f"$(touch {canary})" and received[7] == f"x\ntouch {canary}"
    # cmd.run without a shell: the shell's characters are plain text for echo
    for text in typed:
        run = cluster.cli("saline", "m1", "cmd.run", f"echo {text}" if not text.startswith("echo") else text,
                          "python_shell=False", "--out", "json")
        assert run.returncode == 0, (text, run.stdout, run.stderr)
    literal = cluster.cli("saline", "m1", "cmd.run", "echo $(id)", "python_shell=False", "--out", "json")
    assert json.loads(literal.stdout) == {"m1": "$(id)"}
    semi = cluster.cli("saline", "m1", "cmd.run", f'echo "; touch {canary}"', "python_shell=False", "--out", "json")
    assert json.loads(semi.stdout) == {"m1": f"; touch {canary}"}
    # with the shell (Salt's default) the command typed reaches the shell once: the quoted text stays quoted
    quoted = cluster.cli("saline", "m1", "cmd.run", f"echo '$(touch {canary})'", "--out", "json")
    assert json.loads(quoted.stdout) == {"m1": f"$(touch {canary})"}
    assert not canary.exists(), logs(cluster)
    figure("cli_injection", arguments=len(typed), canary_created=canary.exists(), literal="yes")
