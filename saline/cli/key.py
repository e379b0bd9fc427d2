"""``saline-key``: list, accept, reject and delete minion keys (Salt's ``salt-key``).

It edits the master's ``pki_dir`` directly; the running master notices within a second.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys

from saline.cli.common import Parser, add_config_args, fail, load_opts

TITLES = {"minions": "Accepted Keys:", "minions_denied": "Denied Keys:", "minions_pre": "Unaccepted Keys:",
          "minions_rejected": "Rejected Keys:"}
ORDER = ("minions", "minions_denied", "minions_pre", "minions_rejected")
STATE_NAMES = {"acc": "minions", "accepted": "minions", "pre": "minions_pre", "un": "minions_pre",
               "unaccepted": "minions_pre", "pending": "minions_pre", "rej": "minions_rejected",
               "rejected": "minions_rejected", "den": "minions_denied", "denied": "minions_denied"}


def _print_listing(listing: dict[str, list[str]], states: tuple[str, ...], out: str | None) -> None:
    if out == "json":
        print(json.dumps({TITLES[s].rstrip(":").replace(" Keys", "").lower(): listing[s] for s in states}, indent=4))
        return
    for state in states:
        print(TITLES[state])
        for mid in listing[state]:
            print(mid)


def _confirm(action: str, found: dict[str, list[str]], yes: bool) -> None:
    """List the keys about to change under the heading of the state each is in now, and ask;
    exit 1 when the answer is no, or when nothing answers (no terminal, no ``-y``)."""
    print(f"The following keys are going to be {action}:")
    for state in ORDER:
        if found.get(state):
            print(TITLES[state])
            for mid in found[state]:
                print(mid)
    if yes:
        return
    try:
        answer = input("Proceed? [n/Y] ")
    except EOFError:  # no terminal (or nothing piped in) to answer
        print()
        fail("not confirmed (use -y to answer yes); nothing was changed", 1)
    if answer.strip().lower() not in ("", "y", "yes"):
        fail("not confirmed; nothing was changed", 1)


def _move_keys(keys, found: dict[str, list[str]], pattern: str, dst: str, action: str, yes: bool) -> None:
    """Move every key in ``found`` (state -> ids) to ``dst``, after asking."""
    ids = [m for ids in found.values() for m in ids]
    if not ids:
        fail(f"the key glob '{pattern}' does not match any unaccepted keys", 1)
    _confirm(action, found, yes)
    for state, state_ids in found.items():
        for mid in state_ids:
            keys.move(mid, state, dst, refresh=False)  # replaces an older key of that id in dst
            print(f"Key for minion {mid} {action}.")
    keys.refresh(force=True)  # once, not per key: -A over thousands of keys


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="saline-key", description="Manage minion keys on the master (Salt's salt-key).",
                    epilog="Exit status: 0 when done; 1 when nothing matched or the change was not confirmed; "
                           "2 on a bad option or an unreadable key folder.")
    add_config_args(parser, short_log_flag=False)  # -l lists keys, as in salt-key
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-L", "--list-all", action="store_true", help="list every key")
    group.add_argument("-l", "--list", metavar="STATE", help="list keys in one state: acc, pre/un, rej, den, all")
    group.add_argument("-a", "--accept", metavar="ID", help="accept the pending keys matching ID (a glob)")
    group.add_argument("-A", "--accept-all", action="store_true", help="accept every pending key")
    group.add_argument("-r", "--reject", metavar="ID", help="reject the pending keys matching ID")
    group.add_argument("-R", "--reject-all", action="store_true", help="reject every pending key")
    group.add_argument("-d", "--delete", metavar="ID", help="delete the keys matching ID, in any state")
    group.add_argument("-D", "--delete-all", action="store_true", help="delete every key, in any state")
    group.add_argument("-f", "--finger", metavar="ID", help="print the fingerprints of the keys matching ID")
    group.add_argument("-F", "--finger-all", action="store_true",
                       help="print the fingerprints of every key and of the master's own key; '-F master' prints "
                            "only the master's (what a minion's master_finger pins)")
    parser.add_argument("-y", "--yes", action="store_true", help="answer yes to every question")
    parser.add_argument("--include-rejected", action="store_true", help="-a/-A also accept rejected keys")
    parser.add_argument("--include-accepted", action="store_true", help="-r/-R also reject accepted keys")
    parser.add_argument("--out", default=None, choices=["json", "txt"], help="the listing as JSON or plain text")
    parser.add_argument("which", nargs="?", metavar="master",
                        help="with -F: 'master' prints only the master's own key fingerprint, as salt-key -F master")
    args = parser.parse_args(argv)
    if args.which is not None and not (args.finger_all and args.which == "master"):
        parser.error(f"unexpected argument {args.which!r} (only '-F master' takes one)")
    opts = load_opts("master", args)

    from saline.transport.keys import ACCEPTED, PENDING, REJECTED, STATES, KeyStore, fingerprint

    try:
        keys = KeyStore(opts["pki_dir"])
    except OSError as exc:
        fail(f"cannot open the key folder {opts['pki_dir']}: {exc.strerror}")
    listing = keys.listing()

    def matching(states: tuple[str, ...], pattern: str) -> dict[str, list[str]]:
        return {s: [m for m in listing[s] if fnmatch.fnmatch(m, pattern)] for s in states}

    if args.list:
        name = args.list.lower()
        if name == "all":
            _print_listing(listing, ORDER, args.out)
        elif name in STATE_NAMES:
            _print_listing(listing, (STATE_NAMES[name],), args.out)
        else:
            fail(f"unknown key state '{args.list}' (use acc, pre, rej, den or all)")
        return
    if args.accept or args.accept_all:
        sources = (PENDING, REJECTED) if args.include_rejected else (PENDING,)
        _move_keys(keys, matching(sources, args.accept or "*"), args.accept or "*", ACCEPTED, "accepted", args.yes)
        return
    if args.reject or args.reject_all:
        sources = (PENDING, ACCEPTED) if args.include_accepted else (PENDING,)
        _move_keys(keys, matching(sources, args.reject or "*"), args.reject or "*", REJECTED, "rejected", args.yes)
        return
    if args.delete or args.delete_all:
        found = matching(STATES, args.delete or "*")
        ids = sorted({m for s in STATES for m in found[s]})
        if not ids:
            fail(f"the key glob '{args.delete or '*'}' does not match any keys", 1)
        _confirm("deleted", found, args.yes)
        for mid in ids:
            keys.delete(mid, refresh=False)
            print(f"Key for minion {mid} deleted.")
        keys.refresh(force=True)
        return
    if args.finger or args.finger_all:
        if args.which != "master":
            found = matching(STATES, args.finger or "*")
            for state in ORDER:
                if found[state]:
                    print(TITLES[state])
                    for mid in found[state]:
                        print(f"{mid}:  {fingerprint(keys.key_of(state, mid) or '')}")
        if args.finger and not fnmatch.fnmatch("master.pub", args.finger):
            return
        from pathlib import Path

        pub = Path(opts["pki_dir"]) / "master.pub"
        if not pub.exists():
            fail(f"the master has no key yet ({pub} does not exist: start saline-master once)", 1)
        print("Local Keys:")
        print(f"master.pub:  {fingerprint(pub.read_text().strip())}")
        return
    _print_listing(listing, ORDER, args.out)


if __name__ == "__main__":
    main()
