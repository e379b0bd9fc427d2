"""``saline-call [--local] FUN [ARG ...]``: run an execution function here, without a master.

With ``--return NAME[,NAME]`` the return also goes to those returners, configured from the
minion's config (Salt's ``salt-call --return``), and a failure to deliver is reported.
"""

from __future__ import annotations

import argparse
import sys

from saline.cli.common import Parser, add_config_args, fail, load_opts


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="saline-call", description="Run an execution function on this machine.")
    add_config_args(parser)
    parser.add_argument("--local", action="store_true", help="run without a master (the only mode for now)")
    parser.add_argument("--out", "--output", dest="out", default=None,
                        help="the outputter: nested (default), json, yaml, txt, raw, table")
    parser.add_argument("--return", dest="ret", default="", help="also send the return to these returners, comma separated")
    parser.add_argument("--return_config", "--return-config", dest="ret_config", default=None, metavar="PROFILE",
                        help="read the returners' options under PROFILE.<returner>.<option>")
    parser.add_argument("--retcode-passthrough", action="store_true", help="exit with the function's retcode")
    parser.add_argument("--no-color", dest="no_color", action="store_true", help="no colours in the output")
    parser.add_argument("fun", help="the function to run, module.function (test.ping)")
    parser.add_argument("arg", nargs="*", metavar="ARG",
                        help="arguments of the function: positional values, then key=value keyword arguments")
    args = parser.parse_intermixed_args(argv)
    opts = load_opts("minion", args)

    from saline.jid import gen_jid
    from saline.modules.args import parse_cli_args
    from saline.modules.context import ExecContext, use
    from saline.modules.grains import core_grains
    from saline.modules.loader import execute, load_functions
    from saline.output import render

    functions = load_functions(opts)
    ctx = ExecContext(opts=opts, grains=core_grains(opts), jid=gen_jid(), functions=functions)
    arg = parse_cli_args(args.arg)
    with use(ctx):
        result = execute(functions, args.fun, arg, ctx)
    print(render({"local": result["return"]}, args.out or result.get("out") or "nested",
                 color=sys.stdout.isatty() and not args.no_color), flush=True)
    if args.ret:
        _send_to_returners(opts, args, {"id": opts["id"], "jid": ctx.jid, "fun": args.fun, "fun_args": arg, **result})
    if args.retcode_passthrough:
        raise SystemExit(result["retcode"])
    if result["retcode"]:
        raise SystemExit(1)


def _send_to_returners(opts: dict, args: argparse.Namespace, ret: dict) -> None:
    from saline.config import ConfigError, returner_names
    from saline.returners import registry
    from saline.returners.base import ReturnerError

    for name in returner_names(args.ret):
        try:
            returner = registry.create(name, opts, args.ret_config)
            try:
                returner.returns([ret])
            finally:
                returner.close()
        except (ConfigError, ReturnerError) as exc:
            fail(f"the return was not stored by {name}: {exc}", 1)


if __name__ == "__main__":
    main()
