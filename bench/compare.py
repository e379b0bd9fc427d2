"""Rows of several rounds made into one table: medians per side, floors pooled, ratios.

``bench/run.py --baseline`` runs each benchmark once per round and side (baseline, current,
baseline, current, ...). What the rounds become:

- a figure of one side: the (low) median of its rounds' values, ``runs`` the value of each round
  (a benchmark that has runs of its own, such as the CLI's 15, gives its round's median), its
  other fields (``met``, the note) from that median round, and the CPU shares of every round
  pooled into the note's "CPU (...)" part;
- a floor (the driver's bulk path, bare pyzmq) does not depend on the side: the median of every
  measurement of both sides (``floor_runs``); so is the transport floor row (``transport``);
- the current row carries the baseline's figures as ``baseline``, ``ratio`` (current /
  baseline) and ``round_ratios`` (the same, round by round); every returns/s row gets ``of_transport``, its share of the transport floor of the
  same run (for both sides).
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import cpu_note

Row = dict[str, Any]
Rounds = list[list[Row]]  #: one list of rows per round of one side

CPU_NOTE = "CPU (% of one core"


def _median_round(items: list[Row], key: str) -> Row:
    """The row whose ``key`` is the low median of the items (an actual round, for even counts too)."""
    values = sorted(items, key=lambda r: r[key])
    return values[(len(values) - 1) // 2]


def _scale_key(row: Row) -> str:
    """What the rounds of a "how it grows with N" row are ranked by."""
    return next((k for k in ("fanout_s", "burst_s") if k in row), "n")


def _by_name(rounds: Rounds) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for rows in rounds:
        for r in rows:
            out.setdefault(r["name"], []).append(r)
    return out


def merge_rounds(rounds: Rounds) -> dict[str, Row]:
    """One row per name: the median round's row, with every round's value in ``runs``."""
    merged: dict[str, Row] = {}
    for name, items in _by_name(rounds).items():
        if items[0].get("scale"):
            merged[name] = dict(_median_round(items, _scale_key(items[0])))
            continue
        row = dict(_median_round(items, "value"))
        row["runs"] = [r["value"] for r in items]
        if any(r.get("cpu") for r in items):
            row["cpu"] = [share for r in items for share in r.get("cpu") or []]
            note = row.get("note", "")
            if CPU_NOTE in note:  # the shares of every round, not only the median one's
                row["note"] = note[:note.index(CPU_NOTE)] + cpu_note(row["cpu"])
        merged[name] = row
    return merged


def _pooled(name: str, items: list[Row]) -> Row:
    values = [v for r in items for v in (r.get("runs") or [r["value"]])]
    row = dict(items[0])
    row.update(value=statistics.median(values), runs=values)
    return row


def combine(current: Rounds | None, baseline: Rounds | None) -> list[Row]:
    """The table's rows from the rounds of each side (either may be None: only one side ran)."""
    sides = [s for s in (current, baseline) if s]
    both = [r for s in sides for rows in s for r in rows]
    order = list(dict.fromkeys(r["name"] for r in both))
    floors: dict[str, list[float]] = {}
    for r in both:
        if r.get("floor") is not None:
            floors.setdefault(r["name"], []).append(r["floor"])
    cur = merge_rounds(current or [])
    base = merge_rounds(baseline or [])
    transport = {name: _pooled(name, [r for r in both if r["name"] == name])
                 for name in order if any(r.get("transport") for r in both if r["name"] == name)}
    rows: list[Row] = []
    for name in order:
        if name in transport:
            rows.append(transport[name])
            continue
        mine, theirs = cur.get(name), base.get(name)
        if current is None:  # only the baseline ran: its figures are the row's own
            mine, theirs = theirs, None
        if mine is None:  # the current side failed on every round: the baseline's figures, no current
            mine = {**theirs, "value": None, "runs": [], "met": None, "note": "", "cpu": []}  # type: ignore[dict-item]
        row = dict(mine)
        if name in floors and not row.get("scale"):
            row["floor"], row["floor_runs"] = statistics.median(floors[name]), floors[name]
        if theirs is not None:
            keep = {k: v for k, v in theirs.items() if k in ("value", "runs", "note", "cpu", "met")} \
                if not theirs.get("scale") else {k: v for k, v in theirs.items() if k not in ("name", "scale", "bench")}
            row["baseline"] = keep
            if not row.get("scale") and row.get("value") and theirs.get("value"):
                row["ratio"] = row["value"] / theirs["value"]
                row["round_ratios"] = _round_ratios(name, current or [], baseline or [])
        rows.append(row)
    return transport_shares(rows)


def _round_ratios(name: str, current: Rounds, baseline: Rounds) -> list[float]:
    """Current / baseline of each round both sides finished (rows carry their ``round``): the
    pairs measured minutes apart, which drift of the machine touches least."""
    def values(rounds: Rounds) -> dict[int, float]:
        return {r["round"]: r["value"] for rows in rounds for r in rows
                if r["name"] == name and "round" in r and r.get("value")}

    mine, theirs = values(current), values(baseline)
    return [mine[k] / theirs[k] for k in sorted(mine) if k in theirs]


def transport_shares(rows: list[Row]) -> list[Row]:
    """``of_transport`` (and the baseline's) on every returns/s row, from the transport floor among
    ``rows`` (rows of one run only: a floor is compared with what ran beside it)."""
    floor = next((r["value"] for r in rows if r.get("transport")), None)
    if not floor:
        return rows
    for r in rows:
        if r.get("transport") or r.get("scale") or r.get("unit") != "/s" or "returns" not in r["name"]:
            continue  # only what travels as the transport floor's messages does: returns and their events
        if r.get("value"):
            r["of_transport"] = r["value"] / floor
        if (r.get("baseline") or {}).get("value"):
            r["baseline"]["of_transport"] = r["baseline"]["value"] / floor
    return rows
