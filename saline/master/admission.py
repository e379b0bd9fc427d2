"""What an unauthenticated peer may make the master write: a cap on pending keys and a rate.

An unknown key may say hello and file a pending entry under any id (Salt's behaviour, which
``saline-key -a`` relies on); a known id with a new key lands in ``minions_denied``. Both write a
file, so a peer that generates keys could otherwise fill the disk and the listings. The gate holds
two limits: ``max_pending_keys`` entries in pending plus denied, and ``pending_hellos_per_second``
new entries per second (a token bucket with one second of burst). A refused hello is answered
"pending" (so a real new minion simply asks again later) and counted; one warning line says when a
limit is reached, and again at most once a minute while it holds.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

WARN_EVERY = 60.0


class PendingGate:
    def __init__(self, max_pending: int, per_second: float) -> None:
        self.max_pending = max(0, int(max_pending))
        self.per_second = max(0.0, float(per_second))
        self._tokens = self.per_second
        self._last = time.monotonic()
        self._warned: dict[str, float] = {}
        self.refused = 0

    def admit(self, waiting: int) -> bool:
        """Whether one more entry may be written, with ``waiting`` entries there already."""
        now = time.monotonic()
        self._tokens = min(self.per_second, self._tokens + (now - self._last) * self.per_second)
        self._last = now
        if waiting >= self.max_pending:
            return self._refuse("cap", now, f"{waiting} keys are pending or denied (max_pending_keys: "
                                f"{self.max_pending}); new keys are not recorded until some are accepted, "
                                "rejected or deleted")
        if self._tokens < 1.0:
            return self._refuse("rate", now, f"more than {self.per_second:g} new keys per second "
                                "(pending_hellos_per_second); the rest are not recorded for now")
        self._tokens -= 1.0
        return True

    def _refuse(self, why: str, now: float, message: str) -> bool:
        self.refused += 1
        if now - self._warned.get(why, -WARN_EVERY) >= WARN_EVERY:
            self._warned[why] = now
            log.warning("%s (%d refused so far)", message, self.refused)
        return False
