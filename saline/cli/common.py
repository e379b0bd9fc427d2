"""What every command shares: config options, logging, one-line errors, daemon plumbing."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

from saline import gc_tuning

LEVELS = {"all": 1, "garbage": 1, "trace": 5, "debug": logging.DEBUG, "info": logging.INFO,
          "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL, "quiet": 100}


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line naming the cause and exit; never a traceback."""
    print(f"ERROR: {message}", file=sys.stderr)
    raise SystemExit(code)


#: the client libraries ``--versions-report`` lists (distribution names), as Salt's "Dependency Versions"
REPORTED = ("pyzmq", "msgpack", "PyYAML", "rich", "PyMySQL", "mysqlclient", "psycopg", "redis", "pyodbc",
            "pymemcache", "influxdb", "httpx", "opensearch-py", "kafka-python", "Jinja2", "slixmpp", "slack_sdk",
            "requests", "twilio", "sentry-sdk", "Django", "pymongo", "nats-py", "aiohttp", "prometheus_client",
            "psutil")


class Parser(argparse.ArgumentParser):
    """argparse, except that an optional positional (``ARG ...``) is never reported as required
    (``parse_intermixed_args`` lists it along with the ones that are)."""

    def error(self, message: str) -> NoReturn:
        lead = "the following arguments are required: "
        if message.startswith(lead):
            optional = {a.metavar or a.dest for a in self._actions if not a.option_strings and a.nargs in ("*", "?")}
            message = lead + ", ".join(n for n in message[len(lead):].split(", ") if n not in optional)
        super().error(message)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("saline")
    except PackageNotFoundError:
        return "unknown (not installed)"


def versions_report() -> str:
    """Salt's ``--versions-report``: saline, Python, pyzmq/libzmq, and each client library."""
    import platform
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    lines = ["Saline Version:", f"{'saline':>20}: {version()}", "", "Python Version:",
             f"{'Python':>20}: {platform.python_version()} ({platform.python_implementation()})", "",
             "Dependency Versions:"]
    try:
        import zmq

        lines.append(f"{'libzmq':>20}: {zmq.zmq_version()}")
    except ImportError:
        lines.append(f"{'libzmq':>20}: Not Installed")
    for name in sorted(REPORTED, key=str.lower):
        try:
            found = dist_version(name)
        except PackageNotFoundError:
            found = "Not Installed"
        lines.append(f"{name:>20}: {found}")
    lines += ["", "System Versions:", f"{'system':>20}: {platform.system()} {platform.release()}",
              f"{'machine':>20}: {platform.machine()}"]
    return "\n".join(lines)


class _Version(argparse.Action):
    """``--version``, looked up only when asked for (package metadata is slow to import)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog} {version()}")
        parser.exit()


class _VersionsReport(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(versions_report())
        parser.exit()


def add_config_args(parser: argparse.ArgumentParser, short_log_flag: bool = True) -> None:
    """The options every command has: the config folder, logging, ``--version`` and
    ``--versions-report``."""
    parser.add_argument("--version", nargs=0, action=_Version, help="print the version and exit")
    parser.add_argument("--versions-report", "--versions", nargs=0, action=_VersionsReport,
                        help="print the versions of saline, Python, libzmq and every client library, and exit")
    parser.add_argument("-c", "--config-dir", default=None,
                        help="configuration folder (default $SALINE_CONFIG_DIR or /etc/saline)")
    flags = ("-l", "--log-level") if short_log_flag else ("--log-level",)
    parser.add_argument(*flags, default=None, choices=sorted(LEVELS), help="console log level")
    parser.add_argument("--log-file", default=None, help="log file")


def load_opts(role: str, args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    from saline.config import ConfigError, load_config

    try:
        return load_config(role, args.config_dir, overrides)
    except ConfigError as exc:
        fail(str(exc))


def setup_logging(opts: dict[str, Any], console_level: str | None, log_file: str | None = None,
                  daemon: bool = False) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    level = LEVELS.get((console_level or opts.get("log_level") or "warning").lower(), logging.WARNING)
    fmt = logging.Formatter("%(asctime)s [%(name)s][%(levelname)s] %(message)s")
    if not daemon:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("[%(levelname)-8s] %(message)s"))
        console.setLevel(level)
        root.addHandler(console)
    path = log_file or opts.get("log_file")
    file_level = LEVELS.get(str(opts.get("log_level_logfile") or opts.get("log_level") or "warning").lower(), logging.WARNING)
    if path:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path)
            handler.setFormatter(fmt)
            handler.setLevel(file_level)
            root.addHandler(handler)
            level = min(level, file_level)
        except OSError as exc:
            print(f"WARNING: cannot write the log file {path}: {exc.strerror}", file=sys.stderr)
    root.setLevel(level)


def import_asyncio_without_ssl() -> None:
    """Import asyncio without OpenSSL: ``import asyncio`` loads ``ssl`` (4.5 MB resident, a seventh of
    an idle minion) only for TLS streams, which a minion never opens (its transport is ZeroMQ with
    CURVE). ``ssl`` stays importable: whatever needs it later (a minion-side returner over TLS) gets it."""
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # import ssl -> ImportError, which asyncio handles
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]


def raise_open_files(wanted: int) -> int:
    """Raise the open-files limit towards ``wanted`` (past the hard limit where allowed, as root);
    every connected minion costs the master two sockets and a swarm minion several. The limit now."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    for limits in ((wanted, max(hard, wanted)), (min(hard, wanted), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            return limits[0]
        except (ValueError, OSError):
            continue
    return soft


