"""The demo: start a master and a local minion, accept its key, run jobs, read the job cache."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from saline.localcluster import LocalCluster


def show(cluster: LocalCluster, tool: str, *args: str) -> str:
    print(f"\n$ {tool} {' '.join(args)}")
    proc = cluster.cli(tool, *args)
    print((proc.stdout + proc.stderr).rstrip())
    if proc.returncode != 0:
        print(f"(exit status {proc.returncode})")
    return proc.stdout


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="saline-demo-"))
    print(f"demo folder: {root}")
    with LocalCluster(root) as cluster:
        cluster.start_master()
        # the minion takes the master's key on first contact, pinned to the fingerprint shown here
        finger = show(cluster, "saline-key", "-F", "master").split("master.pub:")[-1].strip()
        cluster.start_minion("demo-minion", copy_master_key=False, master_finger=finger)
        cluster.wait_for(lambda: (cluster.master_dir / "pki" / "minions_pre" / "demo-minion").exists(), 20,
                         "the minion's key")
        show(cluster, "saline-key", "-L")
        show(cluster, "saline-key", "-y", "-a", "demo-minion")
        show(cluster, "saline", "demo-minion", "test.ping")  # the first job after accepting reaches it
        out = show(cluster, "saline", "-v", "demo-minion", "cmd.run", "echo hello from $(hostname)")
        show(cluster, "saline", "-G", "kernel:Linux", "grains.item", "os", "num_cpus")
        show(cluster, "saline-run", "jobs.list_jobs")
        match = re.search(r"jid (\d{20})", out)
        if match:
            show(cluster, "saline-run", "jobs.lookup_jid", match.group(1))
        show(cluster, "saline-run", "returners.status")
    print(f"\ndone; logs are in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
