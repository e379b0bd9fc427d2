"""The ``user`` module: local user accounts (Salt's ``user.info`` and ``user.list_users``).

Read through the C library's passwd and group databases (``pwd``, ``grp``), so users from NSS
sources (LDAP, sssd) are seen too, as Salt sees them.
"""

from __future__ import annotations

import grp
import os
import pwd
from typing import Any

from saline.modules.errors import CommandExecutionError


def _gecos(text: str) -> dict[str, str]:
    parts = (text.split(",") + ["", "", "", ""])[:4]
    other = text.split(",", 4)[4] if text.count(",") >= 4 else ""
    return {"fullname": parts[0], "roomnumber": parts[1], "workphone": parts[2], "homephone": parts[3],
            "other": other}


def _groups(entry: pwd.struct_passwd) -> list[str]:
    try:
        gids = os.getgrouplist(entry.pw_name, entry.pw_gid)
    except OSError:
        gids = [entry.pw_gid]
    names = []
    for gid in gids:
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.append(str(gid))
    return sorted(set(names))


def info(name: Any) -> dict[str, Any]:
    """Return a user's account: uid, gid, name, home, shell, passwd, groups and the GECOS fields
    (fullname, roomnumber, workphone, homephone, other).

    A user that does not exist fails the job (Salt returns an empty dict).

    CLI Example::

        saline '*' user.info root
    """
    text = "" if name is None else str(name)
    if not text:
        raise CommandExecutionError("a user name is required")
    try:
        entry = pwd.getpwnam(text)
    except KeyError:
        raise CommandExecutionError(f"User '{text}' does not exist") from None
    return {"gid": entry.pw_gid, "groups": _groups(entry), "home": entry.pw_dir, "name": entry.pw_name,
            "passwd": entry.pw_passwd, "shell": entry.pw_shell, "uid": entry.pw_uid, **_gecos(entry.pw_gecos)}


def list_users() -> list[str]:
    """Return the names of every user, sorted.

    CLI Example::

        saline '*' user.list_users
    """
    return sorted({entry.pw_name for entry in pwd.getpwall()})
