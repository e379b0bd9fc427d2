"""The collector settings of saline's daemons (saline/gc_tuning.py), in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import gc, weakref
from saline import gc_tuning
gc_tuning.settle()
assert gc.get_threshold() == gc_tuning.THRESHOLDS, gc.get_threshold()
assert gc.get_freeze_count() > 1000, gc.get_freeze_count()  # the interpreter's and saline's own objects
class Node: pass
a = Node(); a.me = a; gone = weakref.ref(a); del a
kept = [[] for _ in range(3 * gc_tuning.THRESHOLDS[0])]  # enough new objects for a young pass
assert gone() is None, "a reference cycle was never collected"
print("ok")
"""


def test_settle_freezes_what_start_up_made_and_still_collects_cycles() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"