_READY = b"\x00saline-ready\n"


class _StartReport:
    """The daemon's side of ``-d``: until the daemon is up, its stderr goes to the command that
    started it, which prints what came and exits 0 when :meth:`ready` is called, or non-zero when
    the daemon ends first (a bad key, a port in use, ...). Afterwards stderr is /dev/null and
    errors go to the log file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.handler: logging.Handler | None = None

    def show_warnings(self) -> None:
        """Until ready, warnings and errors also go to the starting command's terminal."""
        if self.fd < 0:
            return
        self.handler = logging.StreamHandler(sys.stderr)
        self.handler.setFormatter(logging.Formatter("[%(levelname)-8s] %(message)s"))
        self.handler.setLevel(logging.WARNING)
        logging.getLogger().addHandler(self.handler)

    def ready(self) -> None:
        if self.fd < 0:
            return
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)
            self.handler = None
        try:
            os.write(2, _READY)
        except OSError:
            pass
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 2)
        os.close(devnull)
        os.close(self.fd)
        self.fd = -1


def daemonize() -> _StartReport:
    """Detach from the terminal (double fork), keeping the working directory. The starting
    process waits for the daemon's report and exits with 0 (started) or 1 (it printed why not)."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        data = b""
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            data += chunk
        started = data.endswith(_READY)
        text = (data[:-len(_READY)] if started else data).decode(errors="replace")
        if text:
            sys.stderr.write(text if text.endswith("\n") else text + "\n")
        if not started and not text:
            sys.stderr.write("ERROR: the daemon exited before it was ready (see its log file)\n")
        os._exit(0 if started else 1)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    os.dup2(write_end, 2)  # what the daemon says until it is ready reaches the starting command
    os.close(devnull)
    return _StartReport(write_end)


def write_pidfile(path: str | None) -> Callable[[], None]:
    if not path:
        return lambda: None
    pid_path = Path(path)
    try:
        pid_path.parent.mkdir(parents=True, exist_ok=True)
        pid_path.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        fail(f"cannot write the pid file {pid_path}: {exc.strerror}")

    def remove() -> None:
        try:
            if pid_path.read_text().strip() == str(os.getpid()):
                pid_path.unlink()
        except OSError:
            pass
    return remove


def run_daemon(name: str, make: Callable[[], Any], opts: dict[str, Any], args: argparse.Namespace) -> None:
    """Build the daemon object, then run its loop until SIGTERM/SIGINT. Every file it creates is
    private to its user (umask 077). The daemon object may set ``exit_code`` to end with it."""
    import asyncio

    detached = bool(getattr(args, "daemon", False))
    report = daemonize() if detached else _StartReport(-1)
    os.umask(0o077)
    setup_logging(opts, args.log_level, args.log_file, daemon=detached)
    report.show_warnings()
    log = logging.getLogger("saline")
    remove_pid = write_pidfile(opts.get("pidfile"))
    daemon: Any = None
    try:
        daemon = make()
        daemon.ready = report.ready

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, daemon.request_stop)
            gc_tuning.settle()
            await daemon.run()

        asyncio.run(main())
    except OSError as exc:
        message = f"{name}: {exc.strerror or exc}" + (f": {exc.filename}" if getattr(exc, "filename", None) else "")
        if report.fd < 0:  # already detached: the log file is where it can be read
            log.error("%s", message)
        fail(message)
    except Exception as exc:  # after detaching there is no terminal: the cause goes to the log
        log.error("%s stopped on an error: %s: %s", name, type(exc).__name__, exc)
        log.debug("traceback", exc_info=True)
        fail(f"{name}: {type(exc).__name__}: {exc}")
    finally:
        remove_pid()
    code = int(getattr(daemon, "exit_code", 0) or 0)
    if code:
        raise SystemExit(code)
