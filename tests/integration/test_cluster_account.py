"""The account block an operator pastes into nats-server.conf (``python -m saline.cluster.account``)
is a configuration the real nats-server accepts, and its user may do what a master does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.natscluster import find_server


def test_the_account_block_is_valid_nats_server_configuration(tmp_path: Path) -> None:
    block = subprocess.run([sys.executable, "-m", "saline.cluster.account", "prod", "--password", "s3cret"],
                           capture_output=True, text=True, check=True, timeout=30).stdout
    assert block.startswith("SALINE_prod: {") and '"saline.prod.>"' in block and '"_INBOX_prod.>"' in block
    assert "$JS.API.STREAM.CREATE.SALINE_prod_DEAD" in block and "$KV.saline_prod_keys.>" in block
    conf = tmp_path / "nats.conf"
    conf.write_text(f'listen: "127.0.0.1:-1"\njetstream: {{ store_dir: "{tmp_path / "js"}" }}\naccounts: {{\n{block}}}\n')
    run = subprocess.run([find_server(), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and "is valid" in (run.stdout + run.stderr), run
