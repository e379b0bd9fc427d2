"""``saline-api``: Salt's REST API (rest_cherrypy's contract) for a saline master.

Runs as its own process beside the master, as the master's user (it talks to the master through
the master's local socket). Options come from the master config: ``rest_cherrypy:``,
``external_auth``, ``token_expire``, ``netapi_enable_clients`` (see docs/api.md).
"""

from __future__ import annotations

import argparse

from saline.cli.common import add_config_args, daemonize, fail, load_opts, setup_logging, write_pidfile


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="saline-api", description="Salt's REST API for a saline master.")
    add_config_args(parser)
    parser.add_argument("-d", "--daemon", action="store_true", help="run in the background")
    parser.add_argument("--pid-file", default=None, help="pid file (default: none)")
    args = parser.parse_args(argv)
    opts = load_opts("master", args)

    from saline.config import ConfigError

    try:
        from saline.api.options import load

        api_opts = load(opts)
    except ConfigError as exc:
        fail(str(exc))
    try:
        from aiohttp import web

        from saline.api.app import build
    except ImportError as exc:
        fail(f"saline-api needs its extra: pip install 'saline[api]' ({exc.name} is missing)")
    ssl_context = None
    if api_opts.tls:
        import ssl

        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(api_opts.ssl_crt, api_opts.ssl_key)
        except (OSError, ssl.SSLError) as exc:
            fail(f"rest_cherrypy: cannot load ssl_crt/ssl_key: {getattr(exc, 'strerror', None) or exc}")
    if args.daemon:
        daemonize()
    log_file = args.log_file or opts.get("api_logfile") or None
    setup_logging(opts, args.log_level, log_file, daemon=args.daemon)
    remove_pid = write_pidfile(args.pid_file or opts.get("api_pidfile"))
    try:
        app = build(api_opts, str(opts.get("auth.pam.service") or "login"))
        scheme = "https" if ssl_context else "http"
        web.run_app(app, host=api_opts.host, port=api_opts.port, ssl_context=ssl_context, access_log=None,
                    print=lambda _msg: print(f"saline-api listening on {scheme}://{api_opts.host}:{api_opts.port}",
                                             flush=True),
                    handle_signals=True, shutdown_timeout=5.0)  # open event streams end at a stop
    except OSError as exc:
        fail(f"saline-api: cannot listen on {api_opts.host}:{api_opts.port}: {exc.strerror or exc}")
    finally:
        remove_pid()


if __name__ == "__main__":
    main()
