"""CURVE key pairs on disk, and the master's store of minion keys by state.

Layout under the master's ``pki_dir`` (Salt's names): ``master.pub``/``master.key`` and the
folders ``minions`` (accepted), ``minions_pre`` (pending), ``minions_rejected`` and
``minions_denied`` (a known id that came back with another key). Each minion file is named after
the minion id and holds its Z85 public key. ``saline-key`` edits these files; the master
re-reads them when a folder changes.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import zmq

ACCEPTED, PENDING, REJECTED, DENIED = "minions", "minions_pre", "minions_rejected", "minions_denied"
STATES = (ACCEPTED, PENDING, REJECTED, DENIED)
_ID_RE = re.compile(r"^[A-Za-z0-9_.@:-]{1,255}$")
#: a folder changed less than this long (ns) before its stamp was taken may change again without its
#: mtime moving (a coarse file-system clock ticks every 1-10 ms): it is read again next time (git's
#: "racy" rule)
RACY_NS = 20_000_000


class KeyError_(Exception):
    """A key operation failed; the message is one line."""


def valid_id(minion_id: object) -> bool:
    """Minion ids become file names: no slashes, no dot-only names, a sane length."""
    return isinstance(minion_id, str) and bool(_ID_RE.match(minion_id)) and minion_id not in (".", "..")


def _write_private(path: Path, data: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(data)
    os.replace(tmp, path)


def ensure_keypair(pki_dir: str | Path, name: str) -> tuple[str, str]:
    """Load ``<name>.pub``/``<name>.key`` from ``pki_dir``, creating them on first use."""
    folder = Path(pki_dir)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    pub, sec = folder / f"{name}.pub", folder / f"{name}.key"
    if not (pub.exists() and sec.exists()):
        public, secret = zmq.curve_keypair()
        _write_private(sec, secret.decode())
        _write_private(pub, public.decode())
    return pub.read_text().strip(), sec.read_text().strip()


def fingerprint(public_key: str) -> str:
    """Salt's form of a key's fingerprint: the SHA-256 of the key text as ``aa:bb:…`` (32 pairs),
    what ``master_finger`` pins and ``saline-key -F`` prints."""
    import hashlib  # here, not at the top: hashlib loads OpenSSL's libcrypto (3.4 MB in every minion)

    digest = hashlib.sha256(public_key.strip().encode()).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def same_fingerprint(a: str, b: str) -> bool:
    """Whether two fingerprints are equal, whatever their case and separators."""
    def norm(text: str) -> str:
        return re.sub(r"[^0-9a-f]", "", text.lower())
    return bool(norm(a)) and norm(a) == norm(b)


@dataclass(frozen=True)
class KeyInfo:
    state: str
    minion_id: str


def _read_key(path: Path) -> str | None:
    """A key file's public key; None when it is gone or cannot be read (left out, not an error)."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


class KeyStore:
    """The master's view of minion keys, cached and refreshed when the folders change."""

    def __init__(self, pki_dir: str | Path) -> None:
        self.root = Path(pki_dir)
        for state in STATES:
            (self.root / state).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._stamp: tuple[int, ...] = ()
        self._by_key: dict[str, KeyInfo] = {}
        self._by_id: dict[str, dict[str, str]] = {}
        self._sorted: dict[str, tuple[str, ...]] = {}  # the ids of each state, sorted once per change
        self.refresh()

    # -- reading -----------------------------------------------------------------------------
    def _folder_stamp(self) -> tuple[int, ...]:
        return tuple(os.stat(self.root / s).st_mtime_ns for s in STATES)

    def refresh(self, force: bool = False) -> bool:
        """Re-read the folders if they changed; True when something changed."""
        # the racy test is against when the stamp was taken, not when the read ended: a change made
        # during a slow read (a busy machine) can carry the very mtime the stamp holds
        started = time.time_ns()
        stamp = self._folder_stamp()
        if stamp == self._stamp and not force:
            return False
        by_key: dict[str, KeyInfo] = {}
        by_id: dict[str, dict[str, str]] = {s: {} for s in STATES}
        for state in STATES:
            for path in (self.root / state).iterdir():
                if path.name.endswith(".tmp") or not valid_id(path.name):
                    continue
                key = _read_key(path)
                if key is None:
                    continue
                by_id[state][path.name] = key
                # accepted wins when the same key sits in two folders
                if key not in by_key or state == ACCEPTED:
                    by_key[key] = KeyInfo(state, path.name)
        changed = force or by_id != self._by_id
        self._by_key, self._by_id = by_key, by_id
        self._sorted = {state: tuple(sorted(ids)) for state, ids in by_id.items()}
        self._stamp = () if started - max(stamp) < RACY_NS else stamp
        return changed

    def by_key(self, public_key: str) -> KeyInfo | None:
        return self._by_key.get(public_key)

    def accepted_key(self, minion_id: str) -> str | None:
        return self._by_id[ACCEPTED].get(minion_id)

    def ids(self, state: str) -> list[str]:
        return list(self._sorted[state])

    def listing(self) -> dict[str, list[str]]:
        return {state: self.ids(state) for state in STATES}

    def key_of(self, state: str, minion_id: str) -> str | None:
        return self._by_id[state].get(minion_id)

    def on_disk(self, minion_id: str) -> dict[str, str]:
        """The id's keys by state as its files hold them now, not as last read: what a caller
        racing other writers (the cluster key sync) compares before it acts."""
        found = {state: _read_key(self.root / state / minion_id) for state in STATES}
        return {state: key for state, key in found.items() if key is not None}

    # -- changing ----------------------------------------------------------------------------
    def add(self, state: str, minion_id: str, public_key: str, refresh: bool = True) -> None:
        """Write a key; ``refresh=False`` skips re-reading the folders (a caller adding thousands
        of keys refreshes once at the end)."""
        if not valid_id(minion_id):
            raise KeyError_(f"invalid minion id {minion_id!r}")
        _write_private(self.root / state / minion_id, public_key + "\n")
        if refresh:
            self.refresh(force=True)

    def move(self, minion_id: str, src: str, dst: str, refresh: bool = True) -> bool:
        """Move a key to another state (``refresh`` as for :meth:`add`)."""
        path = self.root / src / minion_id
        if not path.exists():
            return False
        os.replace(path, self.root / dst / minion_id)
        if refresh:
            self.refresh(force=True)
        return True

    def delete(self, minion_id: str, refresh: bool = True) -> list[str]:
        """Remove the id from every state; the states it was in (``refresh`` as for :meth:`add`)."""
        removed = []
        for state in STATES:
            path = self.root / state / minion_id
            if path.exists():
                path.unlink()
                removed.append(state)
        if refresh:
            self.refresh(force=True)
        return removed
