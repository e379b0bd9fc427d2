"""Lowstates: what ``POST /``, ``/run`` and ``/minions`` carry, checked and run against the master.

A lowstate is Salt's dict ``{"client", "fun", "tgt", "tgt_type", "arg", "kwarg", "full_return",
"timeout", "ret", "batch", ...}``; a request carries one or a list. Each is checked before any
runs: a client not in ``netapi_enable_clients`` or unknown, a missing ``fun`` or a wrong field type
is a 400 naming it; a function the session's permissions do not grant is a 403 naming it. Then
each runs in order and its answer is shaped as Salt's:

* ``local``: ``{minion: return}`` (with ``full_return``: ``{minion: {"ret", "retcode", "jid"}}``);
* ``local_async``: ``{"jid", "minions"}``; ``local_batch``: one ``{minion: return}`` per return;
* ``runner``: the runner's return; ``runner_async``: ``{"tag", "jid"}``;
* ``wheel``: ``{"tag", "data": {"fun", "jid", "user", "success", "return"}}``; ``wheel_async``:
  ``{"tag", "jid"}``.

For ``runner`` and ``wheel``, keys of the lowstate that are not Salt's fields become keyword
arguments, and ``key=value`` strings in ``arg`` too (``match`` of ``key.accept``, ``jid`` of
``jobs.lookup_jid``), as Salt's runner and wheel clients read them.
"""

from __future__ import annotations

import math
from typing import Any

from saline.api.masterlink import MasterError, MasterLink
from saline.api.options import KNOWN_CLIENTS, SERVED_CLIENTS
from saline.api.perms import Call, local_allowed, master_side_allowed
from saline.modules.args import split_args

#: lowstate keys that are Salt's fields, never keyword arguments of a runner or wheel function
RESERVED = {"client", "fun", "arg", "kwarg", "tgt", "tgt_type", "expr_form", "timeout", "full_return", "ret",
            "batch", "batch_size", "token", "eauth", "username", "password", "jid_include", "print_event",
            "asynchronous", "metadata", "ret_config", "ret_kwargs", "__current_eauth_groups",
            "__current_eauth_user"}


