"""External authentication as Salt configures it: ``pam``, ``file`` and ``rest``.

``external_auth`` maps each eauth to its users (a name, a glob such as ``'*'``, or ``'group%'``
for the members of a system group under ``pam``) and each user to a permission list
(:mod:`saline.api.perms`). Keys starting with ``^`` are the eauth's own settings:

* ``pam``: system users through PAM (the ``python-pam`` binding), service ``auth.pam.service``
  (``login``, as in Salt);
* ``file``: ``^filename``, ``^filetype`` (``text``, ``htpasswd`` or ``htdigest``), for text files
  ``^hashtype`` (``plaintext`` or a hashlib name such as ``sha256``), ``^field_separator`` (``:``),
  ``^username_field`` (1) and ``^password_field`` (2), for htdigest ``^realm``; htpasswd and
  htdigest files are read by passlib (every scheme Apache writes: bcrypt, apr1, SHA1, crypt);
* ``rest``: ``^url``: the credentials are POSTed there as a form (``username``, ``password``);
  a 200 authenticates, and a JSON list in the answer is added to the user's permissions (Alcali's
  ``/api/token/verify/`` answers ``[]``).

A wrong password is a ``None`` answer; a broken configuration or an unreachable service is an
:class:`EauthError` with one line, which the API logs and answers as a failed login.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

EAUTHS = ("pam", "file", "rest")
REST_TIMEOUT = 10.0


class EauthError(Exception):
    """The eauth could not decide (misconfigured, service unreachable); one line."""


@dataclass
class Identity:
    user: str
    eauth: str
    groups: list[str] = field(default_factory=list)
    extra_perms: list[Any] = field(default_factory=list)  # granted by the eauth itself (rest)


class Eauth:
    def __init__(self, external_auth: dict[str, Any], pam_service: str = "login") -> None:
        self.config = external_auth
        self.pam_service = pam_service
        self._http: Any = None

    async def authenticate(self, eauth: str, username: str, password: str) -> Identity | None:
        """The identity when the credentials are right, None when they are not."""
        if eauth not in self.config:
            raise EauthError(f"eauth '{eauth}' is not configured in external_auth")
        if eauth not in EAUTHS:
            raise EauthError(f"eauth '{eauth}' is not supported (supported: {', '.join(EAUTHS)})")
        if not username or not password:
            return None
        settings = self.config[eauth]
        if eauth == "pam":
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(None, _pam_check, username, password, self.pam_service)
            return Identity(username, eauth, await loop.run_in_executor(None, _groups, username)) if ok else None
        if eauth == "file":
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(None, _file_check, settings, username, password)
            return Identity(username, eauth) if ok else None
        return await self._rest_check(settings, username, password)

    def perms(self, identity: Identity) -> list[Any]:
        """The user's permission list: its own entry, matching globs, its groups', and the eauth's extras."""
        settings = self.config.get(identity.eauth) or {}
        out: list[Any] = []
        for name, entries in settings.items():
            name = str(name)
            if name.startswith("^"):
                continue
            if name.endswith("%"):
                matched = name[:-1] in identity.groups
            else:
                matched = name == identity.user or fnmatch.fnmatchcase(identity.user, name)
            if matched:
                for entry in entries if isinstance(entries, list) else [entries]:
                    if entry not in out:
                        out.append(entry)
        for entry in identity.extra_perms:
            if entry not in out:
                out.append(entry)
        return out

    async def _rest_check(self, settings: dict[str, Any], username: str, password: str) -> Identity | None:
        url = settings.get("^url")
        if not url:
            raise EauthError("external_auth: rest needs ^url")
        import aiohttp

        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REST_TIMEOUT))
        try:
            async with self._http.post(str(url), data={"username": username, "password": password}) as resp:
                if resp.status != 200:
                    return None
                body = await resp.text()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise EauthError(f"eauth rest: cannot reach {url}: {type(exc).__name__}: {exc}") from None
        import json

        try:
            answer = json.loads(body) if body.strip() else None
        except ValueError:
            answer = None
        return Identity(username, "rest", extra_perms=answer if isinstance(answer, list) else [])

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


def _pam_check(username: str, password: str, service: str) -> bool:
    try:
        import pam
    except ImportError:
        raise EauthError("eauth pam needs python-pam: pip install 'saline[api]'") from None
    return bool(pam.pam().authenticate(username, password, service=service))


def _groups(username: str) -> list[str]:
    import grp
    import pwd

    try:
        gid = pwd.getpwnam(username).pw_gid
        return sorted({grp.getgrgid(g).gr_name for g in os.getgrouplist(username, gid)})
    except (KeyError, OSError):
        return []


def _file_check(settings: dict[str, Any], username: str, password: str) -> bool:
    filename = settings.get("^filename")
    if not filename:
        raise EauthError("external_auth: file needs ^filename")
    filetype = str(settings.get("^filetype") or "text")
    try:
        if filetype == "htpasswd":
            from passlib.apache import HtpasswdFile

            return bool(HtpasswdFile(str(filename)).check_password(username, password))
        if filetype == "htdigest":
            from passlib.apache import HtdigestFile

            realm = settings.get("^realm")
            if not realm:
                raise EauthError("external_auth: file with ^filetype htdigest needs ^realm")
            return bool(HtdigestFile(str(filename)).check_password(username, str(realm), password))
        if filetype != "text":
            raise EauthError(f"external_auth: file: unknown ^filetype '{filetype}' (text, htpasswd or htdigest)")
        return _text_check(settings, str(filename), username, password)
    except OSError as exc:
        raise EauthError(f"external_auth: file: cannot read {filename}: {exc.strerror}") from None
    except ImportError:
        raise EauthError("eauth file with htpasswd/htdigest needs passlib: pip install 'saline[api]'") from None
    except ValueError as exc:  # a malformed line or hash in the file
        raise EauthError(f"external_auth: file: {filename}: {exc}") from None


def _text_check(settings: dict[str, Any], filename: str, username: str, password: str) -> bool:
    sep = str(settings.get("^field_separator") or ":")
    user_field = int(settings.get("^username_field") or 1) - 1
    pass_field = int(settings.get("^password_field") or 2) - 1
    hashtype = str(settings.get("^hashtype") or "plaintext")
    if hashtype != "plaintext" and hashtype not in hashlib.algorithms_available:
        raise EauthError(f"external_auth: file: unknown ^hashtype '{hashtype}'")
    with open(filename, encoding="utf-8") as fh:
        for line in fh:
            fields = line.rstrip("\r\n").split(sep)
            if len(fields) <= max(user_field, pass_field) or fields[user_field] != username:
                continue
            stored = fields[pass_field]
            given = password if hashtype == "plaintext" else hashlib.new(hashtype, password.encode()).hexdigest()
            return hmac.compare_digest(stored.encode(), given.encode())
    return False
