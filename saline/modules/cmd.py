"""The ``cmd`` module: run shell commands and local scripts on the minion (Salt's ``cmd.*``).

With ``python_shell=True`` (the default, as from Salt's CLI) the command string is handed to
``<shell> -c`` exactly as given: no quoting, escaping or formatting is added, so what the user
typed reaches the shell once and literally. With ``python_shell=False`` the string is split like a
shell would (``shlex``) and run without any shell, so ``;``, ``|`` or ``$(...)`` are plain text.

Every child runs in its own session and is registered in the job's ``processes``; a timeout or
``saltutil.kill_job`` kills its whole process group. As in Salt, the job's retcode becomes the
command's exit code (unless ``ignore_retcode``).
"""

from __future__ import annotations

import logging
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import time
from typing import Any

from saline.modules.context import ExecContext, kill_process_group, maybe_current
from saline.modules.errors import CommandExecutionError, JobKilled

log = logging.getLogger(__name__)

DEFAULT_SHELL = "/bin/sh"
_POLL_SECONDS = 0.05


def _env(env: Any) -> dict[str, str]:
    run_env = dict(os.environ)
    if env is None:
        return run_env
    if isinstance(env, list):  # Salt also takes a list of one-key dicts
        merged: dict = {}
        for item in env:
            if not isinstance(item, dict):
                raise CommandExecutionError("Invalid input: 'env' must be a dict")
            merged.update(item)
        env = merged
    if not isinstance(env, dict):
        raise CommandExecutionError("Invalid input: 'env' must be a dict")
    run_env.update({str(k): "" if v is None else str(v) for k, v in env.items()})
    return run_env


def _cwd(cwd: Any, runas: str | None) -> str:
    if cwd is None:
        # Salt runs in the home folder of the user the command runs as.
        cwd = os.path.expanduser("~" + (runas or ""))
    cwd = str(cwd)
    if not os.path.isabs(cwd) or not os.path.isdir(cwd):
        raise CommandExecutionError(f"Specified cwd '{cwd}' either not absolute or does not exist")
    return cwd


def _argv(cmd: Any, python_shell: bool, shell: str | None) -> list[str]:
    if isinstance(cmd, (list, tuple)):
        argv = [str(part) for part in cmd]
        # A list is a command and its arguments; for a shell, each part is quoted as one word.
        return [shell or DEFAULT_SHELL, "-c", shlex.join(argv)] if python_shell else argv
    text = "" if cmd is None else str(cmd)
    if python_shell:
        return [shell or DEFAULT_SHELL, "-c", text]
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise CommandExecutionError(f"Unable to split command '{text}': {exc}") from None
    if not argv:
        raise CommandExecutionError("No command given")
    return argv


