"""Execution modules, their loader and job execution: real subprocesses, real files, no fakes."""

from __future__ import annotations

import logging
import os
import pwd
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import saline
from saline.modules import context
from saline.modules.args import KWARG_REGEX, parse_cli_args, split_args, yamlify_arg
from saline.modules.context import ExecContext, current, use
from saline.modules.grains import core_grains
from saline.modules.loader import BUILTIN_MODULES, execute, load_functions


@pytest.fixture
def opts(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "cache").mkdir()
    return {"id": "minion1", "cachedir": str(tmp_path / "cache"), "module_dirs": [], "grains": {"role": "web"}}


@pytest.fixture
def functions(opts: dict[str, Any]) -> dict:
    return load_functions(opts)


@pytest.fixture
def ctx(opts: dict[str, Any]) -> ExecContext:
    return ExecContext(opts=opts, grains=core_grains(opts), jid="20240101000000000000")


def run(functions: dict, ctx: ExecContext, fun: str, *cli: str) -> dict[str, Any]:
    """Run a job the way it arrives from the CLI: strings through parse_cli_args."""
    return execute(functions, fun, parse_cli_args(list(cli)), ctx)


# -- context ---------------------------------------------------------------------------------------

def test_current_outside_a_job_raises() -> None:
    with pytest.raises(RuntimeError, match="no job context"):
        current()


def test_use_sets_and_resets_and_threads_do_not_share(ctx: ExecContext) -> None:
    seen: list[Any] = []
    with use(ctx):
        assert current() is ctx

        def other_thread() -> None:
            seen.append(context.maybe_current())

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert seen == [None]
    assert context.maybe_current() is None


# -- argument parsing ------------------------------------------------------------------------------

def test_parse_cli_args_publish_form() -> None:
    assert parse_cli_args(["1", "two", "key=[1,2]", "flag=true"]) == [
        1, "two", {"__kwarg__": True, "key": [1, 2], "flag": True}]
    assert parse_cli_args([]) == []
    assert parse_cli_args(["a"]) == ["a"]


@pytest.mark.parametrize("text, value", [
    ("1", 1), ("-3", -3), ("1.5", 1.5), ("true", True), ("False", False), ("yes", True),
    ("null", None), ("None", None), ("[1, two]", [1, "two"]), ("{a: 1, b: [x]}", {"a": 1, "b": ["x"]}),
    ("0x1f", 31),
    ("0755", 755),                  # Salt reads a leading-zero number as decimal
    ("'0755'", "0755"),             # quoting asks for a string
    ('"a b"', "a b"),
    ("a: b", "a: b"),               # a mapping without braces stays text
    ("- a", "- a"),                 # a list without brackets stays text
    ("line1\nline2", "line1\nline2"),
    ("1e3", "1e3"),                 # YAML 1.1 needs a dot for a float
    ("1_000", "1_000"),
    ("1:20", "1:20"),               # not base-60 80
    ("2024-01-05", "2024-01-05"),   # dates stay text
    ("foo # bar", "foo # bar"),
    ("#", "#"), ("|", "|"), ("!", "!"), ("", ""), ("  ", "  "), ("---", "---"),
    ("  padded  ", "  padded  "),
    ("{a: 1, a: 2}", "{a: 1, a: 2}"),  # a repeated key is refused, as Salt does
    ("&x [*x]", "&x [*x]"),            # no anchors/aliases: they can build huge or cyclic values
    ("!!binary aGk=", "!!binary aGk="),
    ("!!python/object/apply:os.system [echo hi]", "!!python/object/apply:os.system [echo hi]"),
    ("[unclosed", "[unclosed"),
])
def test_yamlify_like_salt(text: str, value: Any) -> None:
    assert yamlify_arg(text) == value
    assert type(yamlify_arg(text)) is type(value)


def test_kwarg_detection() -> None:
    parsed = parse_cli_args(["a==b", "9a=1", "x.y-z=2", "name=hello world", "multi=a\nb", "=x", "e=", "ü=1"])
    assert parsed == ["a==b", "9a=1", "multi=a\nb", "=x",
                      {"__kwarg__": True, "x.y-z": 2, "name": "hello world", "e": "", "ü": 1}]


