"""Every master of a cluster shares one store of minion keys: the KV bucket ``saline_<cluster>_keys``.

Each master keeps minion keys as files (:class:`saline.transport.keys.KeyStore`): ``saline-key``
edits them, the master files pending and denied keys from hellos, and the master's ZAP handler and
revocation (re-binding the publish socket) read them. A :class:`KeySync` beside the master makes
those files its copy of one store shared by the whole cluster:

* **Local changes go out.** Every 0.2 s it looks at the four folders' mtimes (as the master does)
  and pushes each minion id whose files differ from what it last synced.
* **The others' changes come in.** A KV watch brings every other master's writes; it applies them
  to the files (private writes, and a move when the key only changes folder, as ``saline-key``
  does), and the master's own re-reading honours them as if ``saline-key`` had run here: a key
  accepted, rejected or deleted on any master is honoured by every master within a second, on
  both ports.

**The entries.** One per minion id; the KV key is the id, with each character a KV key may not
hold (and a dot at either end or after another dot) written ``=XX`` (hex): ``web1.example.com``
stays as it is, ``db@1`` becomes ``db=401``. The value is JSON::

    {"state": "minions", "key": "<Z85>", "by": "<master id>", "at": <unix time>}
    {"state": "deleted", "by": "<master id>", "at": <unix time>}

``state`` is the folder (``minions``, ``minions_pre``, ``minions_rejected``, ``minions_denied``).
An id is in two folders only when a known id came back with another key (accepted *and* denied):
the second one is under ``"also": {"minions_denied": "<Z85>"}``.

**A deletion is an entry** (``"state": "deleted"``), not a KV delete, because a master that was
offline must still learn of it however long it was away: a KV delete marker is removed by a
``purge_deletes`` or a compaction, and a master that knows nothing of an id it holds would push it
back (the rule below), bringing back a key revoked everywhere else. The entries stay (a few
hundred bytes per id ever deleted); a minion that says hello again after its key was deleted is
filed as pending over it, as usual. A KV delete or purge made by hand (``nats kv del``) reads as a
deletion too.

**Which side wins: a three-way comparison per id.** Each master keeps the state it last synced
for every id (its *base*), in ``<pki_dir>/cluster_keys.<cluster>.json``, so that a restart knows
what changed while it was down, and compares its files (*local*) and the KV entry (*cluster*):

* local == cluster: in sync;
* only the local files changed since the base: pushed, as a compare-and-set on the revision of the
  entry it last saw (``kv.update(key, value, last=revision)``; ``last=0`` for a new id);
* only the cluster's entry changed: applied to the files;
* both changed (a concurrent change on two masters, or a change made here while NATS was
  unreachable to an id another master changed meanwhile): **the cluster's entry stands** and the
  local change is undone, with one WARNING line naming the id. This is "last writer wins by KV
  revision": an id's state everywhere is its entry with the highest revision, and no master writes
  a revision on top of one it has not applied (the compare-and-set refuses it, the master reads
  that entry and it stands);
* no base (a master syncing for the first time, or after its base file was lost): the cluster's
  entry wins for every id the bucket has, a deletion included (so a stale copy of a pki folder
  cannot bring deleted keys back); an id the bucket has never had is pushed.

**No ping-pong.** A change applied from the cluster becomes the base at once, so the next look at
the folders finds local == base and pushes nothing; a master's own write comes back through the
watch as an entry equal to its files, and changes nothing.

**Edits racing the sync.** A read of four folders is not atomic: ``saline-key`` moving a key while
they are read shows it in both, or in neither. So the files of an id are read again just before
it is pushed, and just before and after the cluster's state is written to them (a compare-and-set
on the folder): an id whose files moved in between is planned again from a fresh read, never
pushed as a mix or a deletion, never overwritten unseen. A key filed just after a write is a
change on top of it, and is pushed.

**Failure.** If NATS is unreachable, nothing on this master waits for it: the folders stay the
master's truth, ``saline-key`` and the master's own filings work as on a single master, and one
WARNING line says so (per outage). When NATS is back (the bridge's ``on_reconnect``, or a retry
every second: a stream whose node died answers again once its Raft group has elected a leader),
the watch starts again from the bucket's current content and the three-way comparison pushes what
changed here and applies what changed elsewhere; the base on disk makes that hold across a restart
of the master during the outage too. A watch that falls behind the bucket (its server died while
the connection stayed up) is noticed by comparing the bucket's last revision with the last one it
delivered, and started again.

Everything runs on the bridge's event loop; the folders are read and written in its default
executor, so neither the bridge's loop nor the master's own loop waits for the disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from saline.cluster.bridge import NatsBridge
from saline.cluster.config import ClusterConfig
from saline.transport.keys import STATES, KeyStore, valid_id

log = logging.getLogger(__name__)

#: how often the key folders are looked at (their mtimes; the files only when one changed)
POLL_SECONDS = 0.2
#: timeout of one KV call. A write to a stream with no leader (one of its nodes died: an election
#: takes 4-9 s) fails at once, but a read or an info request gets no answer at all, so this bounds
#: how long a retry can wait past the election
OP_TIMEOUT = 2.0
#: how often the watch is checked against the bucket's last revision
CHECK_SECONDS = 2.0
#: waits between attempts while NATS is unreachable (the last one repeats)
RETRY_SECONDS = (0.2, 0.5, 1.0)
#: KV writes in flight at once
PUSH_CHUNK = 256
#: revisions kept per id (``nats kv history`` shows who changed a key, and when)
HISTORY = 5
#: rounds of push, refusal and re-read in one settling (a refused write is read and settled once more)
SETTLE_ROUNDS = 3
DELETED = "deleted"

#: the state of one minion id: folder -> Z85 public key; {} when the id has no key anywhere
States = dict[str, str]

_Z85 = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
_ESCAPED = re.compile(r"=([0-9A-F]{2})")


class _Resync(Exception):
    """Start the session again: reconnected, or the watch fell behind the bucket."""


def kv_key(minion_id: str) -> str:
    """The KV key of a minion id: ``=XX`` for what a KV key may not hold (no empty subject token)."""
    out = []
    last = len(minion_id) - 1
    for i, ch in enumerate(minion_id):
        if ch.isascii() and (ch.isalnum() or ch in "_-"):
            out.append(ch)
        elif ch == "." and 0 < i < last and minion_id[i - 1] != ".":
            out.append(ch)  # a dot between two non-empty parts: hostnames stay readable
        else:
            out.append(f"={ord(ch):02X}")
    return "".join(out)


def minion_of(key: str) -> str | None:
    """The minion id of a KV key; None when the key is not one :func:`kv_key` makes."""
    mid = _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), key)
    return mid if valid_id(mid) and kv_key(mid) == key else None


def encode(states: States, by: str, at: float | None = None) -> bytes:
    doc: dict[str, Any]
    if not states:
        doc = {"state": DELETED}
    else:
        first = next(s for s in STATES if s in states)
        doc = {"state": first, "key": states[first]}
        also = {s: states[s] for s in STATES if s in states and s != first}
        if also:
            doc["also"] = also
    doc["by"] = by
    doc["at"] = round(time.time() if at is None else at, 3)
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(data: bytes) -> States:
    """The states of an entry's value; ValueError (one line) when it is not one."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    state = doc.get("state")
    if state == DELETED:
        return {}
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}")
    also = doc.get("also") or {}
    if not isinstance(also, dict):
        raise ValueError("'also' is not an object")
    states = {state: doc.get("key"), **also}
    for s, k in states.items():
        if s not in STATES:
            raise ValueError(f"unknown state {s!r}")
        if not isinstance(k, str) or not _Z85.match(k):
            raise ValueError(f"the {s} key is not a Z85 CURVE public key")
    return states


