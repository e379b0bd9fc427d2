"""Which accepted minions count as connected: heard from (hello or ping) recently. Read by the
``minions.connected`` wheel function and by the metrics."""

from __future__ import annotations

import time
from typing import Any

from saline.transport.keys import ACCEPTED

#: a minion heard from (hello or ping) this recently counts as connected; minions ping every
#: ``ping_interval`` (10 s by default), so this is three missed pings
CONNECTED_WINDOW = 30.0


def connected(master: Any, refresh: bool = True) -> list[str]:
    """Accepted minions heard from (hello or ping) in the last CONNECTED_WINDOW seconds.
    ``refresh=False`` reads the key folders as last seen (from a thread other than the master's loop)."""
    if refresh:
        master.keys.refresh()
    cutoff = time.time() - CONNECTED_WINDOW
    seen = dict(master.state.last_seen)  # one C-level copy: safe beside the loop thread's updates
    return [mid for mid in master.keys.ids(ACCEPTED) if seen.get(mid, 0.0) >= cutoff]
