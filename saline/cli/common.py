"""What every command shares: config options, logging, one-line errors, daemon plumbing."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

LEVELS = {"all": 1, "garbage": 1, "trace": 5, "debug": logging.DEBUG, "info": logging.INFO,
          "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL, "quiet": 100}


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line naming the cause and exit; never a traceback."""
    print(f"ERROR: {message}", file=sys.stderr)
    raise SystemExit(code)


def add_config_args(parser: argparse.ArgumentParser, short_log_flag: bool = True) -> None:
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


def daemonize() -> None:
    """Detach from the terminal (double fork), keeping the working directory."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


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
    """Build the daemon object, then run its loop until SIGTERM/SIGINT."""
    import asyncio

    if getattr(args, "daemon", False):
        daemonize()
    setup_logging(opts, args.log_level, args.log_file, daemon=getattr(args, "daemon", False))
    remove_pid = write_pidfile(opts.get("pidfile"))
    try:
        daemon = make()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, daemon.request_stop)
            await daemon.run()

        asyncio.run(main())
    except OSError as exc:
        fail(f"{name}: {exc.strerror or exc}" + (f": {exc.filename}" if getattr(exc, "filename", None) else ""))
    finally:
        remove_pid()
