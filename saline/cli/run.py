"""``saline-run FUN [ARG ...] [key=value ...]``: run a master-side function (jobs.*, returners.*,
manage.*), or ``state.event`` to print the master's events live."""

from __future__ import annotations

import argparse
import json
import sys

from saline.cli.common import Parser, add_config_args, fail, load_opts


def _runner_list() -> str:
    """The runners, one line each, for ``--help`` (imported only then)."""
    from saline.master.runners import describe

    found = {**describe(), "state.event": _event_stream.__doc__ or ""}
    lines = [f"  {name:<22} {' '.join(found[name].strip().split(chr(10) * 2)[0].split())}" for name in sorted(found)]
    return "\n".join(["runners:", *lines])


def main(argv: list[str] | None = None) -> None:
    wants_help = any(a in ("-h", "--help") for a in (sys.argv[1:] if argv is None else argv))
    parser = Parser(prog="saline-run", description="Run a function on the master (Salt's salt-run).",
                    epilog=_runner_list() if wants_help else None, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--out", "--output", dest="out", default=None,
                        help="the outputter: nested (default), json, yaml, txt, raw, table")
    parser.add_argument("--no-color", dest="no_color", action="store_true", help="no colours in the output")
    parser.add_argument("fun", help="the runner function, e.g. jobs.lookup_jid (the list is below)")
    parser.add_argument("arg", nargs="*", metavar="ARG",
                        help="its arguments: positional values, then key=value keyword arguments")
    args = parser.parse_intermixed_args(argv)
    opts = load_opts("master", args)

    from saline.client import JobError, LocalClient
    from saline.modules.args import parse_cli_args, split_args
    from saline.transport.local import MasterUnreachable

    client = LocalClient(opts["sock_dir"])
    positional, kwargs = split_args(parse_cli_args(args.arg))
    try:
        if args.fun == "state.event":
            _event_stream(client, kwargs)
            return
        data = client.runner(args.fun, positional, kwargs)
    except MasterUnreachable as exc:
        fail(str(exc))
    except JobError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise SystemExit(130)
    from saline.output import render

    print(render(data, args.out or "nested", static=True, color=sys.stdout.isatty() and not args.no_color), flush=True)


def _event_stream(client, kwargs: dict) -> None:
    """Print the master's events live, tag<TAB>json each (pretty=True, tagmatch=GLOB, count=N).

    Salt's ``state.event``: ``pretty=True`` indents the data; ``tagmatch`` filters by glob;
    ``count`` stops after that many."""
    import fnmatch

    pretty = bool(kwargs.get("pretty"))
    tagmatch = str(kwargs.get("tagmatch") or "*")
    count = int(kwargs.get("count") or -1)
    seen = 0
    for event in client.events():
        if not fnmatch.fnmatch(event["tag"], tagmatch):
            continue
        body = json.dumps(event["data"], indent=4 if pretty else None, sort_keys=pretty, default=str)
        print(f"{event['tag']}\t{body}", flush=True)
        seen += 1
        if 0 < count <= seen:
            return


if __name__ == "__main__":
    main()
