"""Salt's wheel functions the REST API needs, run inside the master: keys, connected minions, config.

``key.list_all``, ``key.list``, ``key.accept``, ``key.reject``, ``key.delete``, ``key.finger``,
``minions.connected`` and ``config.values``, with Salt's argument names (``match`` a glob, a list
of ids or a ``{state: [ids]}`` map; ``include_rejected``, ``include_accepted``,
``include_denied``) and Salt's answer shapes. They act on the master's own
:class:`~saline.transport.keys.KeyStore`, so a key accepted here is seen by the return path at
once, and a key rejected or deleted here is revoked on the publish port by the master's usual
check. The local socket's ``wheel`` request lands in :func:`serve_request`; so does ``metrics``
(the Prometheus text of :mod:`saline.master.metrics`, for ``saline-api``'s ``/metrics``).
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import logging
import re
from pathlib import Path
from typing import Any, Callable

from saline.jid import gen_jid, is_jid
from saline.master.presence import connected
from saline.transport.keys import ACCEPTED, DENIED, PENDING, REJECTED, STATES, fingerprint

log = logging.getLogger(__name__)

#: option names whose values ``config.values`` masks (passwords, tokens, keys of returners and eauth)
_SECRET_NAME = re.compile(r"(pass|secret|api_?key|private|token(?!_expire))", re.IGNORECASE)
MASK = "******"


#: background tasks (runner_async, wheel_async) kept referenced until they end
_BACKGROUND: set[asyncio.Task] = set()


def _spawn(coro: Any) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


class WheelError(Exception):
    """A wheel call that cannot be carried out; one line for the API client."""


_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def wheel(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _FUNCTIONS[name] = fn
        return fn
    return register


def names() -> list[str]:
    return sorted(_FUNCTIONS)


def call(master: Any, fun: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run wheel function ``fun``; WheelError (one line) when it is unknown or the arguments are wrong."""
    fn = _FUNCTIONS.get(fun)
    if fn is None:
        raise WheelError(f"'{fun}' is not available (wheel functions: {', '.join(names())})")
    try:
        inspect.signature(fn).bind(master, *args, **kwargs)
    except TypeError as exc:
        raise WheelError(f"passed invalid arguments to {fun}: {exc}") from None
    return fn(master, *args, **kwargs)


async def serve_request(master: Any, request: dict[str, Any]) -> dict[str, Any]:
    """The local socket's ``wheel`` and ``metrics`` requests, answered as ``result`` or ``error``."""
    if request.get("cmd") == "metrics":
        from saline.master.metrics import MetricsUnavailable, render

        try:
            # delivery.status() may wait up to a few seconds for a busy delivery process's figures
            text = await asyncio.get_running_loop().run_in_executor(None, render, master)
        except MetricsUnavailable as exc:
            return {"cmd": "error", "message": str(exc)}
        return {"cmd": "result", "data": text}
    fun = str(request.get("fun") or "")
    jid = request["jid"] if is_jid(request.get("jid")) else gen_jid(bool(master.opts.get("unique_jid")))
    user = str(request.get("user") or "root")
    client = request.get("client") or "wheel"
    if client == "runner_async":
        return _runner_async(master, fun, request, jid, user)
    if client == "wheel_async":
        if fun not in _FUNCTIONS:
            return {"cmd": "error", "message": f"'{fun}' is not available (wheel functions: {', '.join(names())})"}
        _spawn(serve_request(master, {**request, "client": "wheel", "jid": jid}))
        return {"cmd": "result", "data": {"tag": f"salt/wheel/{jid}", "jid": jid}}
    try:
        ret = call(master, fun, list(request.get("arg") or []), dict(request.get("kwarg") or {}))
        success = True
    except WheelError as exc:
        return {"cmd": "error", "message": str(exc)}
    except Exception as exc:  # a key folder that cannot be written, ...: the client gets the cause
        ret, success = f"{fun} failed: {type(exc).__name__}: {exc}", False
    data = {"fun": f"wheel.{fun}", "jid": jid, "user": user, "success": success, "return": ret,
            "_stamp": _now()}
    fire(master, f"salt/wheel/{jid}/ret", data)
    return {"cmd": "result", "data": data}


def _runner_async(master: Any, fun: str, request: dict[str, Any], jid: str, user: str) -> dict[str, Any]:
    """Start a runner in the background; its return comes as the event ``salt/run/<jid>/ret``."""
    from saline.master.runners import RunnerError, call as run, names as runner_names

    if fun not in runner_names():
        return {"cmd": "error", "message": f"'{fun}' is not available (runners: {', '.join(runner_names())})"}
    tag = f"salt/run/{jid}"
    fire(master, f"{tag}/new", {"fun": f"runner.{fun}", "jid": jid, "user": user})

    async def background() -> None:
        try:
            ret, success = await run(master, fun, list(request.get("arg") or []), dict(request.get("kwarg") or {})), True
        except RunnerError as exc:
            ret, success = str(exc), False
        except Exception as exc:  # reported in the event, as Salt does, rather than lost in a task
            ret, success = f"{fun} failed: {type(exc).__name__}: {exc}", False
        fire(master, f"{tag}/ret", {"fun": f"runner.{fun}", "jid": jid, "user": user, "success": success,
                                    "return": ret})

    _spawn(background())
    return {"cmd": "result", "data": {"tag": tag, "jid": jid}}


