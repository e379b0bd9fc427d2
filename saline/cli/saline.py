"""``saline TARGET FUN [ARG ...] [key=value ...]``: publish a job and print the returns as they come.

Salt's habits: ``-E -L -G -P -C -N -S`` choose the target type, ``-t`` the timeout, ``--out`` the
outputter, ``--static`` one document at the end, ``--async`` prints the jid and exits, ``-b``
runs in batches (a number or a percentage), ``--return`` names returners for this job. Exit status
as Salt 3006: 0 when every minion answered with retcode 0; 1 when one did not answer (each is
listed as "Minion did not return"), failed, or is named by the target but does not exist; 2 when
nothing could be done (no master, no minion matched, a bad request), or, with ``--hide-timeout``,
when no minion answered at all ("No return received").
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from saline.cli.common import Parser, add_config_args, fail

TGT_FLAGS = (("-E", "--pcre", "pcre", "the target is a regular expression on minion ids"),
             ("-L", "--list", "list", "the target is a list of minion ids, comma or space separated"),
             ("-G", "--grain", "grain", "the target is a grain, as key:glob (nested keys with ':')"),
             ("-P", "--grain-pcre", "grain_pcre", "the target is a grain, as key:regular expression"),
             ("-C", "--compound", "compound", "the target is a compound expression (G@os:Debian and web*)"),
             ("-N", "--nodegroup", "nodegroup", "the target is a nodegroup from the master's config"),
             ("-S", "--ipcidr", "ipcidr", "the target is an IP address or CIDR subnet of the minions"))
NO_RETURN = "Minion did not return. [No response]"
NOT_CONNECTED = "Minion did not return. [Not connected]"
#: with -v on a terminal, a job targeting more minions than this shows a progress bar
PROGRESS_OVER = 50


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="saline", description="Run a function on the targeted minions and print their returns.",
        epilog="Exit status: 0 when every targeted minion answered with success; 1 when one did not answer "
               "or failed (retcode not 0); 2 when nothing was run (no minion matched, no master, a bad request).")
    add_config_args(parser)
    group = parser.add_mutually_exclusive_group()
    for short, long, kind, text in TGT_FLAGS:
        group.add_argument(short, long, dest="tgt_type", action="store_const", const=kind, help=text)
    parser.add_argument("-t", "--timeout", type=float, default=None,
                        help="seconds to wait for returns before asking the silent minions (default: the master's timeout)")
    parser.add_argument("--out", "--output", dest="out", default=None,
                        help="the outputter: nested (default), json, yaml, txt, raw, table")
    parser.add_argument("--out-indent", type=int, default=None, help="indentation of the json and nested outputters")
    parser.add_argument("-s", "--static", action="store_true", help="print all returns at the end, as one document")
    parser.add_argument("--async", dest="async_", action="store_true", help="print the jid and exit without waiting")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print the jid, say which minions did not return, and show progress on long fan-outs")
    parser.add_argument("-p", "--progress", action="store_true",
                        help="show a progress bar of minions returned / expected (on a terminal, not with --out json)")
    parser.add_argument("--show-jid", action="store_true", help="print the jid before the returns")
    parser.add_argument("--hide-timeout", action="store_true", help="do not list minions that did not answer")
    parser.add_argument("-b", "--batch-size", "--batch", dest="batch", default=None, help="N or N%% minions at a time")
    parser.add_argument("--return", dest="ret", default="", help="returners for this job, comma separated")
    parser.add_argument("--return_config", "--return-config", dest="ret_config", default=None, metavar="PROFILE",
                        help="read the --return returners' options from the config under PROFILE.<returner>.<option>")
    parser.add_argument("--return_kwargs", "--return-kwargs", dest="ret_kwargs", default=None, metavar="JSON",
                        help="options for the --return returners of this job, as a JSON or YAML map; they "
                             "override the config")
    parser.add_argument("--metadata", default=None, help="YAML/JSON map stored with the job")
    parser.add_argument("--job-timeout", type=float, default=None, help="stop the job on the minion after N seconds")
    parser.add_argument("--no-color", "--no-colour", dest="no_color", action="store_true", help="no colours in the output")
    parser.add_argument("--preview-target", action="store_true", help="list the minions the target reaches")
    parser.add_argument("target", help="which minions: a glob on minion ids unless a flag above says otherwise")
    parser.add_argument("fun", help="the function to run, module.function (test.ping), or several, comma separated")
    parser.add_argument("arg", nargs="*", metavar="ARG",
                        help="arguments of the function: positional values, then key=value keyword arguments")
    return parser


def _yaml_map(text: str | None, flag: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        import yaml

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            fail(f"{flag}: not valid YAML or JSON: {text!r}")
    if not isinstance(value, dict):
        fail(f"{flag} must be a map, got {text!r}")
    return value


def _batch_size(spec: str, total: int) -> int:
    try:
        if spec.endswith("%"):
            return max(1, int(total * float(spec[:-1]) / 100))
        size = int(spec)
    except ValueError:
        fail(f"--batch-size must be a number or a percentage, got {spec!r}")
    if size < 1:
        fail("--batch-size must be at least 1")
    return size


class Printer:
    def __init__(self, out: str | None, static: bool, color: bool, indent: int | None) -> None:
        self.out, self.static, self.color, self.indent = out, static, color, indent
        self.collected: dict[str, Any] = {}

    def show(self, mid: str, value: Any, minion_out: str | None = None) -> None:
        if self.static:
            self.collected[mid] = value
            return
        from saline.output import render

        text = render({mid: value}, self.out or minion_out or "nested", color=self.color,
                      **({"indent": self.indent} if self.indent is not None else {}))
        if text:
            print(text, flush=True)

    def finish(self) -> None:
        if self.static and self.collected:
            from saline.output import render

            print(render(self.collected, self.out or "nested", static=True, color=self.color), flush=True)


def _retcode_of(data: dict[str, Any]) -> int:
    rc = data.get("retcode", 0)
    if isinstance(rc, dict):
        rc = max([v for v in rc.values() if isinstance(v, int)] or [0])
    if not isinstance(rc, int) or isinstance(rc, bool):
        rc = 1
    if rc == 0 and data.get("return") is False:
        rc = 1
    return rc


class Progress:
    """Salt's ``--progress``: a bar of minions returned / expected, on stderr (rich), only on a
    terminal and never with ``--out json``; ``-v`` shows it by itself past PROGRESS_OVER minions."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.asked = bool(args.progress)
        self.verbose = bool(args.verbose)
        self.allowed = sys.stdout.isatty() and sys.stderr.isatty() and (args.out or "") != "json"
        self.bar: Any = None
        self.task: Any = None

    def start(self, expected: int) -> None:
        if not self.allowed or not (self.asked or (self.verbose and expected > PROGRESS_OVER)):
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

        self.bar = Bar(TextColumn("returns"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=Console(stderr=True), transient=True)
        self.task = self.bar.add_task("returns", total=expected)
        self.bar.start()

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def run_job(client: Any, args: argparse.Namespace, tgt: Any, tgt_type: str, arg: list[Any],
            extra: dict[str, Any], printer: Printer) -> tuple[int, int]:
    """Publish one job and print its returns; (worst retcode, number of returns).

    As Salt does, a minion the target names that does not exist (``-L web1,typo``), one with no
    connection to the master and one that stayed silent are each listed as not having returned,
    and make the exit status 1."""
    from saline.client import JobError

    worst, count = 0, 0
    named_missing: list[str] = []
    progress = Progress(args)
    try:
        for message in client.cmd_iter(tgt, args.fun, arg, tgt_type=tgt_type, ret=args.ret,
                                       timeout=args.timeout, **extra):
            cmd = message["cmd"]
            if cmd == "published":
                if not message["minions"]:
                    fail("No minions matched the target. No command was sent, no jid was assigned.", 2)
                if args.verbose or args.show_jid:
                    print(f"Executing job with jid {message['jid']}", flush=True)
                    if args.verbose:
                        print("-" * 67, flush=True)
                jid = message["jid"]
                named_missing = list(message.get("missing") or [])
                progress.start(len(message["minions"]))
            elif cmd == "return":
                data = message["data"]
                count += 1
                worst = max(worst, _retcode_of(data))
                progress.advance()
                printer.show(message["id"], data.get("return"), data.get("out"))
            elif cmd in ("done", "timeout"):
                progress.stop()
                not_connected = set(message.get("not_connected") or [])
                missing = sorted(set(message.get("missing") or []) | set(named_missing))
                if missing:
                    worst = max(worst, 1)
                    if not args.hide_timeout:
                        for mid in missing:
                            printer.show(mid, NOT_CONNECTED if mid in not_connected else NO_RETURN)
                    if args.verbose:
                        print(f"\nThe following minions did not return: {', '.join(missing)}\n"
                              f"Use saline-run jobs.lookup_jid {jid} to see later returns.", file=sys.stderr)
    except JobError as exc:
        fail(str(exc))
    finally:
        progress.stop()
    return worst, count


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_intermixed_args(argv)
    from saline.cli.common import load_opts
    from saline.client import JobError, LocalClient
    from saline.modules.args import parse_cli_args
    from saline.transport.local import MasterUnreachable

    opts = load_opts("master", args)
    tgt_type = args.tgt_type or "glob"
    tgt: Any = args.target
    arg = parse_cli_args(args.arg)
    extra = {"ret_config": args.ret_config, "ret_kwargs": _yaml_map(args.ret_kwargs, "--return_kwargs"),
             "metadata": _yaml_map(args.metadata, "--metadata"), "job_timeout": args.job_timeout,
             "user": _user()}
    client = LocalClient(opts["sock_dir"])
    color = sys.stdout.isatty() and not args.no_color
    printer = Printer(args.out, args.static, color, args.out_indent)
    try:
        if args.preview_target:
            for mid in client.expected(tgt, tgt_type):
                print(f"- {mid}")
            return
        if args.async_:
            published = client.publish(tgt, args.fun, arg, tgt_type=tgt_type, ret=args.ret, **extra)
            if not published["minions"]:
                fail("No minions matched the target. No command was sent, no jid was assigned.", 2)
            print(f"Executed command with job ID: {published['jid']}")
            return
        if args.batch:
            worst, count = _run_batches(client, args, tgt, tgt_type, arg, extra, printer)
        else:
            worst, count = run_job(client, args, tgt, tgt_type, arg, extra, printer)
        printer.finish()
    except MasterUnreachable as exc:
        fail(str(exc))
    except JobError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; the job goes on: saline-run jobs.active", 130)
    if count == 0 and worst and args.hide_timeout:
        fail("No return received", 2)  # Salt's: nothing at all was printed
    if worst:
        print("ERROR: Minions returned with non-zero exit code", file=sys.stderr)
        raise SystemExit(1)


def _run_batches(client: Any, args: argparse.Namespace, tgt: Any, tgt_type: str, arg: list[Any],
                 extra: dict[str, Any], printer: Printer) -> tuple[int, int]:
    minions = client.expected(tgt, tgt_type)
    if not minions:
        fail("No minions matched the target. No command was sent, no jid was assigned.", 2)
    size = _batch_size(args.batch, len(minions))
    worst, count = 0, 0
    for start in range(0, len(minions), size):
        chunk = minions[start:start + size]
        if sys.stderr.isatty() or args.verbose:
            print(f"\nExecuting run on {chunk}\n", file=sys.stderr, flush=True)
        rc, n = run_job(client, args, chunk, "list", arg, extra, printer)
        worst, count = max(worst, rc), count + n
    return worst, count


def _user() -> str:
    import getpass
    import os

    name = getpass.getuser()
    sudo = os.environ.get("SUDO_USER")
    return f"sudo_{sudo}" if sudo and name == "root" else name


if __name__ == "__main__":
    main()
