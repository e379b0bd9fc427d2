"""The garbage collector's settings for saline's long-running processes.

A master, or a returner's delivery process, makes and drops several small containers for every
return it handles (the decoded message, the record, the row). Each one counts towards Python's
next young-generation pass: with the default thresholds (700, 10, 10) that is a pass every few
hundred returns, and every hundred of those a full pass over every object the process holds,
most of them made at start-up (modules, classes, configuration) and never freed.

So, once a process is set up, what it holds is frozen (no later pass looks at it again) and the
young generation is allowed to grow larger before a pass: past what a group of returns keeps alive
while it is handled (a few containers a return, up to 2,000 returns), so that a pass rarely finds
them still there and moves them on to the older generations. Reference cycles are still
collected, only less often.
"""

from __future__ import annotations

import gc

#: (allocations between young-generation passes, young passes per middle pass, middle passes per
#: full pass); Python's defaults are (700, 10, 10)
THRESHOLDS = (50_000, 20, 20)


def settle() -> None:
    """Collect what start-up left behind, freeze what remains, and set :data:`THRESHOLDS`.
    Call once, when the process is set up and about to serve."""
    gc.collect()  # garbage frozen now would never be freed
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