def fire(master: Any, tag: str, data: dict[str, Any]) -> None:
    """An event on the master's bus, and to the ``event_return`` returners, as the master's own are."""
    from saline.master.outbox import OutboxError

    event = master.events.fire(tag, data)
    try:
        master.delivery.submit(master.delivery.items_for_event(event["tag"], event["data"]))
    except OutboxError as exc:
        log.error("event %s not queued for event returners: %s", tag, exc)


def _now() -> str:
    from saline.events import stamp

    return stamp()


# -- keys ------------------------------------------------------------------------------------------
_STATE_ALIASES = {"acc": ACCEPTED, "accepted": ACCEPTED, "minions": ACCEPTED, "pre": PENDING, "un": PENDING,
                  "unaccepted": PENDING, "minions_pre": PENDING, "rej": REJECTED, "rejected": REJECTED,
                  "minions_rejected": REJECTED, "den": DENIED, "denied": DENIED, "minions_denied": DENIED}


def _matching(master: Any, match: Any, states: tuple[str, ...]) -> dict[str, list[str]]:
    """The ids in ``states`` that ``match`` names: a glob (or comma-separated globs), a list of ids,
    or Salt's match dict ``{state: [ids]}``."""
    master.keys.refresh()
    listing = master.keys.listing()
    if isinstance(match, dict):
        wanted = {_STATE_ALIASES.get(str(k), str(k)): {str(i) for i in (v if isinstance(v, list) else [v])}
                  for k, v in match.items()}
        return {s: [m for m in listing[s] if m in wanted.get(s, ())] for s in states}
    if isinstance(match, list):
        ids = {str(m) for m in match}
        return {s: [m for m in listing[s] if m in ids] for s in states}
    globs = [g.strip() for g in str(match).split(",") if g.strip()] if match is not None else []
    return {s: [m for m in listing[s] if any(fnmatch.fnmatch(m, g) for g in globs)] for s in states}


def _local_keys(master: Any) -> list[str]:
    return sorted(p.name for p in Path(master.opts["pki_dir"]).glob("master.*") if p.suffix in (".pub", ".key"))


@wheel("key.list_all")
def list_all(master: Any) -> dict[str, list[str]]:
    master.keys.refresh()
    return {**master.keys.listing(), "local": _local_keys(master)}


@wheel("key.list")
def list_(master: Any, match: str = "all") -> dict[str, list[str]]:
    listing = list_all(master)
    name = str(match).lower()
    if name == "all":
        return listing
    state = _STATE_ALIASES.get(name)
    if state is None:
        raise WheelError(f"unknown key state '{match}' (use acc, pre, rej, den or all)")
    return {state: listing[state]}


@wheel("key.accept")
def accept(master: Any, match: Any, include_rejected: bool = False, include_denied: bool = False) -> dict[str, list[str]]:
    sources = (PENDING,) + ((REJECTED,) if include_rejected else ()) + ((DENIED,) if include_denied else ())
    return _move(master, _matching(master, match, sources), ACCEPTED, "accept")


@wheel("key.reject")
def reject(master: Any, match: Any, include_accepted: bool = False, include_denied: bool = False) -> dict[str, list[str]]:
    sources = (PENDING,) + ((ACCEPTED,) if include_accepted else ()) + ((DENIED,) if include_denied else ())
    return _move(master, _matching(master, match, sources), REJECTED, "reject")


def _move(master: Any, found: dict[str, list[str]], dst: str, act: str) -> dict[str, list[str]]:
    moved: list[str] = []
    for state, ids in found.items():
        for mid in ids:
            if master.keys.move(mid, state, dst, refresh=False):
                moved.append(mid)
                fire(master, "salt/key", {"id": mid, "act": act, "result": True})
    master.keys.refresh(force=True)  # once for all the keys moved
    return {dst: sorted(moved)} if moved else {}


@wheel("key.delete")
def delete(master: Any, match: Any) -> dict[str, list[str]]:
    found = _matching(master, match, STATES)
    out: dict[str, list[str]] = {}
    for state, ids in found.items():
        for mid in ids:
            if master.keys.delete(mid, refresh=False):
                out.setdefault(state, []).append(mid)
                fire(master, "salt/key", {"id": mid, "act": "delete", "result": True})
    master.keys.refresh(force=True)
    return out


@wheel("key.finger")
def finger(master: Any, match: Any, hash_type: str | None = None) -> dict[str, dict[str, str]]:
    """Fingerprints (sha256 of the Z85 public key, as ``saline-key -f`` prints them)."""
    found = _matching(master, match, STATES)
    out: dict[str, dict[str, str]] = {}
    for state, ids in found.items():
        for mid in ids:
            key = master.keys.key_of(state, mid)
            if key:
                out.setdefault(state, {})[mid] = fingerprint(key)
    if match in ("*", None) or fnmatch.fnmatch("master.pub", str(match)):
        pub = Path(master.opts["pki_dir"]) / "master.pub"
        if pub.exists():
            out["local"] = {"master.pub": fingerprint(pub.read_text().strip())}
    return out


# -- minions and config ------------------------------------------------------------------------------
@wheel("minions.connected")
def minions_connected(master: Any) -> list[str]:
    return connected(master)


@wheel("config.values")
def config_values(master: Any) -> dict[str, Any]:
    """The master's options, with secret values (passwords, tokens, API keys) masked."""
    return _masked(master.opts)


def _masked(value: Any, name: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, name) for v in value]
    if name and _SECRET_NAME.search(name) and value not in (None, "", False, True):
        return MASK
    return value