class ApiError(Exception):
    """An HTTP error with Salt's status code and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def as_lowstates(body: Any) -> list[dict[str, Any]]:
    """One lowstate or a list of them, each a dict; ApiError 400 otherwise."""
    lows = body if isinstance(body, list) else [body]
    if not lows:
        raise ApiError(400, "no lowstate given")
    for i, low in enumerate(lows):
        if not isinstance(low, dict):
            raise ApiError(400, f"lowstate {i} is not a mapping of Salt's fields")
    return lows


class Runner:
    """Checks and runs lowstates for one session (user and permissions)."""

    def __init__(self, link: MasterLink, enabled: list[str]) -> None:
        self.link = link
        self.enabled = enabled

    # -- checking ----------------------------------------------------------------------------------
    def _client(self, low: dict[str, Any]) -> str:
        client = low.get("client")
        if not isinstance(client, str) or not client:
            raise ApiError(400, "lowstate without 'client' (local, local_async, runner, wheel, ...)")
        if client not in KNOWN_CLIENTS:
            raise ApiError(400, f"Invalid client specified: '{client[:40]}'")
        if client not in self.enabled:
            raise ApiError(400, f"Client disabled: '{client}'. Add to 'netapi_enable_clients' master config option "
                                "to enable.")
        if client not in SERVED_CLIENTS:
            raise ApiError(400, f"client '{client}' is not supported by saline")
        return client

    @staticmethod
    def _fun(low: dict[str, Any]) -> str:
        fun = low.get("fun")
        if not isinstance(fun, str) or not fun:
            raise ApiError(400, "lowstate without 'fun'")
        return fun

    @staticmethod
    def _local_parts(low: dict[str, Any]) -> tuple[Any, str, list[Any], dict[str, Any]]:
        tgt = low.get("tgt")
        if tgt is None or tgt == "" or not isinstance(tgt, (str, list)):
            raise ApiError(400, "lowstate for a local client without 'tgt'")
        tgt_type = low.get("tgt_type") or low.get("expr_form") or "glob"
        if not isinstance(tgt_type, str):
            raise ApiError(400, "'tgt_type' must be a string")
        arg = low.get("arg")
        arg = [] if arg is None else arg if isinstance(arg, list) else [arg]
        kwarg = low.get("kwarg") or {}
        if not isinstance(kwarg, dict):
            raise ApiError(400, "'kwarg' must be a mapping")
        return tgt, tgt_type, arg, kwarg

    @staticmethod
    def master_args(low: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments of a runner or wheel lowstate, as Salt reads them."""
        arg = low.get("arg")
        args, kwargs = split_args([] if arg is None else arg if isinstance(arg, list) else [arg])
        kwarg = low.get("kwarg") or {}
        if not isinstance(kwarg, dict):
            raise ApiError(400, "'kwarg' must be a mapping")
        kwargs.update(kwarg)
        kwargs.update({k: v for k, v in low.items() if k not in RESERVED and not str(k).startswith("__")})
        return args, {str(k): v for k, v in kwargs.items()}

    async def check(self, low: dict[str, Any], perms: list[Any]) -> None:
        """ApiError 400 for a malformed lowstate, 403 for a function not permitted."""
        client = self._client(low)
        fun = self._fun(low)
        if client.startswith("local"):
            tgt, tgt_type, arg, kwarg = self._local_parts(low)
            args, kwargs = split_args(arg)
            kwargs.update(kwarg)
            call = Call("local", fun, tuple(args), tuple(kwargs.items()), tgt, tgt_type)
            try:
                minions = await self.link.expected(tgt, tgt_type)
            except MasterError as exc:
                raise ApiError(400, str(exc)) from None
            cache: dict[tuple[str, str], list[str]] = {}

            async def expand(target: Any, kind: str) -> list[str]:
                key = (str(target), kind)
                if key not in cache:
                    try:
                        cache[key] = await self.link.expected(target, kind)
                    except MasterError:
                        cache[key] = []  # a permission target that does not parse grants nothing
                return cache[key]

            if not await local_allowed(perms, call, minions, expand):
                raise ApiError(403, f"not permitted to run {fun} on {_shown(tgt)}")
            return
        kind = "runner" if client.startswith("runner") else "wheel"
        args, kwargs = self.master_args(low)
        if not master_side_allowed(perms, Call(kind, fun, tuple(args), tuple(kwargs.items()))):
            raise ApiError(403, f"not permitted to run {kind} function {fun}")

    # -- running -----------------------------------------------------------------------------------
    async def run(self, low: dict[str, Any], user: str) -> list[Any]:
        """The entries this lowstate adds to the answer's ``return`` list."""
        client = low["client"]
        fun = low["fun"]
        try:
            if client == "local":
                return [await self._local(low, user)]
            if client == "local_async":
                return [await self._publish(low, user)]
            if client == "local_batch":
                return await self._local_batch(low, user)
            args, kwargs = self.master_args(low)
            if client == "runner":
                try:
                    return [await self.link.runner(fun, args, kwargs)]
                except MasterError as exc:
                    return [str(exc)]  # Salt answers a runner's failure as its return
            if client == "wheel":
                data = await self.link.wheel(fun, args, kwargs, user)
                return [{"tag": f"salt/wheel/{data['jid']}", "data": data}]
            return [await self.link.wheel(fun, args, kwargs, user, client)]  # runner_async, wheel_async
        except MasterError as exc:
            raise ApiError(400, str(exc)) from None

    def _load(self, low: dict[str, Any], user: str, tgt: Any = None, tgt_type: str | None = None) -> dict[str, Any]:
        ltgt, ltype, arg, kwarg = self._local_parts(low)
        args = list(arg) + ([{"__kwarg__": True, **kwarg}] if kwarg else [])
        load: dict[str, Any] = {"tgt": ltgt if tgt is None else tgt, "tgt_type": tgt_type or ltype, "fun": low["fun"],
                                "arg": args, "ret": low.get("ret") or "", "user": user}
        timeout = low.get("timeout")
        if timeout is not None:
            try:
                load["timeout"] = float(timeout)
            except (TypeError, ValueError):
                raise ApiError(400, f"'timeout' must be a number of seconds, got {timeout!r}") from None
        for key in ("metadata", "ret_config", "ret_kwargs"):
            if low.get(key) is not None:
                load[key] = low[key]
        return load

    async def _publish(self, low: dict[str, Any], user: str) -> dict[str, Any]:
        return await self.link.publish(self._load(low, user))

    async def _local(self, low: dict[str, Any], user: str, tgt: Any = None, tgt_type: str | None = None,
                     out: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        full = bool(low.get("full_return"))
        found: dict[str, Any] = {}
        jid = ""
        async for message in self.link.publish_wait(self._load(low, user, tgt, tgt_type)):
            if message["cmd"] == "published":
                jid = message["jid"]
            elif message["cmd"] == "return":
                data = message.get("data") or {}
                value = ({"ret": data.get("return"), "retcode": data.get("retcode", 0), "jid": jid} if full
                         else data.get("return"))
                found[message["id"]] = value
                if out is not None:
                    out.append({message["id"]: value})
        return found

    async def _local_batch(self, low: dict[str, Any], user: str) -> list[Any]:
        tgt, tgt_type, _, _ = self._local_parts(low)
        minions = await self.link.expected(tgt, tgt_type)
        size = _batch_size(low.get("batch") if low.get("batch") is not None else low.get("batch_size"), len(minions))
        out: list[dict[str, Any]] = []
        for start in range(0, len(minions), size):
            await self._local(low, user, minions[start:start + size], "list", out)
        return out


def _batch_size(value: Any, total: int) -> int:
    if value is None or value == "":
        return max(total, 1)
    text = str(value).strip()
    try:
        if text.endswith("%"):
            return max(1, math.ceil(total * float(text[:-1]) / 100.0))
        size = int(text)
    except ValueError:
        raise ApiError(400, f"'batch' must be N or N%, got {value!r}") from None
    if size < 1:
        raise ApiError(400, f"'batch' must be at least 1, got {value!r}")
    return size


def _shown(tgt: Any) -> str:
    text = ",".join(map(str, tgt)) if isinstance(tgt, list) else str(tgt)
    return repr(text if len(text) <= 60 else text[:57] + "...")