def test_a_jid_typed_as_a_number_stays_a_string() -> None:
    assert parse_cli_args(["20240105123456789012", "123"]) == ["20240105123456789012", 123]


def test_split_args() -> None:
    publish = [1, "x", {"__kwarg__": True, "a": 1}, "b=[2]", {"plain": "dict"}]
    before = [dict(p) if isinstance(p, dict) else p for p in publish]
    assert split_args(publish) == ([1, "x", {"plain": "dict"}], {"a": 1, "b": [2]})
    assert publish == before  # the input is not modified
    assert split_args(None) == ([], {})
    assert split_args("a=1") == ([], {"a": 1})
    assert split_args({"__kwarg__": True, "k": "v"}) == ([], {"k": "v"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(), max_size=8))
def test_parse_cli_args_never_raises(texts: list[str]) -> None:
    parsed = parse_cli_args(texts)
    assert isinstance(parsed, list)
    args, kwargs = split_args(parsed)
    assert all(isinstance(k, str) and KWARG_REGEX.match(f"{k}=v") for k in kwargs)
    assert len(args) + len(kwargs) <= len(texts)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="{}[]:,-!&*#|>'\"=ab01 \n\t.", max_size=30), max_size=5))
def test_parse_cli_args_never_raises_on_yaml_syntax(texts: list[str]) -> None:
    assert isinstance(parse_cli_args(texts), list)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, st.lists(json_values, max_size=6)))
def test_split_args_never_raises(arg: Any) -> None:
    args, kwargs = split_args(arg)
    assert isinstance(args, list) and isinstance(kwargs, dict)
    assert "__kwarg__" not in kwargs


# -- loader ----------------------------------------------------------------------------------------

def test_builtin_modules_and_private_functions(functions: dict) -> None:
    modules = {name.split(".")[0] for name in functions}
    assert modules == set(BUILTIN_MODULES)
    for name in ("test.ping", "test.echo", "test.sleep", "test.arg", "test.retcode", "test.fib", "cmd.run",
                 "cmd.run_all", "cmd.retcode", "cmd.script", "grains.items", "grains.item", "grains.get",
                 "grains.ls", "sys.doc", "sys.list_functions", "sys.list_modules", "status.uptime",
                 "status.loadavg", "status.meminfo", "status.diskusage", "saltutil.running",
                 "saltutil.find_job", "saltutil.kill_job", "saltutil.signal_job", "saltutil.sync_all",
                 "saltutil.sync_modules"):
        assert callable(functions[name]), name
    assert not any(n.split(".")[1].startswith("_") for n in functions)
    # imported helpers and the minion's grain collector are not execution functions
    assert "test.current" not in functions and "grains.core_grains" not in functions
    assert "cmd.kill_process_group" not in functions


def test_every_builtin_function_has_a_docstring(functions: dict) -> None:
    for name, func in functions.items():
        assert func.__doc__ and func.__doc__.strip(), name


CUSTOM = '''
"""A custom module written the way Salt users write them."""
import os
from os.path import join   # imported: not a function of this module

__virtualname__ = "mine"
__func_alias__ = {"list_": "list"}


def hello(name="world"):
    """Say hello."""
    return f"hello {name} from {__grains__['id']}"


def list_():
    """Aliased to mine.list."""
    return [1, 2]


def cross(text):
    """Call another module through __salt__."""
    return __salt__["cmd.run"]("echo " + text)


def fail_softly():
    """Set the retcode the Salt way."""
    __context__["retcode"] = 7
    return "soft"


def failed_result():
    """A dict with a false result."""
    return {"result": False, "comment": "nope"}


def failed_success():
    """A dict with a false success."""
    return {"success": 0}


def none_result():
    """A dict with result None."""
    return {"result": None}


def good_result():
    """A dict with a true result."""
    return {"result": True, "success": True}


def gen_dicts():
    """Yields dicts."""
    yield {"a": 1}
    yield {"b": 2}


def gen_mixed():
    """Yields mixed values."""
    yield 1
    yield {"b": 2}


def command_error():
    """Raises CommandExecutionError."""
    from saline.modules.errors import CommandExecutionError
    raise CommandExecutionError("the disk is on fire")


def exits():
    """Calls sys.exit."""
    raise SystemExit(3)


def _private():
    return "hidden"
'''


