"""``saline-master``: run the master in the foreground or, with ``-d``, as a daemon."""

from __future__ import annotations

import argparse

from saline.cli.common import Parser, add_config_args, fail, load_opts, raise_open_files, run_daemon


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="saline-master", description="The saline master: publishes jobs, collects returns and "
                    "delivers them to the returners.")
    add_config_args(parser)
    parser.add_argument("-d", "--daemon", action="store_true",
                        help="run in the background; the command exits non-zero with the cause if the master "
                             "cannot start")
    parser.add_argument("--pid-file", default=None, help="write the process id here (default: the config's pidfile)")
    args = parser.parse_args(argv)
    opts = load_opts("master", args, {"pidfile": args.pid_file} if args.pid_file else None)

    def make():  # imported here so a bad config fails before the heavy imports
        from saline.config import ConfigError
        from saline.master.daemon import Master
        from saline.master.outbox import OutboxError

        try:
            return Master(opts)
        except (ConfigError, OutboxError) as exc:
            fail(str(exc))

    raise_open_files(100_000)  # two sockets per connected minion (Salt's max_open_files: 100000)
    run_daemon("saline-master", make, opts, args)


if __name__ == "__main__":
    main()
