"""The ``saltutil`` module: the minion's running jobs, stopping them, and reloading modules.

Jobs are threads of the minion, so ``kill_job`` and ``signal_job`` ask the minion (through the
job context) to stop a job: its ``kill_event`` is set and the processes it started are killed.
"""

from __future__ import annotations

import signal as _signal
from typing import Any

from saline.modules.context import current
from saline.modules.errors import InvocationError
from saline.modules.loader import custom_module_files

# Signals whose default action does not end a process: they cannot mean "stop the job".
_NON_STOPPING = {"SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGWINCH"}


def running() -> list[dict[str, Any]]:
    """Return the data of the jobs running on the minion.

    CLI Example::

        saline '*' saltutil.running
    """
    return list(current().running())


def find_job(jid: Any) -> dict[str, Any]:
    """Return the data of the running job with this jid, or ``{}`` when none runs.

    CLI Example::

        saline '*' saltutil.find_job <job id>
    """
    for job in current().running():
        if str(job.get("jid")) == str(jid):
            return job
    return {}


def kill_job(jid: Any) -> bool:
    """Stop the running job with this jid; True when such a job was running.

    CLI Example::

        saline '*' saltutil.kill_job <job id>
    """
    return bool(current().kill(str(jid)))


def term_job(jid: Any) -> bool:
    """Stop the running job with this jid (Salt sends it SIGTERM); True when such a job was running.

    CLI Example::

        saline '*' saltutil.term_job <job id>
    """
    return bool(current().kill(str(jid)))


def _signal_name(sig: Any) -> str:
    text = str(sig).strip().upper()
    try:
        return _signal.Signals(int(text)).name
    except ValueError:
        pass
    name = text if text.startswith("SIG") else "SIG" + text
    if name not in _signal.Signals.__members__:
        raise InvocationError(f"Unknown signal: {sig}")
    return name


def signal_job(jid: Any, signal: Any) -> bool:
    """Stop the running job with this jid by a signal (name like ``SIGTERM``/``TERM`` or number).

    Only signals that end a process are accepted; True when such a job was running.

    CLI Example::

        saline '*' saltutil.signal_job <job id> 15
    """
    name = _signal_name(signal)
    if name in _NON_STOPPING:
        raise InvocationError(f"{name} does not stop a job; use a signal such as SIGTERM or SIGKILL")
    return bool(current().kill(str(jid)))


def sync_modules() -> list[str]:
    """Re-read the ``module_dirs`` folders and return the custom modules found (``modules.<name>``).

    The minion loads its functions again after this job, so new or changed modules take effect.

    CLI Example::

        saline '*' saltutil.sync_modules
    """
    return sorted(f"modules.{path.stem}" for path in custom_module_files(current().opts))


def sync_all() -> dict[str, list[str]]:
    """Re-read everything that can be synced (custom modules) and return what was found, by kind.

    CLI Example::

        saline '*' saltutil.sync_all
    """
    return {"modules": sync_modules()}