def _user_kwargs(runas: str | None) -> dict[str, Any]:
    if not runas:
        return {}
    try:
        entry = pwd.getpwnam(str(runas))
    except KeyError:
        raise CommandExecutionError(f"User '{runas}' is not available") from None
    # Popen(user=) changes only the uid: set the user's own groups too, never keep root's.
    return {"user": entry.pw_uid, "group": entry.pw_gid,
            "extra_groups": os.getgrouplist(entry.pw_name, entry.pw_gid)}


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def _run(cmd: Any, *, cwd: Any = None, stdin: Any = None, shell: str | None = None,
         python_shell: bool = True, env: Any = None, timeout: Any = None, runas: str | None = None,
         umask: Any = None, rstrip: bool = True, redirect_stderr: bool = False,
         ignore_retcode: bool = False, output_loglevel: str | None = None) -> dict[str, Any]:
    """Run one command; ``{"pid", "retcode", "stdout", "stderr"}``. The core of every cmd.*."""
    ctx: ExecContext | None = maybe_current()
    argv = _argv(cmd, bool(python_shell), shell)
    popen_kwargs: dict[str, Any] = _user_kwargs(runas)
    if umask is not None:
        try:
            popen_kwargs["umask"] = int(str(umask), 8)
        except ValueError:
            raise CommandExecutionError(f"Invalid umask: '{umask}'") from None
    limit = float(timeout) if timeout not in (None, "", 0) else None
    quiet = str(output_loglevel).lower() == "quiet"
    if not quiet:
        log.debug("Executing command %r in directory '%s'", cmd, cwd)
    try:
        proc = subprocess.Popen(
            argv,
            cwd=_cwd(cwd, runas),
            env=_env(env),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if redirect_stderr else subprocess.PIPE,
            start_new_session=True,  # its own process group, so a kill reaches its children
            close_fds=True,
            **popen_kwargs,
        )
    except OSError as exc:
        raise CommandExecutionError(f"Unable to run command '{cmd}', reason: {exc.strerror or exc}") from None
    if ctx is not None:
        ctx.processes.append(proc)
    payload = str(stdin).encode() if stdin is not None else None
    deadline = time.monotonic() + limit if limit is not None else None
    stopped: str | None = None
    first = True
    while True:
        try:
            out, err = proc.communicate(input=payload if first else None, timeout=_POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            first = False  # the input is sent on the first call; later calls go on reading
        if ctx is not None and ctx.kill_event.is_set():
            stopped = "killed"
        elif deadline is not None and time.monotonic() >= deadline:
            stopped = "timeout"
        if stopped:
            kill_process_group(proc)
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                # something that left the group still holds the pipes: stop reading
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
                proc.wait()
                out = err = b""
            break
    if stopped == "killed":
        raise JobKilled(f"Job {ctx.jid if ctx else ''} was killed while running {cmd!r}")
    if stopped == "timeout":
        # Salt's message and retcode for a command that ran past its timeout
        if ctx is not None:
            ctx.retcode = 1
        return {"pid": proc.pid, "retcode": 1, "stdout": f"{cmd} : Timed out after {timeout} seconds", "stderr": ""}
    stdout, stderr = _decode(out), _decode(err)
    if rstrip:
        stdout, stderr = stdout.rstrip(), stderr.rstrip()
    ret = {"pid": proc.pid, "retcode": proc.returncode, "stdout": stdout, "stderr": stderr}
    if ctx is not None:
        ctx.retcode = 0 if ignore_retcode else proc.returncode
    if proc.returncode != 0 and not ignore_retcode and not quiet:
        log.error("Command %r failed with return code: %s", cmd, proc.returncode)
    return ret


def run(cmd: Any, cwd: Any = None, stdin: Any = None, shell: str | None = None, python_shell: bool = True,
        env: Any = None, timeout: Any = None, output_loglevel: str | None = None, ignore_retcode: bool = False,
        runas: str | None = None, umask: Any = None, rstrip: bool = True) -> str:
    """Execute the passed command and return its output (stdout and stderr together) as a string.

    The job's retcode is the command's exit code unless ``ignore_retcode=True``. ``timeout`` is
    in seconds; ``runas`` runs the command as another user (the minion must run as root).

    CLI Example::

        saline '*' cmd.run "ls -l | awk '/foo/{print \\$2}'"
        saline '*' cmd.run "ls -l" python_shell=False cwd=/tmp
    """
    ret = _run(cmd, cwd=cwd, stdin=stdin, shell=shell, python_shell=python_shell, env=env, timeout=timeout,
               output_loglevel=output_loglevel, ignore_retcode=ignore_retcode, runas=runas, umask=umask,
               rstrip=rstrip, redirect_stderr=True)
    return ret["stdout"]


def run_all(cmd: Any, cwd: Any = None, stdin: Any = None, shell: str | None = None, python_shell: bool = True,
            env: Any = None, timeout: Any = None, output_loglevel: str | None = None, ignore_retcode: bool = False,
            runas: str | None = None, umask: Any = None, rstrip: bool = True,
            redirect_stderr: bool = False) -> dict[str, Any]:
    """Execute the passed command and return a dict of its pid, retcode, stdout and stderr.

    CLI Example::

        saline '*' cmd.run_all "ls -l | awk '/foo/{print \\$2}'"
    """
    return _run(cmd, cwd=cwd, stdin=stdin, shell=shell, python_shell=python_shell, env=env, timeout=timeout,
                output_loglevel=output_loglevel, ignore_retcode=ignore_retcode, runas=runas, umask=umask,
                rstrip=rstrip, redirect_stderr=redirect_stderr)


def retcode(cmd: Any, cwd: Any = None, stdin: Any = None, shell: str | None = None, python_shell: bool = True,
            env: Any = None, timeout: Any = None, output_loglevel: str | None = None, ignore_retcode: bool = False,
            runas: str | None = None, umask: Any = None) -> int:
    """Execute the passed command and return only its exit code.

    CLI Example::

        saline '*' cmd.retcode "file /bin/bash"
    """
    ret = _run(cmd, cwd=cwd, stdin=stdin, shell=shell, python_shell=python_shell, env=env, timeout=timeout,
               output_loglevel=output_loglevel, ignore_retcode=ignore_retcode, runas=runas, umask=umask)
    return ret["retcode"]


def script(source: Any, args: Any = None, cwd: Any = None, stdin: Any = None, shell: str | None = None,
           python_shell: bool | None = None, env: Any = None, timeout: Any = None,
           output_loglevel: str | None = None, ignore_retcode: bool = False, runas: str | None = None,
           umask: Any = None) -> dict[str, Any]:
    """Run a script file that is on the minion and return run_all's dict (pid, retcode, stdout, stderr).

    ``source`` is a path on the minion (saline has no ``salt://`` fileserver). The script is
    copied to a private temporary folder, made executable and run from there with ``args``
    appended, so the original file needs no execute bit. ``python_shell`` defaults to True when
    called as a job (as in Salt), else False.

    CLI Example::

        saline '*' cmd.script /srv/scripts/runme.sh 'arg1 arg2 "arg 3"'
    """
    ctx = maybe_current()
    src = str(source)
    if "://" in src:
        raise CommandExecutionError(f"cmd.script takes a path on the minion, not a URL: '{src}'")
    if python_shell is None:
        python_shell = bool(ctx is not None and ctx.jid)
    if not os.path.isfile(src):
        log.error("cmd.script: the script '%s' does not exist on this minion", src)
        if ctx is not None:
            ctx.retcode = 1
        return {"pid": 0, "retcode": 1, "stdout": "", "stderr": f"Script '{src}' not found", "cache_error": True}
    base = None
    if ctx is not None and ctx.opts.get("cachedir") and os.path.isdir(str(ctx.opts["cachedir"])):
        base = str(ctx.opts["cachedir"])
    workdir = tempfile.mkdtemp(prefix="saline-script-", dir=base)
    try:
        path = os.path.join(workdir, os.path.basename(src) or "script")
        shutil.copyfile(src, path)
        os.chmod(path, 0o700)
        if runas:
            try:
                entry = pwd.getpwnam(str(runas))
            except KeyError:
                raise CommandExecutionError(f"User '{runas}' is not available") from None
            os.chown(workdir, entry.pw_uid, entry.pw_gid)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        extra = "" if args is None else (shlex.join(str(a) for a in args) if isinstance(args, (list, tuple)) else str(args))
        if python_shell:
            command: Any = shlex.quote(path) + (f" {extra}" if extra else "")
        else:
            try:
                command = [path] + shlex.split(extra)
            except ValueError as exc:
                raise CommandExecutionError(f"Unable to split script arguments '{extra}': {exc}") from None
        return _run(command, cwd=cwd, stdin=stdin, shell=shell, python_shell=python_shell, env=env,
                    timeout=timeout, output_loglevel=output_loglevel, ignore_retcode=ignore_retcode,
                    runas=runas, umask=umask)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def which(cmd: str) -> str | None:
    """Return the full path of ``cmd`` found in the PATH, or None.

    CLI Example::

        saline '*' cmd.which cat
    """
    return shutil.which(str(cmd))