def _describe(states: States | None) -> str:
    if not states:
        return DELETED
    return "+".join(s for s in STATES if s in states)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class KeySync:
    """Keeps the key folders under ``pki_dir`` in sync with the cluster's key bucket (see the module
    docstring). ``start()`` once the bridge is connected, ``stop()`` before closing it."""

    def __init__(self, bridge: NatsBridge, config: ClusterConfig, pki_dir: str | Path, master_id: str,
                 poll_seconds: float = POLL_SECONDS) -> None:
        self.bridge = bridge
        self.config = config
        self.pki_dir = Path(pki_dir)
        self.master_id = master_id
        self.poll_seconds = poll_seconds
        self.bucket = config.bucket("keys")
        self.base_file = self.pki_dir / f"cluster_keys.{config.cluster_id}.json"
        #: set while this master is in sync with the cluster (after each reconciliation)
        self.synced = threading.Event()
        #: what it did, for ``saline-run`` figures and the tests
        self.counts = {"pushed": 0, "applied": 0, "conflicts": 0, "refused": 0, "sessions": 0}
        self._store: KeyStore | None = None
        self._base: dict[str, States] = {}          # id -> state last synced ({}: deleted)
        self._base_dirty = False
        self._kv: dict[str, tuple[int, States]] = {}  # id -> (revision, state) of its latest entry known
        self._local: dict[str, States] | None = None  # the folders as last read (None: read again)
        self._watch_rev = 0
        self._unsettled: set[str] = set()  # ids a settling left out of sync, for the next poll
        self._future: concurrent.futures.Future | None = None
        self._stop = asyncio.Event()
        self._resync = asyncio.Event()
        self._offline_since: float | None = None
        self._said: set[Any] = set()  # warnings given once

    # -- the master's side ---------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> bool:
        """Start syncing on the bridge's loop; wait up to ``timeout`` seconds for the first
        reconciliation, so that the master starts with the cluster's keys. False when it was not
        done in that time (NATS unreachable: the local keys work, and are synced when it is back)."""
        if self._future is not None:
            raise RuntimeError("KeySync already started")
        self._store = KeyStore(self.pki_dir)
        self._base = self._load_base()
        self._stop.clear()
        self.bridge.on_reconnect.append(self._on_reconnect)
        self._future = self.bridge.submit(self._main())
        return self.synced.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop syncing (the base is saved); the key folders stay as they are."""
        future, self._future = self._future, None
        if future is None:
            return
        try:
            self.bridge.on_reconnect.remove(self._on_reconnect)
        except ValueError:
            pass
        self.bridge.loop.call_soon_threadsafe(self._stop.set)
        try:
            future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            log.warning("keys: the sync with the cluster did not stop within %g s; cancelled", timeout)
        except concurrent.futures.CancelledError:
            pass
        except Exception as exc:
            log.warning("keys: the sync with the cluster ended with %s", _one_line(exc))
        self.synced.clear()

    def _on_reconnect(self) -> None:
        self._resync.set()  # called on the bridge's loop

    # -- the base ------------------------------------------------------------------------------
    def _load_base(self) -> dict[str, States]:
        try:
            doc = json.loads(self.base_file.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("keys: %s is unreadable (%s): syncing as a master that never synced (the cluster's "
                        "entries win)", self.base_file, _one_line(exc))
            return {}
        if not isinstance(doc, dict) or doc.get("bucket") != self.bucket or not isinstance(doc.get("ids"), dict):
            return {}
        base: dict[str, States] = {}
        for mid, states in doc["ids"].items():
            if valid_id(mid) and isinstance(states, dict) and all(s in STATES and isinstance(k, str)
                                                                  for s, k in states.items()):
                base[mid] = states
        return base

    async def _save_base(self) -> None:
        if not self._base_dirty:
            return
        self._base_dirty = False
        doc = {"bucket": self.bucket, "master": self.master_id, "saved": round(time.time(), 3),
               "ids": dict(self._base)}  # a copy: its values are replaced, never changed in place

        def write() -> None:  # in the executor: thousands of ids take a few ms to encode
            _write_atomic(self.base_file, json.dumps(doc, separators=(",", ":")).encode())

        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            self._warn_once(("base", exc.errno), "keys: cannot save %s: %s", self.base_file, _one_line(exc))

    def _set_base(self, mid: str, states: States | None) -> None:
        if states is None:
            if self._base.pop(mid, None) is not None:
                self._base_dirty = True
        elif self._base.get(mid) != states:
            self._base[mid] = dict(states)
            self._base_dirty = True

    # -- the folders ---------------------------------------------------------------------------
    async def _refresh(self, force: bool = False) -> bool:
        assert self._store is not None
        changed = await asyncio.to_thread(self._store.refresh, force)
        if changed:
            self._local = None
        return changed

    def _folders(self) -> dict[str, States]:
        if self._local is None:
            store = self._store
            assert store is not None
            local: dict[str, States] = {}
            for state in STATES:
                for mid in store.ids(state):
                    local.setdefault(mid, {})[state] = store.key_of(state, mid) or ""
            self._local = local
        return self._local

    def _differing(self) -> set[str]:
        """The ids whose files differ from the base: changed here since the last sync."""
        local, base = self._folders(), self._base
        return {m for m in local.keys() | base.keys() if local.get(m, {}) != base.get(m, {})}

    def _moved_since(self, pushes: dict[str, tuple[States, int]]) -> set[str]:
        """The ids to push whose files no longer hold what the plan read (in the executor)."""
        store = self._store
        assert store is not None
        return {mid for mid, (states, _) in pushes.items() if store.on_disk(mid) != states}

    def _apply(self, applies: dict[str, States], local: dict[str, States]) -> tuple[set[str], set[str]]:
        """Make the files of each id what the cluster says (in the executor): the ids written, and
        the ids left (their files are no longer what the plan saw, or a write failed).

        The files are read again at write time (``KeyStore.on_disk``), and an id is written only if
        they still hold what the plan compared (a compare-and-set on the folder), and counted as
        written only if they are what the cluster says afterwards: a key filed, moved or deleted
        here in the meantime (``saline-key``, a hello) is planned again from the files, never
        overwritten unseen or mixed with the cluster's. What was written is the id's base, so an
        edit made here after the write is pushed on top of it."""
        store = self._store
        assert store is not None
        root = self.pki_dir
        done: set[str] = set()
        left: set[str] = set()
        for mid, want in applies.items():
            try:
                have = store.on_disk(mid)
                if have != local.get(mid, {}):
                    left.add(mid)
                    continue
                for state, key in want.items():
                    if have.get(state) == key:
                        continue
                    # the key is here in a folder it leaves: moved, atomically, as saline-key moves it
                    # (FileNotFoundError: moved or deleted here since the read; planned again)
                    src = next((s for s, k in have.items() if k == key and s != state and want.get(s) != key), None)
                    if src is not None:
                        os.replace(root / src / mid, root / state / mid)
                        del have[src]
                    else:
                        store.add(state, mid, key, refresh=False)
                    have[state] = key
                for state in [s for s in have if s not in want]:
                    (root / state / mid).unlink(missing_ok=True)
                (done if store.on_disk(mid) == want else left).add(mid)
            except FileNotFoundError:
                left.add(mid)
            except OSError as exc:
                self._warn_once(("apply", mid), "keys: cannot write the key of %s from the cluster: %s", mid,
                                _one_line(exc))
                left.add(mid)
        return done, left

    # -- the bucket ----------------------------------------------------------------------------
    async def _open_bucket(self, js: Any) -> Any:
        from nats.js.errors import BucketNotFoundError

        try:
            return await js.key_value(self.bucket)
        except BucketNotFoundError:
            pass
        try:
            return await js.create_key_value(bucket=self.bucket, history=HISTORY, replicas=self.config.replicas)
        except Exception:
            return await js.key_value(self.bucket)  # made by another master at the same moment

    def _note(self, key: str, revision: int, value: bytes | None, deleted: bool) -> str | None:
        """Record an entry (from the watch or a read) if newer than the one known; its id if so."""
        mid = minion_of(key)
        if mid is None:
            self._warn_once(("key", key), "keys: entry %r in %s is not a minion id: ignored", key, self.bucket)
            return None
        if deleted or value is None:
            states: States = {}
        else:
            try:
                states = decode(value)
            except ValueError as exc:
                self._warn_once(("value", key, revision), "keys: entry %s (revision %d) in %s ignored: %s", mid,
                                revision, self.bucket, exc)
                return None
        known = self._kv.get(mid)
        if known is not None and known[0] >= revision:
            return None
        self._kv[mid] = (revision, states)
        return mid

    def _note_entry(self, entry: Any) -> str | None:
        self._watch_rev = max(self._watch_rev, entry.revision or 0)
        return self._note(entry.key, entry.revision, entry.value, entry.operation in ("DEL", "PURGE"))

    async def _push(self, kv: Any, pushes: dict[str, tuple[States, int]]) -> set[str]:
        """Write each id's local state, compare-and-set on the revision known; the ids refused
        (another master wrote first). Any other failure is raised after the successes are kept."""
        from nats.js.errors import KeyWrongLastSequenceError

        refused: set[str] = set()
        items = list(pushes.items())
        for i in range(0, len(items), PUSH_CHUNK):
            chunk = items[i:i + PUSH_CHUNK]
            results = await asyncio.gather(*(kv.update(kv_key(mid), encode(states, self.master_id), last=last)
                                             for mid, (states, last) in chunk), return_exceptions=True)
            error: BaseException | None = None
            for (mid, (states, _)), result in zip(chunk, results):
                if isinstance(result, KeyWrongLastSequenceError):
                    refused.add(mid)
                elif isinstance(result, BaseException):
                    error = error or result
                else:
                    self.counts["pushed"] += 1
                    self._set_base(mid, states)
                    known = self._kv.get(mid)
                    if known is None or known[0] < result:
                        self._kv[mid] = (result, dict(states))
            if error is not None:
                raise error
        self.counts["refused"] += len(refused)
        return refused

    async def _read(self, kv: Any, ids: set[str]) -> None:
        """Read the entries of ``ids`` (refused writes: another master's entry is newer)."""
        from nats.js.errors import KeyNotFoundError

        async def one(mid: str) -> None:
            try:
                entry = await kv.get(kv_key(mid))
            except KeyNotFoundError as exc:
                if exc.entry is not None:  # a KV delete or purge marker
                    self._note(exc.entry.key, exc.entry.revision, None, True)
                else:
                    self._kv.pop(mid, None)
                return
            self._note(entry.key, entry.revision, entry.value, False)

        for chunk in [sorted(ids)[i:i + PUSH_CHUNK] for i in range(0, len(ids), PUSH_CHUNK)]:
            await asyncio.gather(*(one(m) for m in chunk))

    # -- settling ------------------------------------------------------------------------------
    def _plan(self, mid: str, local: States, pushes: dict[str, tuple[States, int]], applies: dict[str, States],
              replaced: list[str]) -> None:
        """The three-way comparison of one id (see the module docstring)."""
        if any(not _Z85.match(k) for k in local.values()):
            self._warn_once(("local", mid, tuple(sorted(local.items()))),
                            "keys: the key file of %s holds no CURVE public key: not synced", mid)
            return
        base = self._base.get(mid)
        known = self._kv.get(mid)
        if known is None:  # the cluster never had this id (or its bucket was made anew): ours stands
            if local:
                pushes[mid] = (local, 0)
            else:
                self._set_base(mid, None)
            return
        revision, cluster = known
        if local == cluster:
            self._set_base(mid, cluster)
        elif base is not None and local == base:
            applies[mid] = cluster
        elif base is not None and cluster == base:
            pushes[mid] = (local, revision)
        else:
            if base is not None:
                self.counts["conflicts"] += 1
                log.warning("keys: %s was changed here (%s) while another master changed it (%s): the cluster's "
                            "change stands", mid, _describe(local), _describe(cluster))
            elif local:
                replaced.append(mid)
            applies[mid] = cluster

    async def _settle(self, kv: Any, ids: set[str] | None) -> list[str]:
        """Bring ``ids`` (None: every id known anywhere) in sync; the ids whose never-synced local
        state the cluster's entry replaced."""
        replaced: list[str] = []
        for _ in range(SETTLE_ROUNDS):
            local = self._folders()
            if ids is None:
                ids = set(local) | set(self._kv) | set(self._base)
            if not ids:
                break
            pushes: dict[str, tuple[States, int]] = {}
            applies: dict[str, States] = {}
            for mid in ids:
                self._plan(mid, local.get(mid, {}), pushes, applies, replaced)
            again: set[str] = set()
            if applies:
                done, left = await asyncio.to_thread(self._apply, applies, local)
                self.counts["applied"] += len(done)
                for mid in done:
                    self._set_base(mid, applies[mid])
                await self._refresh(force=True)
                # not written (edited here since the plan, or an error), or edited here since the write
                again |= left | self._differing()
            if pushes:
                # what goes to every master is what the files hold now: a read of the folders that
                # a move crossed (saline-key -a while they were read) shows the key in both
                # folders, or in neither, and would reach the others as a mix or a deletion
                moved = await asyncio.to_thread(self._moved_since, pushes)
                if moved:
                    for mid in moved:
                        del pushes[mid]
                    again |= moved
                    await self._refresh(force=True)
            if pushes:
                refused = await self._push(kv, pushes)
                if refused:
                    await self._read(kv, refused)
                    again |= refused
            ids = again
            if not ids:
                break
        if ids:  # still moving (edited again meanwhile, or a write failed): looked at again next poll
            self._unsettled |= ids
        await self._save_base()
        return replaced

    # -- the session -----------------------------------------------------------------------------
    async def _main(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                try:
                    await self._session()
                    return
                except _Resync:
                    attempt = 0
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.debug("keys: session ended", exc_info=True)
                    self.synced.clear()
                    if self._offline_since is None:
                        self._offline_since = time.monotonic()
                        log.warning("keys: cannot sync with the cluster's key store %s (%s): key changes on this "
                                    "master still work, and are synced when NATS is back", self.bucket,
                                    _one_line(exc))
                    await self._wait(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
                    attempt += 1
        finally:
            await self._save_base()

    async def _wait(self, seconds: float) -> None:
        """Sleep, or less when asked to stop or to start again."""
        waiters = [asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(self._resync.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _session(self) -> None:
        """One connected stretch: replay the bucket, reconcile, then follow both sides."""
        self._resync.clear()
        started = time.monotonic()
        nc = self.bridge.nc
        if nc is None or not nc.is_connected:
            raise ConnectionError("not connected to NATS")
        js = nc.jetstream(timeout=OP_TIMEOUT)
        kv = await self._open_bucket(js)
        stream = f"KV_{self.bucket}"
        self._watch_rev = (await js.stream_info(stream)).state.last_seq
        watcher = await kv.watch(">")
        queue: asyncio.Queue = asyncio.Queue()

        async def read() -> None:
            async for entry in watcher:
                queue.put_nowait(entry)

        reader = asyncio.create_task(read())
        try:
            # the bucket's current content (one entry per id), then None
            self._kv = {}
            self._unsettled = set()  # the reconciliation below looks at every id
            while True:
                try:
                    entry = await asyncio.wait_for(queue.get(), OP_TIMEOUT)
                except asyncio.TimeoutError:
                    raise TimeoutError(f"the watch of {self.bucket} sent nothing for {OP_TIMEOUT:g} s") from None
                if entry is None:
                    break
                self._note_entry(entry)
            counts = dict(self.counts)
            await self._refresh()
            replaced = await self._settle(kv, None)
            self._caught_up(counts, replaced, time.monotonic() - started)
            await self._follow(js, stream, kv, queue, reader)
        finally:
            reader.cancel()
            try:
                await asyncio.wait_for(watcher.stop(), 1.0)
            except Exception:  # the connection may be gone; the server drops the consumer itself
                pass

    def _caught_up(self, before: dict[str, int], replaced: list[str], took: float) -> None:
        pushed = self.counts["pushed"] - before["pushed"]
        applied = self.counts["applied"] - before["applied"]
        self.counts["sessions"] += 1
        if replaced:
            log.info("keys: the cluster's entries replaced this master's never-synced keys of %d id(s): %s",
                     len(replaced), ", ".join(sorted(replaced)[:20]) + (" ..." if len(replaced) > 20 else ""))
        if self._offline_since is not None:
            log.info("keys: in sync with the cluster again after %.1f s (%d pushed, %d applied)",
                     time.monotonic() - self._offline_since, pushed, applied)
            self._offline_since = None
        else:
            log.info("keys: in sync with the cluster (%s: %d ids; %d pushed, %d applied in %.1f s)", self.bucket,
                     len(self._kv), pushed, applied, took)
        self.synced.set()

    async def _follow(self, js: Any, stream: str, kv: Any, queue: asyncio.Queue, reader: asyncio.Task) -> None:
        loop = asyncio.get_running_loop()
        nc = self.bridge.nc
        next_poll = loop.time() + self.poll_seconds
        next_check = loop.time() + CHECK_SECONDS
        expected = self._watch_rev  # the bucket's last revision at the previous check
        while not self._stop.is_set():
            if self._resync.is_set():
                raise _Resync()
            if not nc.is_connected:
                raise ConnectionError("disconnected from NATS")
            if reader.done():
                raise ConnectionError(f"the watch of {self.bucket} ended")
            ids: set[str] = set()
            try:
                entry = await asyncio.wait_for(queue.get(), max(0.001, next_poll - loop.time()))
            except asyncio.TimeoutError:
                pass
            else:
                for item in [entry, *(queue.get_nowait() for _ in range(queue.qsize()))]:
                    if item is not None:
                        mid = self._note_entry(item)
                        if mid is not None:
                            ids.add(mid)
            now = loop.time()
            poll = now >= next_poll
            if poll or ids:
                # the folders first: a local change not yet pushed meets the cluster's in _plan
                if await self._refresh():
                    ids |= self._differing()
                if poll:
                    next_poll = now + self.poll_seconds
                    ids |= self._unsettled
                    self._unsettled = set()
            if ids:
                await self._settle(kv, ids)
            if now >= next_check:
                next_check = now + CHECK_SECONDS
                try:
                    last = (await js.stream_info(stream)).state.last_seq
                except Exception as exc:
                    # no answer: the stream has no leader for a moment, or NATS is gone (the next
                    # write, or the disconnection, ends the session if it lasts)
                    log.debug("keys: checking the watch of %s: %s", self.bucket, _one_line(exc))
                    continue
                if self._watch_rev < expected:  # an entry older than one check is still not delivered
                    log.info("keys: the watch of %s fell behind (revision %d of %d): starting it again", self.bucket,
                             self._watch_rev, expected)
                    raise _Resync()
                expected = last

    def _warn_once(self, what: Any, message: str, *args: Any) -> None:
        if what not in self._said:
            self._said.add(what)
            log.warning(message, *args)
