"""What a saline cluster may do on NATS: its permissions, and an account block for nats-server.

One NATS *account* per ``cluster_id`` is the isolation boundary: accounts see nothing of one
another. Within an account a user allowed to create streams could give one any subjects, so the
permissions below are defence in depth, not the boundary. They allow exactly what the masters and
``saline-deliver`` workers of one cluster use: the cluster's core subjects ``saline.<id>.>``, the
JetStream API of its own streams and of its KV buckets' streams ``KV_<bucket>`` (subject
permissions match whole tokens, so every stream is named), the acks and flow control of their
consumers, replies on the cluster's own inbox prefix ``_INBOX_<id>`` (with the shared ``_INBOX.>``
any user could read the others' fetches and KV gets), and the advisories of records that reached
their delivery limit or were terminated.

    python -m saline.cluster.account prod [--user NAME]   # an account block to paste into nats-server.conf
"""

from __future__ import annotations

import argparse
import json
import secrets
from typing import Iterable

from saline.cluster.config import ClusterConfig


def permissions(cluster_id: str, streams: Iterable[str] | None = None,
                buckets: Iterable[str] | None = None) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """(publish allow-list, subscribe allow-list, inbox prefix) for the masters and workers of
    ``cluster_id`` (its own streams and buckets unless others are given)."""
    names = ClusterConfig(cluster_id=cluster_id, servers=())
    streams = list(names.streams() if streams is None else streams)
    buckets = list(names.buckets() if buckets is None else buckets)
    inbox = names.inbox_prefix
    pub = [f"saline.{cluster_id}.>", f"{inbox}.>", "$JS.API.INFO"]
    for s in [*streams, *(f"KV_{b}" for b in buckets)]:
        pub += [
            f"$JS.API.STREAM.CREATE.{s}", f"$JS.API.STREAM.UPDATE.{s}", f"$JS.API.STREAM.INFO.{s}",
            f"$JS.API.STREAM.DELETE.{s}", f"$JS.API.STREAM.PURGE.{s}", f"$JS.API.STREAM.MSG.GET.{s}",
            f"$JS.API.STREAM.MSG.DELETE.{s}", f"$JS.API.DIRECT.GET.{s}", f"$JS.API.DIRECT.GET.{s}.>",
            f"$JS.API.CONSUMER.CREATE.{s}", f"$JS.API.CONSUMER.CREATE.{s}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{s}.*", f"$JS.API.CONSUMER.INFO.{s}.*",
            f"$JS.API.CONSUMER.DELETE.{s}.*", f"$JS.API.CONSUMER.MSG.NEXT.{s}.*",
            f"$JS.API.CONSUMER.NAMES.{s}", f"$JS.API.CONSUMER.LIST.{s}",
            f"$JS.ACK.{s}.>", f"$JS.FC.{s}.>",
        ]
    pub += [f"$KV.{b}.>" for b in buckets]
    sub = [f"saline.{cluster_id}.>", f"{inbox}.>"]
    for s in streams:
        sub += [f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{s}.*", f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{s}.*"]
    return tuple(pub), tuple(sub), inbox


def account_block(cluster_id: str, user: str, password: str) -> str:
    """The ``accounts { ... }`` entry of one saline cluster, for nats-server.conf."""
    pub, sub, _inbox = permissions(cluster_id)
    perms = {"publish": {"allow": list(pub)}, "subscribe": {"allow": list(sub)}}
    return (f"SALINE_{cluster_id}: {{\n  jetstream: enabled\n  users: [\n"
            f"    {{ user: {json.dumps(user)}, password: {json.dumps(password)},\n"
            f"      permissions: {json.dumps(perms, indent=8)} }}\n  ]\n}}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m saline.cluster.account",
                                     description="Print a nats-server account block for one saline cluster.")
    parser.add_argument("cluster_id", help="the masters' cluster_id")
    parser.add_argument("--user", default=None, help="the user name (default: the cluster id)")
    parser.add_argument("--password", default=None, help="its password (default: a new random one)")
    args = parser.parse_args(argv)
    print(account_block(args.cluster_id, args.user or args.cluster_id, args.password or secrets.token_urlsafe(24)))


if __name__ == "__main__":
    main()
