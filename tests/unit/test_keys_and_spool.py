"""The key store and the minion spool, on real files."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from saline.minion.spool import Spool
from saline.transport.keys import (ACCEPTED, PENDING, RACY_NS, REJECTED, KeyInfo, KeyStore, ensure_keypair,
                                  fingerprint, valid_id)


def test_keypair_is_created_once_and_private(tmp_path: Path) -> None:
    pub, sec = ensure_keypair(tmp_path / "pki", "minion")
    assert len(pub) == 40 and len(sec) == 40
    assert ensure_keypair(tmp_path / "pki", "minion") == (pub, sec)
    assert stat.S_IMODE(os.stat(tmp_path / "pki" / "minion.key").st_mode) == 0o600
    assert len(fingerprint(pub).split(":")) == 32


def test_key_states_move_and_lookup(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "pki")
    pub, _ = ensure_keypair(tmp_path / "k", "m1")
    store.add(PENDING, "m1", pub)
    assert store.by_key(pub).state == PENDING
    assert store.move("m1", PENDING, ACCEPTED)
    assert store.by_key(pub).state == ACCEPTED and store.accepted_key("m1") == pub
    assert store.move("m1", ACCEPTED, REJECTED) and store.by_key(pub).state == REJECTED
    assert store.delete("m1") == [REJECTED] and store.by_key(pub) is None


def test_external_edits_are_noticed(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "pki")
    pub, _ = ensure_keypair(tmp_path / "k", "m2")
    other = KeyStore(tmp_path / "pki")  # saline-key in another process
    other.add(ACCEPTED, "m2", pub)
    assert store.refresh() and store.by_key(pub).minion_id == "m2"


def test_a_move_during_a_slow_read_is_noticed_though_the_mtimes_did_not_move(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """saline-key moves a key while the master reads the folders, on a busy machine: the read
    takes longer than the racy window, and the move lands on the same tick of the file system's
    clock as the stamp, so the folders' mtimes are what the stamp holds. The next refresh still
    reads them again (the racy test is against when the stamp was taken)."""
    store = KeyStore(tmp_path / "pki")
    pub, _ = ensure_keypair(tmp_path / "k", "m3")
    store.add(PENDING, "m3", pub)
    pki = tmp_path / "pki"
    tick = time.time_ns() - 5_000_000  # the folders changed 5 ms before the read starts
    for folder in (ACCEPTED, PENDING):
        os.utime(pki / folder, ns=(tick, tick))
    read_text = Path.read_text

    def moved_meanwhile(path: Path, *args: object, **kwargs: object) -> str:
        if path == pki / PENDING / "m3":
            os.replace(path, pki / ACCEPTED / "m3")  # saline-key -a, in that moment
            for folder in (ACCEPTED, PENDING):
                os.utime(pki / folder, ns=(tick, tick))  # the same clock tick
            time.sleep(RACY_NS * 2 / 1e9)  # a busy machine: the read ends past the racy window
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", moved_meanwhile)
    store.refresh(force=True)
    monkeypatch.setattr(Path, "read_text", read_text)
    assert store.by_key(pub) is None  # the read missed the key on both sides of the move
    assert store.refresh() and store.by_key(pub) == KeyInfo(ACCEPTED, "m3")


def test_ids_that_are_not_file_names_are_invalid() -> None:
    assert valid_id("web-01.example.com")
    for bad in ("../etc", "a/b", "", ".", "..", "x" * 300, 5, None):
        assert not valid_id(bad)


def test_spool_keeps_until_ack(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.put("m1", "20260101000000000001", {"jid": "20260101000000000001", "return": True})
    spool.put("m2", "20260101000000000002", {"jid": "20260101000000000002", "return": 1})
    assert [j for j, _ in spool.due("m1", 0)] == ["20260101000000000001"]
    assert spool.due("m1", 60) == []  # just resent: not due again yet
    spool.close()
    reopened = Spool(tmp_path / "spool.db")
    assert reopened.count("m1") == 1
    reopened.ack("m1", "20260101000000000001")
    assert reopened.count("m1") == 0 and reopened.count("m2") == 1
