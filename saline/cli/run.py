"""``saline-run FUN [ARG ...] [key=value ...]``: run a master-side function (jobs.*, returners.*,
manage.*), or ``state.event`` to print the master's events live."""

from __future__ import annotations

import argparse
import json
import sys

from saline.cli.common import add_config_args, fail, load_opts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="saline-run", description="Run a function on the master.")
    add_config_args(parser)
    parser.add_argument("--out", "--output", dest="out", default=None)
    parser.add_argument("--no-color", dest="no_color", action="store_true")
    parser.add_argument("fun")
    parser.add_argument("arg", nargs="*")  # options may follow the arguments, as in Salt
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
    """Salt's ``state.event``: ``tag<TAB>json`` per event; ``pretty=True`` indents the data;
    ``tagmatch`` filters by glob; ``count`` stops after that many."""
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
