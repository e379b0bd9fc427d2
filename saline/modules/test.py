"""The ``test`` module: functions for checking that minions answer and that jobs work.

Same names and results as Salt's ``test`` module, so habits like ``saline '*' test.ping`` and
``test.arg`` for inspecting argument passing carry over.
"""

from __future__ import annotations

import time
from typing import Any

import saline
from saline.modules.context import current
from saline.modules.errors import JobKilled


def ping() -> bool:
    """Just used to make sure the minion is up and responding. Returns True.

    CLI Example::

        saline '*' test.ping
    """
    return True


def echo(text: Any) -> Any:
    """Return a string - used for testing the connection.

    CLI Example::

        saline '*' test.echo 'foo bar baz quo qux'
    """
    return text


def sleep(length: Any) -> bool:
    """Sleep for ``length`` seconds, then return True; stops early when the job is killed.

    CLI Example::

        saline '*' test.sleep 20
    """
    seconds = float(length)
    if seconds < 0:
        raise ValueError(f"sleep length must not be negative, got {length}")
    ctx = current()
    # Event.wait returns as soon as saltutil.kill_job sets the event, not at the end.
    if ctx.kill_event.wait(seconds):
        raise JobKilled(f"Job {ctx.jid} was killed during test.sleep")
    return True


def version() -> str:
    """Return the version of saline on the minion.

    CLI Example::

        saline '*' test.version
    """
    return saline.__version__


def arg(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return the positional and keyword arguments the function received, to check argument passing.

    CLI Example::

        saline '*' test.arg 1 "two" 3.1 txt="hello" wow='{a: 1, b: "hello"}'
    """
    return {"args": list(args), "kwargs": kwargs}


def kwarg(**kwargs: Any) -> dict[str, Any]:
    """Return the keyword arguments the function received.

    CLI Example::

        saline '*' test.kwarg foo=bar
    """
    return kwargs


def retcode(code: Any = 0) -> Any:
    """Set the job's return code to ``code`` (without failing) and return it, to test retcodes.

    CLI Example::

        saline '*' test.retcode 42
    """
    current().retcode = int(code)
    return code


def exception(message: str = "Test exception") -> None:
    """Raise an exception with ``message``, to test how failures are reported.

    CLI Example::

        saline '*' test.exception "oops"
    """
    raise Exception(message)


def fib(num: Any) -> list[Any]:
    """Return the Fibonacci numbers below ``num`` and the seconds it took to compute them.

    CLI Example::

        saline '*' test.fib 3
    """
    limit = int(num)
    start = time.time()
    numbers = [0]
    a, b = 0, 1
    while b < limit:
        numbers.append(b)
        a, b = b, a + b
        if len(numbers) % 10_000 == 0 and current().kill_event.is_set():
            raise JobKilled(f"Job {current().jid} was killed during test.fib")
    return [numbers, time.time() - start]


def outputter(data: Any) -> Any:
    """Return ``data`` unchanged, to see how an outputter shows it.

    CLI Example::

        saline '*' test.outputter foobar
    """
    return data
