"""Sessions: the tokens ``/login`` and ``/token`` hand out.

A token is 40 random hex digits (Salt's length). Each is kept in memory and in a file of its own
under ``<cachedir>/tokens`` (folder 0700, files 0600), as Salt's ``localfs`` token store does, so
a restarted ``saline-api`` keeps its sessions. A token past its ``expire`` time, or logged out, is
gone: every request looks it up again, so an event stream ends with its session.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_TOKEN_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class Session:
    token: str
    user: str
    eauth: str
    perms: list[Any]
    start: float
    expire: float
    groups: list[str] = field(default_factory=list)

    def login_answer(self) -> dict[str, Any]:
        """``/login``'s answer: Salt's keys."""
        return {"token": self.token, "start": self.start, "expire": self.expire, "user": self.user,
                "eauth": self.eauth, "perms": self.perms}

    def token_answer(self) -> dict[str, Any]:
        """``/token``'s answer (Salt's token data: ``name`` rather than ``user``)."""
        return {"token": self.token, "start": self.start, "expire": self.expire, "name": self.user,
                "eauth": self.eauth}


class TokenStore:
    def __init__(self, folder: str | Path, expire: float) -> None:
        self.folder = Path(folder)
        self.expire = expire
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self._sessions: dict[str, Session] = {}
        self._load()

    def _load(self) -> None:
        now = time.time()
        for path in self.folder.iterdir():
            if not _TOKEN_RE.match(path.name):
                continue
            try:
                data = json.loads(path.read_text())
                session = Session(**data)
            except (OSError, ValueError, TypeError):
                log.warning("unreadable token file %s removed", path.name[:8])
                path.unlink(missing_ok=True)
                continue
            if session.expire <= now:
                path.unlink(missing_ok=True)
            else:
                self._sessions[session.token] = session

    def create(self, user: str, eauth: str, perms: list[Any], groups: list[str] | None = None) -> Session:
        now = time.time()
        session = Session(secrets.token_hex(20), user, eauth, perms, now, now + self.expire, list(groups or []))
        path = self.folder / session.token
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(session), fh)
        self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token``; None when unknown, malformed or expired."""
        if not token or not _TOKEN_RE.match(token):
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        if session.expire <= time.time():
            self.remove(token)
            return None
        return session

    def remove(self, token: str) -> bool:
        session = self._sessions.pop(token, None)
        if _TOKEN_RE.match(token or ""):
            (self.folder / token).unlink(missing_ok=True)
        return session is not None

    def sweep(self) -> int:
        """Forget expired sessions; how many."""
        now = time.time()
        gone = [t for t, s in self._sessions.items() if s.expire <= now]
        for token in gone:
            self.remove(token)
        return len(gone)

    def __len__(self) -> int:
        return len(self._sessions)
