"""The per-job context that execution functions reach through a :class:`contextvars.ContextVar`.

Salt hands modules their job state through injected dunders (``__opts__``, ``__grains__``,
``__context__``). saline keeps it in one :class:`ExecContext` that the minion builds for each job
and activates with :func:`use`; a module function calls :func:`current` to see it. Each thread
starts with an empty context, so jobs running side by side never see each other's state.
"""

from __future__ import annotations

import contextvars
import logging
import os
import signal
import subprocess
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

log = logging.getLogger(__name__)


@dataclass
class ExecContext:
    """Everything one job may need besides its arguments."""

    #: the minion's configuration (id, cachedir, module_dirs, grains from the config, ...)
    opts: dict
    #: the minion's grains (core grains with the configured ones on top)
    grains: dict
    jid: str | None = None
    #: a function sets this to report failure without raising (Salt's ``__context__["retcode"]``)
    retcode: int = 0
    #: set when ``saltutil.kill_job`` targets this job; long-running functions watch it
    kill_event: threading.Event = field(default_factory=threading.Event)
    #: supplied by the minion: its running jobs, each {"jid","fun","arg","pid","tgt","tgt_type","user"}
    running: Callable[[], list[dict]] = lambda: []
    #: supplied by the minion: ask job ``jid`` to stop; True when such a job was running
    kill: Callable[[str], bool] = lambda jid: False
    #: the subprocess.Popen objects this job started (``cmd.*`` registers them)
    processes: list = field(default_factory=list)
    #: the loaded functions, for ``sys.*`` and cross calls
    functions: dict = field(default_factory=dict)

    def stop(self) -> None:
        """Ask this job to stop: set ``kill_event`` and kill every child process it started.

        ``cmd.*`` starts each child in its own session, so killing the process group also ends
        what the shell started (``sh -c "sleep 30"`` leaves no orphaned ``sleep``).
        """
        self.kill_event.set()
        for proc in list(self.processes):
            kill_process_group(proc)


def kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group led by ``proc`` (or just ``proc`` when it leads none).

    The group is killed even when ``proc`` itself has exited: what it left running in the
    background (``sleep 100 &``) is still in the group and still holds the job's output pipes.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        return
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError as exc:  # gone between poll() and kill()
            log.debug("could not kill pid %s: %s", proc.pid, exc)


_current: contextvars.ContextVar[ExecContext] = contextvars.ContextVar("saline_exec_context")


def current() -> ExecContext:
    """The context of the job running in this thread; RuntimeError outside a job."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("no job context") from None


def maybe_current() -> ExecContext | None:
    """The current job's context, or None outside a job (for helpers usable both ways)."""
    return _current.get(None)


@contextmanager
def use(ctx: ExecContext) -> Iterator[ExecContext]:
    """Make ``ctx`` the current job context for the duration of the ``with`` block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
