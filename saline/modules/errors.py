"""Exceptions an execution function raises to end its job with a clean one-line error.

They mirror Salt's: ``execute`` turns :class:`CommandExecutionError` into ``ERROR: <msg>`` and
:class:`InvocationError` into ``ERROR executing '<fun>': <msg>``, with retcode 1 and no traceback.
"""

from __future__ import annotations


class CommandExecutionError(Exception):
    """The function could not do its work (bad cwd, command not found, ...)."""


class InvocationError(Exception):
    """The function was called wrongly (invalid keyword arguments, bad values)."""


#: Salt's name, so custom modules written for Salt read naturally
SaltInvocationError = InvocationError


class JobKilled(Exception):
    """The job was stopped by ``saltutil.kill_job`` while the function was running."""
