"""Which master key a minion trusts, as Salt does: given, pinned, or taken on first use.

In order:

1. ``master_pub`` in the config (the key itself, or a file holding it): trusted as given.
2. ``<pki_dir>/minion_master.pub``: the key copied there by hand, or kept from the first contact.
3. Neither: the key is fetched from the master's ``master_pub_port``
   (:mod:`saline.transport.bootstrap`) and kept in ``minion_master.pub``: trust on first use.

``master_finger`` (Salt's option: the SHA-256 fingerprint, ``aa:bb:…``, that ``saline-key -F
master`` prints) pins the key in every case: a key whose fingerprint differs is refused, whether
it was given, kept or fetched. A kept key is never replaced silently: when the master presents
another one, the minion refuses it (see :class:`KeyChanged`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from saline.transport.keys import fingerprint, same_fingerprint


class MasterKeyError(Exception):
    """The master's key cannot be trusted; the message is one line."""


class KeyChanged(MasterKeyError):
    """The master presents a key other than the trusted one."""


def kept_path(opts: dict[str, Any]) -> Path:
    return Path(opts["pki_dir"]) / "minion_master.pub"


def _valid(key: str) -> bool:
    return len(key) == 40 and " " not in key


def configured_key(opts: dict[str, Any]) -> tuple[str | None, str]:
    """(the trusted key, where it comes from), or (None, where it would be kept) when the minion
    has none yet. MasterKeyError when one is configured but unusable or not the pinned one."""
    value = opts.get("master_pub")
    if value and _valid(value.strip()) and not Path(value).exists():
        key, source = value.strip(), "master_pub"
    else:
        path = Path(value) if value else kept_path(opts)
        if not path.exists():
            if value:
                raise MasterKeyError(f"master_pub: {path} does not exist")
            return None, str(path)
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise MasterKeyError(f"cannot read the master's public key {path}: {exc.strerror}") from None
        if not _valid(key):
            raise MasterKeyError(f"{path} does not hold a master public key (40 Z85 characters)")
        source = str(path)
    check_finger(opts, key, source)
    return key, source


def check_finger(opts: dict[str, Any], key: str, source: str) -> None:
    pinned = opts.get("master_finger")
    if pinned and not same_fingerprint(pinned, fingerprint(key)):
        raise MasterKeyError(f"the master's key ({source}) has fingerprint {fingerprint(key)}, not the "
                             f"master_finger {pinned}: refusing it (check saline-key -F master on the master)")


def keep(opts: dict[str, Any], key: str) -> Path:
    """Store a key taken on first use (0600, like every file under pki_dir)."""
    path = kept_path(opts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.replace(tmp, path)
    return path


def changed_message(trusted: str, source: str, presented: str, where: str) -> str:
    return (f"the master at {where} presents a key with fingerprint {fingerprint(presented)}, not the trusted one "
            f"({source}, fingerprint {fingerprint(trusted)}): refusing it. If the master's key was replaced on "
            f"purpose, remove {source} (or set master_pub / master_finger to the new key) and start the minion again")
