"""The guard of ``bench/codetree.py``: which saline a benchmark's process really imported.

Every process a benchmark starts under a ``CodeTree`` (master, delivery processes, minions,
swarms, the CLI) has this folder first on ``PYTHONPATH``, so Python imports this module at
start-up, before the process's own code. It imports ``saline`` at once and

- refuses to run (exit 97, one line on stderr) when saline did not come from the folder in
  ``SALINE_BENCH_CODE``: a baseline process silently running the current code would make the
  comparison worthless, so it must fail loudly instead;
- appends one line to ``SALINE_BENCH_CODE_LOG``: its pid, the folder saline came from, its
  command line. The bench reads these lines after each run to show, and check, which code every
  process ran.

Submodules (``saline.cli.master``, ``saline.master.returner_process``, ...) are found through the
package's ``__path__``, so once ``saline`` itself comes from the tree, all of it does. Only
``os`` and ``sys`` are used: nothing here may change what the process imports or costs.
"""

import os
import sys


def _guard() -> None:
    want = os.environ.get("SALINE_BENCH_CODE")
    if not want:
        return
    try:
        with open("/proc/self/cmdline", "rb") as f:
            argv = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        argv = " ".join(sys.argv)
    try:
        import saline

        got = os.path.realpath(os.path.dirname(saline.__file__ or ""))
    except Exception as exc:  # site.py would print and go on: stop here instead
        sys.stderr.write(f"bench: cannot import saline from {want} ({type(exc).__name__}: {exc}); "
                         f"refusing to run: {argv}\n")
        os._exit(97)
    if got != os.path.realpath(want):
        sys.stderr.write(f"bench: this process imported saline from {got}, not from {want} (the code under "
                         f"test); refusing to run: {argv}\n")
        os._exit(97)
    log = os.environ.get("SALINE_BENCH_CODE_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{os.getpid()}\t{got}\t{argv}\n".encode())
        finally:
            os.close(fd)


_guard()
