"""The cluster's options, and every NATS name derived from the cluster id.

All masters (and ``saline-deliver`` workers) of one saline cluster share a ``cluster_id``; every
stream, KV bucket and subject they use carries it, so two clusters can share one NATS system, and
NATS permissions (one account per cluster id is the isolation boundary: see docs/scale-out.md)
can be written from this list alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

#: JetStream's duplicate window on the records stream (at most the stream's age limit)
DUPLICATE_WINDOW = 300.0
#: the largest record (a Salt return can be big; a NATS server's max_payload must allow it)
MAX_RECORD = 8 * 1024 * 1024


class ClusterError(Exception):
    """The cluster cannot be joined or used; the message is one line."""


@dataclass(frozen=True)
class ClusterConfig:
    cluster_id: str
    servers: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    nkey_seed: str | None = None
    creds: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    replicas: int = 3
    connect_timeout: float = 5.0
    #: how long a master or worker starting waits for JetStream to answer (a cluster forming)
    setup_timeout: float = 60.0
    name: str = field(default="saline", compare=False)

    # -- names -------------------------------------------------------------------------------
    @property
    def stream(self) -> str:
        """The records (returns, loads, events): the outbox and the ``nats`` job cache."""
        return f"SALINE_{self.cluster_id}"

    @property
    def dead_stream(self) -> str:
        """Dead letters, by returner."""
        return f"SALINE_{self.cluster_id}_DEAD"

    @property
    def prefix(self) -> str:
        return f"saline.{self.cluster_id}"

    @property
    def records_subject(self) -> str:
        return f"{self.prefix}.rec.>"

    @property
    def dead_subject(self) -> str:
        return f"{self.prefix}.dead.>"

    @property
    def jobs_subject(self) -> str:
        """Jobs one master published, for the others to send to their minions."""
        return f"{self.prefix}.job"

    @property
    def inbox_prefix(self) -> str:
        """Replies on a prefix of the cluster's own: no other cluster may read them."""
        return f"_INBOX_{self.cluster_id}"

    def bucket(self, what: str) -> str:
        """KV buckets: ``keys``, ``jobs``, ``routes``, ``stats``, ``masters``, ``presence``."""
        return f"saline_{self.cluster_id}_{what}"

    BUCKETS = ("keys", "jobs", "routes", "stats", "masters", "presence")

    def records_stream(self, keep_seconds: float) -> dict[str, Any]:
        """The records stream's settings (``add_stream`` keywords), wherever it is created:
        replicated, on file, ``keep_jobs`` as its age limit, records up to 8 MiB, and a duplicate
        window (a resent return within it is stored once) no longer than that age limit."""
        from nats.js import api

        params: dict[str, Any] = {"name": self.stream, "subjects": [self.records_subject],
                                  "num_replicas": self.replicas, "storage": api.StorageType.FILE,
                                  "duplicate_window": DUPLICATE_WINDOW, "max_msg_size": MAX_RECORD}
        if keep_seconds > 0:
            params["max_age"] = float(keep_seconds)
            params["duplicate_window"] = min(DUPLICATE_WINDOW, float(keep_seconds))
        return params

    def streams(self) -> list[str]:
        """Every stream the cluster uses (its KV buckets are the streams ``KV_<bucket>``)."""
        return [self.stream, self.dead_stream]

    def buckets(self) -> list[str]:
        return [self.bucket(b) for b in self.BUCKETS]


def escape_token(text: str) -> str:
    """``text`` as one subject token: no ``.``, ``*``, ``>`` or white space (minion ids may hold dots)."""
    out = []
    for ch in text:
        if ch in ".*>%" or ch.isspace() or not ch.isprintable():
            out.append(f"%{ord(ch):02X}" if ord(ch) < 256 else f"%u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out) or "%00"


def unescape_token(token: str) -> str:
    def repl(m: re.Match[str]) -> str:
        return chr(int(m.group(1) or m.group(2), 16))
    return re.sub(r"%u([0-9A-F]{4})|%([0-9A-F]{2})", repl, token)


def from_opts(opts: Mapping[str, Any]) -> ClusterConfig | None:
    """The cluster the master (or worker) belongs to; None when ``nats_servers`` is not set (a
    single master with its SQLite outbox). ClusterError naming the option when one is wrong."""
    servers = opts.get("nats_servers")
    if not servers:
        return None
    if isinstance(servers, str):
        servers = [s.strip() for s in servers.split(",") if s.strip()]
    if not isinstance(servers, list) or not all(isinstance(s, str) and s for s in servers):
        raise ClusterError("option 'nats_servers' must be a list of nats://host:port URLs")
    for url in servers:
        if not re.match(r"^(nats|tls)://[^/\s]+$", url):
            raise ClusterError(f"option 'nats_servers': {url!r} is not a nats://host:port or tls://host:port URL")
    cluster_id = opts.get("cluster_id")
    if not isinstance(cluster_id, str) or not _ID.match(cluster_id):
        raise ClusterError("option 'cluster_id' must be set with nats_servers: letters, digits, '_' or '-' "
                           f"(at most 64), got {cluster_id!r}")
    for key in ("nats_nkey_seed", "nats_creds", "nats_tls_ca", "nats_tls_cert", "nats_tls_key"):
        value = opts.get(key)
        if value and not Path(value).is_file():
            raise ClusterError(f"option '{key}': {value} is not a readable file")
    if bool(opts.get("nats_tls_cert")) != bool(opts.get("nats_tls_key")):
        raise ClusterError("options 'nats_tls_cert' and 'nats_tls_key' go together")
    # one URL is taken for a single node; a list may name only some nodes of a larger cluster
    replicas = int(opts.get("nats_replicas") or (1 if len(servers) == 1 else 3))
    if replicas not in (1, 3, 5):
        raise ClusterError(f"option 'nats_replicas' must be 1, 3 or 5, got {replicas}")
    return ClusterConfig(
        cluster_id=cluster_id, servers=tuple(servers), user=opts.get("nats_user") or None,
        password=opts.get("nats_password") or None, nkey_seed=opts.get("nats_nkey_seed") or None,
        creds=opts.get("nats_creds") or None, tls_ca=opts.get("nats_tls_ca") or None,
        tls_cert=opts.get("nats_tls_cert") or None, tls_key=opts.get("nats_tls_key") or None,
        replicas=replicas, connect_timeout=float(opts.get("nats_connect_timeout") or 5.0),
        setup_timeout=float(opts.get("nats_setup_timeout") or 60.0),
        name=f"saline {opts.get('id') or ''}".strip())