def write_modules(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "custom.py").write_text(CUSTOM)
    (folder / "broken.py").write_text("def oops(:\n    pass\n")
    (folder / "declines.py").write_text(
        "def __virtual__():\n    return (False, 'needs the frobnicator')\n\ndef run():\n    '''x'''\n    return 1\n")
    (folder / "test.py").write_text("def ping():\n    '''Overridden.'''\n    return 'custom pong'\n")
    (folder / "_hidden.py").write_text("def x():\n    return 1\n")


def test_custom_modules(tmp_path: Path, opts: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    write_modules(tmp_path / "mods")
    opts["module_dirs"] = [str(tmp_path / "mods"), str(tmp_path / "missing")]
    with caplog.at_level(logging.ERROR, logger="saline.modules.loader"):
        functions = load_functions(opts)
    # the broken file is reported on one log line and skipped; the rest loaded
    errors = [r.getMessage() for r in caplog.records if "broken.py" in r.getMessage()]
    assert len(errors) == 1 and "\n" not in errors[0] and "SyntaxError" in errors[0]
    assert "broken.oops" not in functions
    assert "mine.hello" in functions and "custom.hello" not in functions
    assert "mine.list" in functions and "mine.list_" not in functions
    assert "mine.join" not in functions and "mine._private" not in functions
    assert "declines.run" not in functions
    assert not any(n.startswith("_hidden.") for n in functions)
    # a custom module replaces the built-in one of the same name, whole
    assert sorted(n for n in functions if n.startswith("test.")) == ["test.ping"]

    ctx = ExecContext(opts=opts, grains={"id": "minion1"}, jid="1")
    assert execute(functions, "test.ping", [], ctx)["return"] == "custom pong"
    assert execute(functions, "mine.hello", [{"__kwarg__": True, "name": "bob"}], ctx)["return"] == "hello bob from minion1"
    assert execute(functions, "mine.list", [], ctx)["return"] == [1, 2]
    assert execute(functions, "mine.cross", ["x"], ctx) == {"return": "x", "retcode": 0, "success": True}
    assert execute(functions, "mine.fail_softly", [], ctx) == {"return": "soft", "retcode": 7, "success": False}
    assert execute(functions, "declines.run", [], ctx)["return"] == (
        "'declines.run' is not available. Possible reasons: 'needs the frobnicator'")
    assert execute(functions, "broken.oops", [], ctx)["return"].startswith(
        "'broken.oops' is not available. Possible reasons: 'SyntaxError")


def test_result_and_success_keys_set_retcode(tmp_path: Path, opts: dict[str, Any]) -> None:
    write_modules(tmp_path / "mods")
    opts["module_dirs"] = [str(tmp_path / "mods")]
    functions = load_functions(opts)
    ctx = ExecContext(opts=opts, grains={"id": "m"})
    for fun, retcode in [("mine.failed_result", 1), ("mine.failed_success", 1), ("mine.none_result", 1),
                         ("mine.good_result", 0)]:
        ret = execute(functions, fun, [], ctx)
        assert (ret["retcode"], ret["success"]) == (retcode, retcode == 0), fun
        assert "out" not in ret


def test_generators_are_collected(tmp_path: Path, opts: dict[str, Any]) -> None:
    write_modules(tmp_path / "mods")
    opts["module_dirs"] = [str(tmp_path / "mods")]
    functions = load_functions(opts)
    ctx = ExecContext(opts=opts, grains={})
    assert execute(functions, "mine.gen_dicts", [], ctx)["return"] == {"a": 1, "b": 2}
    assert execute(functions, "mine.gen_mixed", [], ctx)["return"] == [1, {"b": 2}]


def test_error_kinds(tmp_path: Path, opts: dict[str, Any]) -> None:
    write_modules(tmp_path / "mods")
    opts["module_dirs"] = [str(tmp_path / "mods")]
    functions = load_functions(opts)
    ctx = ExecContext(opts=opts, grains={})
    assert execute(functions, "mine.command_error", [], ctx) == {
        "return": "ERROR: the disk is on fire", "retcode": 1, "success": False, "out": "nested"}
    ret = execute(functions, "mine.exits", [], ctx)
    assert ret["return"].startswith("The minion function caused an exception: SystemExit: 3")
    assert ret["retcode"] == 1


# -- execute ----------------------------------------------------------------------------------------

def test_unknown_function(functions: dict, ctx: ExecContext) -> None:
    assert execute(functions, "foo.bar", [], ctx) == {
        "return": "'foo.bar' is not available.", "retcode": 1, "success": False, "out": "nested"}
    assert execute(functions, None, [], ctx)["retcode"] == 1  # type: ignore[arg-type]


def test_wrong_arguments(functions: dict, ctx: ExecContext) -> None:
    ret = run(functions, ctx, "test.echo")
    assert ret["retcode"] == 1 and ret["success"] is False and ret["out"] == "nested"
    first, *usage = ret["return"].splitlines()
    assert first == "Passed invalid arguments to test.echo: missing a required argument: 'text'"
    assert usage == ["Usage: test.echo(text)", "Return a string - used for testing the connection."]
    assert run(functions, ctx, "test.ping", "extra")["return"].startswith(
        "Passed invalid arguments to test.ping: too many positional arguments")
    assert run(functions, ctx, "test.echo", "hi", "bogus=1") == {
        "return": "ERROR executing 'test.echo': The following keyword arguments are not valid: bogus=1",
        "retcode": 1, "success": False, "out": "nested"}


def test_exception_is_reported_with_traceback(functions: dict, ctx: ExecContext) -> None:
    ret = run(functions, ctx, "test.exception", "boom")
    assert ret["return"].startswith("The minion function caused an exception: Exception: boom\nTraceback")
    assert ret["return"].rstrip().endswith("Exception: boom")
    assert (ret["retcode"], ret["success"], ret["out"]) == (1, False, "nested")
    assert run(functions, ctx, "test.exception")["return"].startswith(
        "The minion function caused an exception: Exception: Test exception")


def test_retcode_and_success(functions: dict, ctx: ExecContext) -> None:
    assert run(functions, ctx, "test.retcode", "3") == {"return": 3, "retcode": 3, "success": False}
    # each job starts from retcode 0 even when the context is reused
    assert run(functions, ctx, "test.ping") == {"return": True, "retcode": 0, "success": True}
    assert run(functions, ctx, "test.retcode") == {"return": 0, "retcode": 0, "success": True}


def test_test_module(functions: dict, ctx: ExecContext) -> None:
    assert run(functions, ctx, "test.echo", "hello world")["return"] == "hello world"
    assert run(functions, ctx, "test.version")["return"] == saline.__version__
    assert run(functions, ctx, "test.arg", "1", "two", "3.1", "txt=hello", "wow={a: 1, b: hello}")["return"] == {
        "args": [1, "two", 3.1], "kwargs": {"txt": "hello", "wow": {"a": 1, "b": "hello"}}}
    fib = run(functions, ctx, "test.fib", "100")["return"]
    assert fib[0] == [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89] and isinstance(fib[1], float)
    started = time.monotonic()
    assert run(functions, ctx, "test.sleep", "0.2")["return"] is True
    assert 0.2 <= time.monotonic() - started < 2


def run_in_thread(functions: dict, ctx: ExecContext, fun: str, *cli: str) -> tuple[threading.Thread, list]:
    box: list = []
    thread = threading.Thread(target=lambda: box.append(run(functions, ctx, fun, *cli)))
    thread.start()
    return thread, box


def test_kill_event_stops_test_sleep(functions: dict, ctx: ExecContext) -> None:
    started = time.monotonic()
    thread, box = run_in_thread(functions, ctx, "test.sleep", "30")
    time.sleep(0.3)
    ctx.kill_event.set()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 3
    assert box[0]["retcode"] == 1 and box[0]["success"] is False
    assert "killed" in box[0]["return"]


def test_kill_event_stops_cmd_run_and_its_children(functions: dict, ctx: ExecContext) -> None:
    started = time.monotonic()
    thread, box = run_in_thread(functions, ctx, "cmd.run", "sleep 30; echo never")
    while not ctx.processes and time.monotonic() - started < 5:
        time.sleep(0.02)
    proc = ctx.processes[0]
    time.sleep(0.2)
    ctx.kill_event.set()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 4
    assert proc.poll() is not None
    assert box[0]["retcode"] == 1 and "killed" in box[0]["return"]
    # the shell's child (sleep) went with it: nothing of the group is left running
    assert live_members_of_group(proc.pid) == []


def live_members_of_group(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies (from /proc/<pid>/stat)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, group = text.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            live.append(int(stat.parent.name))
    return live


def test_context_stop_kills_registered_processes(functions: dict, ctx: ExecContext) -> None:
    thread, box = run_in_thread(functions, ctx, "cmd.run_all", "sleep 30")
    deadline = time.monotonic() + 5
    while not ctx.processes and time.monotonic() < deadline:
        time.sleep(0.02)
    ctx.stop()
    thread.join(5)
    assert not thread.is_alive() and ctx.processes[0].poll() is not None


# -- cmd ---------------------------------------------------------------------------------------------

def test_cmd_run_output_and_retcode(functions: dict, ctx: ExecContext) -> None:
    assert run(functions, ctx, "cmd.run", "echo out; echo err >&2") == {
        "return": "out\nerr", "retcode": 0, "success": True}
    assert run(functions, ctx, "cmd.run", "echo oops; exit 3") == {"return": "oops", "retcode": 3, "success": False}
    assert run(functions, ctx, "cmd.run", "exit 3", "ignore_retcode=True") == {
        "return": "", "retcode": 0, "success": True}


def test_cmd_run_all_and_retcode(functions: dict, ctx: ExecContext) -> None:
    ret = run(functions, ctx, "cmd.run_all", "echo out; echo err >&2; exit 2")
    assert ret["retcode"] == 2 and ret["success"] is False
    assert {k: ret["return"][k] for k in ("retcode", "stdout", "stderr")} == {"retcode": 2, "stdout": "out", "stderr": "err"}
    assert isinstance(ret["return"]["pid"], int) and ret["return"]["pid"] > 0
    assert run(functions, ctx, "cmd.retcode", "exit 4") == {"return": 4, "retcode": 4, "success": False}


def test_cmd_options(functions: dict, ctx: ExecContext, tmp_path: Path) -> None:
    assert run(functions, ctx, "cmd.run", "pwd", f"cwd={tmp_path}")["return"] == str(tmp_path)
    assert run(functions, ctx, "cmd.run", "echo $SALINE_T", "env={SALINE_T: v1}")["return"] == "v1"
    assert run(functions, ctx, "cmd.run", "cat", "stdin=fed in")["return"] == "fed in"
    assert run(functions, ctx, "cmd.run", "echo $0", "shell=/bin/bash")["return"] == "/bin/bash"
    ret = run(functions, ctx, "cmd.run", "pwd", "cwd=/no/such/dir")
    assert ret == {"return": "ERROR: Specified cwd '/no/such/dir' either not absolute or does not exist",
                   "retcode": 1, "success": False, "out": "nested"}
    ret = run(functions, ctx, "cmd.run", "no-such-binary-xyz", "python_shell=False")
    assert ret["return"].startswith("ERROR: Unable to run command 'no-such-binary-xyz'")


def test_cmd_runas(functions: dict, ctx: ExecContext) -> None:
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() != 0:
        ret = run(functions, ctx, "cmd.run", "id -u", "runas=nobody", "cwd=/")
        assert ret["retcode"] == 1 and ret["return"].startswith("ERROR: Unable to run command")
        return
    assert run(functions, ctx, "cmd.run", "id -u; id -g", "runas=nobody", "cwd=/")["return"] == (
        f"{nobody.pw_uid}\n{nobody.pw_gid}")


def test_cmd_timeout_kills(functions: dict, ctx: ExecContext) -> None:
    started = time.monotonic()
    ret = run(functions, ctx, "cmd.run", "sleep 30", "timeout=1")
    assert time.monotonic() - started < 5
    assert ret == {"return": "sleep 30 : Timed out after 1 seconds", "retcode": 1, "success": False}
    assert ctx.processes[-1].poll() is not None


def test_shell_false_keeps_metacharacters_literal(functions: dict, ctx: ExecContext, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    ret = run(functions, ctx, "cmd.run", f'echo "; touch {target}" "$(touch {target})"', "python_shell=False")
    assert ret["return"] == f"; touch {target} $(touch {target})"
    assert not target.exists()
    # a list is argv as is, with python_shell=False nothing is interpreted either
    with use(ctx):
        assert functions["cmd.run"](["echo", f"; touch {target}"], python_shell=False) == f"; touch {target}"
    assert not target.exists()


def test_shell_true_runs_the_string_once_as_typed(functions: dict, ctx: ExecContext, tmp_path: Path) -> None:
    log_file = tmp_path / "log"
    command = f"echo ran >> {log_file}; printf '%s|' \"a  b\" '$HOME' '{{x}}' \"%d\" '\\n'"
    ret = run(functions, ctx, "cmd.run", command)
    assert ret["return"] == "a  b|$HOME|{x}|%d|\\n|"
    assert log_file.read_text() == "ran\n"  # exactly once


def test_shell_list_is_quoted_word_by_word(functions: dict, ctx: ExecContext, tmp_path: Path) -> None:
    target = tmp_path / "x"
    with use(ctx):
        assert functions["cmd.run"](["echo", f"; touch {target}"]) == f"; touch {target}"
    assert not target.exists()


def test_cmd_script(functions: dict, ctx: ExecContext, tmp_path: Path) -> None:
    script = tmp_path / "hello.sh"
    script.write_text('#!/bin/sh\necho "args: $1 / $2"\necho warn >&2\nexit 5\n')  # no execute bit
    ret = run(functions, ctx, "cmd.script", str(script), "one 'two words'")
    assert ret["retcode"] == 5 and ret["success"] is False
    assert {k: ret["return"][k] for k in ("retcode", "stdout", "stderr")} == {
        "retcode": 5, "stdout": "args: one / two words", "stderr": "warn"}
    # the temporary copy is gone afterwards
    assert not list(Path(ctx.opts["cachedir"]).glob("saline-script-*"))
    missing = run(functions, ctx, "cmd.script", str(tmp_path / "nope.sh"))
    assert missing["retcode"] == 1 and missing["return"]["cache_error"] is True
    assert run(functions, ctx, "cmd.script", "salt://x.sh")["return"].startswith("ERROR: cmd.script takes a path")


# -- grains --------------------------------------------------------------------------------------------

def test_core_grains(opts: dict[str, Any]) -> None:
    grains = core_grains(opts)
    assert grains["id"] == "minion1" and grains["role"] == "web"
    assert grains["kernel"] == "Linux" and grains["kernelrelease"] == os.uname().release
    assert "127.0.0.1" in grains["ipv4"] and isinstance(grains["ipv6"], list)
    assert grains["pythonversion"] == list(sys.version_info)
    assert grains["pythonexecutable"] == sys.executable
    assert grains["saltversion"] == grains["salineversion"] == saline.__version__
    assert grains["num_cpus"] == os.cpu_count()
    assert isinstance(grains["mem_total"], int) and grains["mem_total"] > 0
    assert grains["cpuarch"] == os.uname().machine and grains["pid"] == os.getpid()
    assert grains["nodename"] == os.uname().nodename and grains["host"] == os.uname().nodename.split(".")[0]
    assert grains["path"] == os.environ.get("PATH", "")
    assert grains["username"] == pwd.getpwuid(os.geteuid()).pw_name
    release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    if release.get("ID") == "debian":
        assert (grains["os"], grains["os_family"]) == ("Debian", "Debian")
        assert grains["osrelease"] == release["VERSION_ID"].strip('"')


def test_config_grains_override_core(opts: dict[str, Any]) -> None:
    opts["grains"] = {"os": "Custom", "roles": ["a"]}
    grains = core_grains(opts)
    assert grains["os"] == "Custom" and grains["roles"] == ["a"]


def test_grains_functions(functions: dict, opts: dict[str, Any]) -> None:
    ctx = ExecContext(opts=opts, grains={"id": "m1", "os": "Debian", "pkg": {"apache": "apache2"},
                                         "ifs": [{"name": "eth0"}, {"name": "lo"}], "roles": ["web", "db"]})
    assert run(functions, ctx, "grains.items")["return"] == ctx.grains
    assert run(functions, ctx, "grains.ls")["return"] == ["id", "ifs", "os", "pkg", "roles"]
    assert run(functions, ctx, "grains.get", "pkg:apache")["return"] == "apache2"
    assert run(functions, ctx, "grains.get", "roles:1")["return"] == "db"
    assert run(functions, ctx, "grains.get", "ifs:name")["return"] == "eth0"
    assert run(functions, ctx, "grains.get", "nope")["return"] == ""
    assert run(functions, ctx, "grains.get", "nope", "default=x")["return"] == "x"
    assert run(functions, ctx, "grains.get", "pkg|apache", "delimiter=|")["return"] == "apache2"
    assert run(functions, ctx, "grains.item", "os", "pkg:apache", "missing")["return"] == {
        "os": "Debian", "pkg:apache": "apache2", "missing": ""}


# -- sys -----------------------------------------------------------------------------------------------

def test_sys_module(functions: dict, ctx: ExecContext) -> None:
    listed = run(functions, ctx, "sys.list_functions", "test")["return"]
    assert listed == sorted(n for n in functions if n.startswith("test.")) and "test.ping" in listed
    assert run(functions, ctx, "sys.list_functions")["return"] == sorted(functions)
    assert run(functions, ctx, "sys.list_functions", "sys.list_*")["return"] == [
        "sys.list_functions", "sys.list_modules"]
    assert run(functions, ctx, "sys.list_modules")["return"] == sorted(BUILTIN_MODULES)
    assert run(functions, ctx, "sys.list_modules", "st*", "sy*")["return"] == ["status", "sys"]
    docs = run(functions, ctx, "sys.doc", "test.ping")["return"]
    assert list(docs) == ["test.ping"] and docs["test.ping"].startswith("Just used to make sure the minion is up")
    assert set(run(functions, ctx, "sys.doc", "grains")["return"]) == {
        "grains.items", "grains.item", "grains.get", "grains.ls"}
    assert run(functions, ctx, "sys.argspec", "test.echo")["return"] == {
        "test.echo": {"args": ["text"], "defaults": None, "varargs": None, "kwargs": None}}


def test_sys_module_name_does_not_match_longer_names(opts: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / "sysctl.py").write_text("def get():\n    '''x'''\n    return 1\n")
    opts["module_dirs"] = [str(folder)]
    functions = load_functions(opts)
    ctx = ExecContext(opts=opts, grains={})
    assert "sysctl.get" not in run(functions, ctx, "sys.list_functions", "sys")["return"]
    assert "sysctl.get" in run(functions, ctx, "sys.list_functions", "sysctl")["return"]


# -- status ----------------------------------------------------------------------------------------------

def test_status_module(functions: dict, ctx: ExecContext) -> None:
    up = run(functions, ctx, "status.uptime")["return"]
    assert set(up) == {"seconds", "since_iso", "since_t", "days", "time", "users"}
    proc_uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert abs(up["seconds"] - proc_uptime) < 5 and up["days"] == up["seconds"] // 86400
    assert re.fullmatch(r"\d+:\d\d", up["time"]) and abs(up["since_t"] - (time.time() - up["seconds"])) < 5
    assert isinstance(up["users"], int)
    load = run(functions, ctx, "status.loadavg")["return"]
    assert set(load) == {"1-min", "5-min", "15-min"} and all(isinstance(v, float) for v in load.values())
    mem = run(functions, ctx, "status.meminfo")["return"]
    assert mem["MemTotal"]["unit"] == "kB" and int(mem["MemTotal"]["value"]) > 0
    disk = run(functions, ctx, "status.diskusage", "/")["return"]
    stats = os.statvfs("/")
    assert disk["/"]["total"] == stats.f_blocks * stats.f_frsize and 0 <= disk["/"]["available"] <= disk["/"]["total"]
    everything = run(functions, ctx, "status.diskusage")["return"]
    assert "/" in everything and "/proc" not in everything and "/sys" not in everything
    fstype = next(line.split()[2] for line in Path("/proc/mounts").read_text().splitlines() if line.split()[1] == "/")
    assert "/" in run(functions, ctx, "status.diskusage", fstype)["return"]


# -- saltutil ---------------------------------------------------------------------------------------------

def test_saltutil_module(functions: dict, opts: dict[str, Any], tmp_path: Path) -> None:
    jobs = [{"jid": "20240101000000000001", "fun": "test.sleep", "arg": [30], "pid": 1, "tgt": "*",
             "tgt_type": "glob", "user": "root"}]
    asked: list[str] = []

    def kill(jid: str) -> bool:
        asked.append(jid)
        return jid == jobs[0]["jid"]

    ctx = ExecContext(opts=opts, grains={}, running=lambda: jobs, kill=kill)
    assert run(functions, ctx, "saltutil.running")["return"] == jobs
    assert run(functions, ctx, "saltutil.find_job", jobs[0]["jid"])["return"] == jobs[0]
    assert run(functions, ctx, "saltutil.find_job", "20240101000000000009")["return"] == {}
    assert run(functions, ctx, "saltutil.kill_job", jobs[0]["jid"])["return"] is True
    assert run(functions, ctx, "saltutil.kill_job", "20240101000000000009")["return"] is False
    assert run(functions, ctx, "saltutil.signal_job", jobs[0]["jid"], "15")["return"] is True
    assert run(functions, ctx, "saltutil.signal_job", jobs[0]["jid"], "SIGKILL")["return"] is True
    assert asked == [jobs[0]["jid"], "20240101000000000009", jobs[0]["jid"], jobs[0]["jid"]]
    assert run(functions, ctx, "saltutil.signal_job", jobs[0]["jid"], "NOPE")["return"] == (
        "ERROR executing 'saltutil.signal_job': Unknown signal: NOPE")
    assert run(functions, ctx, "saltutil.signal_job", jobs[0]["jid"], "SIGCONT")["retcode"] == 1
    assert len(asked) == 4


def test_saltutil_sync_rereads_module_dirs(functions: dict, opts: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "mods"
    folder.mkdir()
    opts["module_dirs"] = [str(folder)]
    ctx = ExecContext(opts=opts, grains={})
    assert run(functions, ctx, "saltutil.sync_modules")["return"] == []
    (folder / "extra.py").write_text("def hi():\n    '''hi'''\n    return 'hi'\n")
    assert run(functions, ctx, "saltutil.sync_modules")["return"] == ["modules.extra"]
    assert run(functions, ctx, "saltutil.sync_all")["return"] == {"modules": ["modules.extra"]}
    # loading again (what the minion does after a sync) picks the new module up
    reloaded = load_functions(opts)
    assert execute(reloaded, "extra.hi", [], ctx)["return"] == "hi"
