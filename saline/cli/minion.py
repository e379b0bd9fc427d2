"""``saline-minion``: run a minion in the foreground or, with ``-d``, as a daemon."""

from __future__ import annotations

import argparse

from saline.cli.common import Parser, add_config_args, fail, import_asyncio_without_ssl, load_opts, run_daemon


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="saline-minion", description="A saline minion: runs the jobs its master publishes.")
    add_config_args(parser)
    parser.add_argument("-d", "--daemon", action="store_true",
                        help="run in the background; the command exits non-zero with the cause if the minion "
                             "cannot start")
    parser.add_argument("--pid-file", default=None, help="write the process id here (default: the config's pidfile)")
    args = parser.parse_args(argv)
    opts = load_opts("minion", args, {"pidfile": args.pid_file} if args.pid_file else None)
    import_asyncio_without_ssl()

    def make():
        from saline.minion.daemon import Minion, MinionError

        try:
            return Minion(opts)
        except MinionError as exc:
            fail(str(exc))

    run_daemon("saline-minion", make, opts, args)


if __name__ == "__main__":
    main()
