"""Contract case: ``carbon`` on the carbon-cache that scripts/services.sh starts (plaintext
127.0.0.1:2003, whisper files under ``$TMPDIR/saline-carbon/whisper``).

carbon keeps numbers only, under paths without the jid: the case's ``metric_base_pattern``
puts its own prefix and the jid in front (``saline_t<digest>.[jid].[module].[function].[minion_id]``)
and ``retcode_metric`` leaves a point for every return, so a jid's returns can be counted as
``retcode`` files; ``skip_on_error`` leaves out the suite's text values. Counting waits until
carbon's writer has created the files (their number stops changing).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from tests.conftest import require_port
from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase

HOST, PORT = "127.0.0.1", int(os.environ.get("SALINE_TEST_CARBON_PORT", 2003))
WHISPER = Path(os.environ.get("SALINE_TEST_CARBON_WHISPER",
                              os.path.join(os.environ.get("TMPDIR", "/tmp"), "saline-carbon", "whisper")))


def prefix(tmp: Path) -> str:
    return "saline_t" + hashlib.sha1(str(tmp).encode()).hexdigest()[:12]


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    require_port("carbon (plaintext)", HOST, PORT)
    return {"carbon.host": HOST, "carbon.port": PORT, "carbon.skip_on_error": True, "carbon.retcode_metric": True,
            "carbon.metric_base_pattern": f"{prefix(tmp)}.[jid].[module].[function].[minion_id]"}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"carbon.port": closed_port(), "carbon.timeout": 3}


def settled(count: Any, quiet: float = 0.8, first: float = 10.0, limit: float = 30.0) -> int:
    """``count()`` once it has stopped changing for ``quiet`` seconds (carbon writes files later;
    up to ``first`` seconds are allowed for the first one to appear)."""
    last, since, started = count(), time.monotonic(), time.monotonic()
    while (time.monotonic() - since < quiet or (not last and time.monotonic() - started < first)) \
            and time.monotonic() - started < limit:
        time.sleep(0.1)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
    return last


def count_returns(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    folder = WHISPER / prefix(tmp) / jid
    return settled(lambda: sum(1 for _ in folder.rglob("retcode.wsp")) if folder.exists() else 0)


def count_events(fx: dict[str, Any], tmp: Path, jid: str) -> int:
    folder = WHISPER / "salt" / "job" / jid / "ret"
    return settled(lambda: sum(1 for p in folder.iterdir() if p.is_dir()) if folder.exists() else 0)


CASES = [ContractCase(name="carbon", fixtures=(), config=config, unreachable=unreachable, lossless=False,
                      extra={"count": count_returns, "count_events": count_events, "duplicates": "ignored"})]
