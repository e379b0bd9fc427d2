"""Several saline masters sharing one NATS JetStream cluster, as real processes, for the tests.

A :class:`MultiMaster` starts a three-node NATS cluster (``tests/helpers/natscluster.py``, TLS and
a user whose permissions are exactly what a saline cluster needs, from saline's own names) and
``n`` masters on it (each a :class:`~saline.localcluster.LocalCluster` with its own folders and
ports), sharing one master key pair (Salt's multi-master rule) and one ``cluster_id``. Minions
are started on a given master; keys are accepted where the test says (or everywhere, until the
masters share keys by themselves).
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any

from saline.cluster.config import ClusterConfig
from saline.localcluster import LocalCluster
from tests.helpers.natscluster import NatsCluster, NatsUser, saline_permissions


def saline_user(cluster_id: str, name: str | None = None, password: str | None = None) -> NatsUser:
    """A NATS user allowed exactly what the masters and workers of ``cluster_id`` use."""
    names = ClusterConfig(cluster_id=cluster_id, servers=())
    pub, sub, inbox = saline_permissions(cluster_id, names.streams(), names.buckets())
    return NatsUser(name or cluster_id, password=password or secrets.token_hex(12), publish=pub, subscribe=sub,
                    inbox_prefix=inbox)


class MultiMaster:
    def __init__(self, root: Path, masters: int = 2, cluster_id: str = "prod", master_opts: dict[str, Any] | None = None,
                 nats: NatsCluster | None = None) -> None:
        self.root = Path(root)
        self.cluster_id = cluster_id
        self.user = saline_user(cluster_id)
        self._own_nats = nats is None
        self.nats = nats or NatsCluster(users=[self.user, NatsUser("admin", password=secrets.token_hex(12))],
                                        base_dir=self.root / "nats")
        self.master_opts = master_opts or {}
        self.n = masters
        self.masters: list[LocalCluster] = []

    def nats_opts(self, user: NatsUser | None = None) -> dict[str, Any]:
        u = user or self.user
        c = self.nats.certs
        return {"cluster_id": self.cluster_id, "nats_servers": self.nats.urls, "nats_user": u.name,
                "nats_password": u.password, "nats_tls_ca": str(c["ca"]), "nats_tls_cert": str(c["client_cert"]),
                "nats_tls_key": str(c["client_key"]), "nats_connect_timeout": 3}

    def start(self) -> "MultiMaster":
        if self._own_nats:
            self.nats.start()
        for i in range(self.n):
            m = LocalCluster(self.root / f"m{i}", master_opts={"id": f"master{i}", **self.nats_opts(),
                                                               **self.master_opts})
            if i > 0:  # one key pair for every master: a minion trusts each of them
                pki = m.master_dir / "pki"
                pki.mkdir(parents=True, exist_ok=True)
                for name in ("master.pub", "master.key"):
                    shutil.copy(self.masters[0].master_dir / "pki" / name, pki / name)
            m.start_master()
            self.masters.append(m)
        return self

    def accept_everywhere(self, mid: str, on: int) -> None:
        """Accept minion ``mid`` (started on master ``on``) on every master by copying its key."""
        m = self.masters[on]
        m.wait_for(lambda: (m.master_dir / "pki" / "minions_pre" / mid).exists(), 20, f"{mid} pending")
        key = (m.master_dir / "pki" / "minions_pre" / mid).read_text()
        for other in self.masters:
            (other.master_dir / "pki" / "minions").mkdir(parents=True, exist_ok=True)
            (other.master_dir / "pki" / "minions" / mid).write_text(key)
            pre = other.master_dir / "pki" / "minions_pre" / mid
            if pre.exists():
                pre.unlink()

    def stop(self) -> None:
        for m in reversed(self.masters):
            m.stop_all()
        if self._own_nats:
            self.nats.stop()

    def __enter__(self) -> "MultiMaster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
