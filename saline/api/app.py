"""The routes of ``saline-api``: rest_cherrypy's contract on aiohttp.

``POST /login`` (JSON, form or JSON sent as ``text/plain``), ``/logout``, ``/token``, ``GET
/stats``; ``POST /`` and ``POST /run`` with lowstates; ``/minions``, ``/jobs``, ``/keys``;
``GET /events`` (:mod:`saline.api.sse`); ``GET /metrics``; the browser app and its static files
(``app``/``app_path``, ``static``/``static_path``).

A session is found from the ``X-Auth-Token`` header, else the ``session_id`` cookie set at login
(and for ``/events`` also ``?token=`` or ``?salt_token=``, since ``EventSource`` sends no
header). Errors are Salt's status codes with a one-line reason in ``{"status", "return"}``: 400
(malformed body or lowstate), 401 (no session, wrong credentials), 403 (function not permitted,
named), 404 (unknown job), 406 (an answer type it cannot give), 415 (a body type it cannot read),
429 (too many failed logins from one address: ``max_failed_logins`` within
``failed_login_window`` seconds), 503 (the master is down).
"""

from __future__ import annotations

import collections
import json
import logging
import time
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from aiohttp import web

from saline.api import sse
from saline.api.eauth import Eauth, EauthError, Identity
from saline.api.lowstate import ApiError, Runner, as_lowstates
from saline.api.masterlink import MasterError, MasterLink
from saline.api.options import SERVED_CLIENTS, ApiOptions
from saline.api.tokens import Session, TokenStore
from saline.transport.local import MasterUnreachable

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LINK: web.AppKey["Api"] = web.AppKey("api")


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class Api:
    """The state behind the routes: options, the master link, eauth, sessions, counters."""

    def __init__(self, opts: ApiOptions, pam_service: str = "login") -> None:
        self.opts = opts
        self.link = MasterLink(opts.sock_dir)
        self.eauth = Eauth(opts.external_auth, pam_service)
        self.tokens = TokenStore(opts.token_dir, opts.token_expire)
        self.runner = Runner(self.link, opts.netapi_enable_clients)
        self.failures: dict[str, collections.deque[float]] = {}
        self.started = time.time()
        self.stats = {"requests": 0, "logins": 0, "failed_logins": 0, "refused_logins": 0, "events_streams": 0,
                      "events_cut": 0}
        self.own_metrics = _OwnMetrics(self)

    # -- bodies and answers ------------------------------------------------------------------------
    async def body(self, request: web.Request) -> Any:
        """The request's data: JSON, form, YAML, or JSON sent as text/plain (a browser's default)."""
        if request.content_length is not None and request.content_length > self.opts.max_request_body_size:
            raise ApiError(413, f"request body larger than max_request_body_size ({self.opts.max_request_body_size})")
        raw = await request.read()
        if not raw.strip():
            return {}
        ctype = request.content_type or "text/plain"
        text = raw.decode("utf-8", "replace")
        if ctype == "application/x-www-form-urlencoded":
            return _form(text)
        if ctype in ("application/x-yaml", "text/yaml"):
            import yaml

            try:
                return yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ApiError(400, f"malformed YAML: {str(exc).splitlines()[0]}") from None
        if ctype in ("application/json", "text/plain"):
            try:
                return json.loads(text)
            except ValueError as exc:
                if ctype == "text/plain" and "=" in text and not text.lstrip().startswith(("{", "[")):
                    return _form(text)  # a form posted without its content type
                raise ApiError(400, f"malformed JSON: {exc}") from None
        raise ApiError(415, f"Content type not supported: {ctype}")

    def answer(self, request: web.Request, data: Any, status: int = 200,
               headers: dict[str, str] | None = None) -> web.Response:
        accept = request.headers.get("Accept", "")
        if ("application/x-yaml" in accept or "text/yaml" in accept) and "json" not in accept:
            import yaml

            body = yaml.safe_dump(json.loads(json.dumps(data, default=_json_default)), default_flow_style=False)
            return web.Response(text=body, status=status, content_type="application/x-yaml", headers=headers)
        return web.Response(text=json.dumps(data, default=_json_default), status=status,
                            content_type="application/json", headers=headers)

    # -- sessions ----------------------------------------------------------------------------------
    def session(self, request: web.Request, query: bool = False) -> Session:
        """The live session of the request: its X-Auth-Token header, else (for /events) ``?token=``
        or ``?salt_token=``, else its session_id cookie; the first that is valid wins (a browser
        may still hold the cookie of an older session)."""
        tokens = [request.headers.get("X-Auth-Token")]
        if query:
            tokens += [request.query.get("token"), request.query.get("salt_token")]
        tokens.append(request.cookies.get("session_id"))
        given = [t for t in tokens if t]
        if not given:
            raise ApiError(401, "No authentication credentials: log in at /login and send X-Auth-Token")
        for token in given:
            session = self.tokens.get(token)
            if session is not None:
                return session
        raise ApiError(401, "The session is not valid: it expired or was logged out; log in again")

    def _throttle(self, request: web.Request) -> None:
        window = self.opts.failed_login_window
        times = self.failures.get(request.remote or "?")
        if not times:
            return
        now = time.monotonic()
        while times and now - times[0] > window:
            times.popleft()
        if len(times) >= self.opts.max_failed_logins:
            self.stats["refused_logins"] += 1
            wait = int(window - (now - times[0])) + 1
            raise ApiError(429, f"too many failed logins from {request.remote}; try again in {wait} s")

    def _failed(self, request: web.Request, why: str) -> None:
        self.stats["failed_logins"] += 1
        times = self.failures.setdefault(request.remote or "?", collections.deque())
        times.append(time.monotonic())
        if len(self.failures) > 100_000:  # an address sweep must not grow this without bound
            self.failures.pop(next(iter(self.failures)))
        log.warning("failed login from %s: %s", request.remote, why)

    async def login(self, request: web.Request, creds: Any) -> Session:
        """A new session from ``{"eauth", "username", "password"}``; ApiError 401/429 otherwise."""
        self._throttle(request)
        if not isinstance(creds, dict):
            raise ApiError(400, "the login body must be a mapping with eauth, username and password")
        eauth, user, password = creds.get("eauth"), creds.get("username"), creds.get("password")
        if not all(isinstance(v, str) and v for v in (eauth, user, password)):
            self._failed(request, "eauth, username or password missing")
            raise ApiError(401, "Could not authenticate: eauth, username and password are required")
        try:
            identity: Identity | None = await self.eauth.authenticate(eauth, user, password)
        except EauthError as exc:
            self._failed(request, str(exc))
            raise ApiError(401, f"Could not authenticate using provided credentials: {exc}") from None
        if identity is None:
            self._failed(request, f"wrong credentials for {user!r} ({eauth})")
            raise ApiError(401, "Could not authenticate using provided credentials")
        perms = self.eauth.perms(identity)
        if not perms:
            self._failed(request, f"{user!r} has no permissions under external_auth: {eauth}")
            raise ApiError(401, f"user {user} has no permissions under external_auth: {eauth}")
        self.failures.pop(request.remote or "?", None)
        self.stats["logins"] += 1
        return self.tokens.create(identity.user, eauth, perms, identity.groups)

    async def run_lowstates(self, lows: list[dict[str, Any]], session: Session) -> list[Any]:
        for low in lows:  # every lowstate is checked before any runs
            await self.runner.check(low, session.perms)
        out: list[Any] = []
        for low in lows:
            out.extend(await self.runner.run(low, session.user))
        return out

    def cookie(self, resp: web.StreamResponse, session: Session) -> None:
        resp.set_cookie("session_id", session.token, path="/", httponly=True, samesite="Lax",
                        secure=self.opts.tls, max_age=int(max(0, session.expire - time.time())))


def _form(text: str) -> dict[str, Any]:
    """A form body; a repeated key (``arg=a&arg=b``) gives a list, as in Salt."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key in out:
            out[key] = out[key] + [value] if isinstance(out[key], list) else [out[key], value]
        else:
            out[key] = value
    return out


class _OwnMetrics:
    """The API's own counters, appended to the master's figures on ``/metrics``."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.api.stats
        yield CounterMetricFamily("saline_api_requests", "HTTP requests served", value=s["requests"])
        yield CounterMetricFamily("saline_api_logins", "Successful logins", value=s["logins"])
        yield CounterMetricFamily("saline_api_failed_logins", "Failed logins", value=s["failed_logins"])
        yield CounterMetricFamily("saline_api_throttled_logins", "Logins refused by the rate limit",
                                  value=s["refused_logins"])
        yield GaugeMetricFamily("saline_api_sessions", "Live sessions", value=len(self.api.tokens))
        yield GaugeMetricFamily("saline_api_event_streams", "Open /events streams", value=s["events_streams"])
        yield CounterMetricFamily("saline_api_event_streams_cut", "Event streams cut off for reading too slowly",
                                  value=s["events_cut"])

    def text(self) -> str:
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry).decode()


# -- middleware --------------------------------------------------------------------------------------
def _cors(request: web.Request) -> dict[str, str]:
    origin = request.headers.get("Origin")
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"} if origin else {}


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    api: Api = request.app[LINK]
    api.stats["requests"] += 1
    if request.method == "OPTIONS":  # CORS preflight
        return web.Response(status=200, headers={
            **_cors(request), "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "X-Auth-Token, Content-Type, Accept, X-Requested-With"})
    try:
        resp = await handler(request)
    except ApiError as exc:
        resp = api.answer(request, {"status": exc.status, "return": exc.message}, exc.status)
    except MasterUnreachable as exc:
        resp = api.answer(request, {"status": 503, "return": str(exc)}, 503)
    except MasterError as exc:
        resp = api.answer(request, {"status": 400, "return": str(exc)}, 400)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = api.answer(request, {"status": exc.status, "return": exc.reason}, exc.status)
    except Exception as exc:
        log.exception("request %s %s failed", request.method, request.path)
        message = f"{type(exc).__name__}: {exc}" if api.opts.debug else "An unexpected error occurred"
        resp = api.answer(request, {"status": 500, "return": message}, 500)
    if not resp.prepared:
        resp.headers.update(_cors(request))
        if api.opts.expire_responses:
            resp.headers.setdefault("Cache-Control", "private")
            resp.headers.setdefault("Expires", "0")
    return resp


# -- handlers ----------------------------------------------------------------------------------------
async def index(request: web.Request) -> web.StreamResponse:
    api: Api = request.app[LINK]
    clients = [c for c in SERVED_CLIENTS if c in api.opts.netapi_enable_clients]
    return api.answer(request, {"return": "Welcome", "clients": clients})


async def lowstate(request: web.Request) -> web.StreamResponse:
    api: Api = request.app[LINK]
    session = api.session(request)
    lows = as_lowstates(await api.body(request))
    return api.answer(request, {"return": await api.run_lowstates(lows, session)})


async def login_get(request: web.Request) -> web.StreamResponse:
    api: Api = request.app[LINK]
    return api.answer(request, {"status": 200, "return": "Please log in"}, headers={"WWW-Authenticate": "Session"})


async def login(request: web.Request) -> web.StreamResponse:
    api: Api = request.app[LINK]
    session = await api.login(request, await api.body(request))
    resp = api.answer(request, {"return": [session.login_answer()]}, headers={"X-Auth-Token": session.token})
    api.cookie(resp, session)
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    api: Api = request.app[LINK]
    session = api.session(request)
    api.tokens.remove(session.token)
    resp = api.answer(request, {"return": "Your token has been cleared"})
    resp.del_cookie("session_id", path="/")
    return resp


async def token(request: web.Request) -> web.StreamResponse:
    api: Api = request.app[LINK]
    session = await api.login(request, await api.body(request))
    return api.answer(request, [session.token_answer()])


async def run(request: web.Request) -> web.StreamResponse:
    """Lowstates carrying their own credentials (``username``/``password``/``eauth``, or ``token``)."""
    api: Api = request.app[LINK]
    lows = as_lowstates(await api.body(request))
    out: list[Any] = []
    for low in lows:
        session = api.tokens.get(low.get("token")) if low.get("token") else None
        if low.get("token") and session is None:
            raise ApiError(401, "The token in the lowstate is not valid: it expired or was logged out")
        if session is None:
            session = await api.login(request, low)
            try:
                out.extend(await api.run_lowstates([low], session))
            finally:
                api.tokens.remove(session.token)  # /run keeps no session behind
            continue
        out.extend(await api.run_lowstates([low], session))
    return api.answer(request, {"return": out})


async def stats(request: web.Request) -> web.StreamResponse:
    api: Api = request.app[LINK]
    api.session(request)
    return api.answer(request, {"saline-api": {**api.stats, "sessions": len(api.tokens),
                                               "uptime_s": round(time.time() - api.started, 1)}})


async def minions_get(request: web.Request) -> web.StreamResponse:
    api: Api = request.app[LINK]
    session = api.session(request)
    mid = request.match_info.get("mid") or "*"
    low = {"client": "local", "tgt": mid, "fun": "grains.items"}
    return api.answer(request, {"return": await api.run_lowstates([low], session)})


async def minions_post(request: web.Request) -> web.StreamResponse:
    api: Api = request.app[LINK]
    session = api.session(request)
    lows = [{**low, "client": "local_async"} for low in as_lowstates(await api.body(request))]
    out = await api.run_lowstates(lows, session)
    links = [{"href": f"/jobs/{r['jid']}"} for r in out if isinstance(r, dict) and r.get("jid")]
    return api.answer(request, {"return": out, "_links": {"jobs": links}}, status=202)


async def jobs(request: web.Request) -> web.StreamResponse:
    api: Api = request.app[LINK]
    session = api.session(request)
    jid = request.match_info.get("jid")
    if not jid:
        low = {"client": "runner", "fun": "jobs.list_jobs"}
        return api.answer(request, {"return": await api.run_lowstates([low], session)})
    low = {"client": "runner", "fun": "jobs.list_job", "jid": jid}
    await api.runner.check(low, session.perms)
    try:
        job = await api.link.runner("jobs.list_job", [jid], {})
    except MasterError:
        job = None
    if not isinstance(job, dict) or "Error" in job:
        raise ApiError(404, f"no job with jid {jid[:40]}")
    returns = {mid: (r.get("return") if isinstance(r, dict) else r) for mid, r in (job.get("Result") or {}).items()}
    return api.answer(request, {"info": [job], "return": [returns]})


async def keys(request: web.Request) -> web.StreamResponse:
    api: Api = request.app[LINK]
    session = api.session(request)
    mid = request.match_info.get("mid")
    low = ({"client": "wheel", "fun": "key.finger", "match": mid} if mid else {"client": "wheel", "fun": "key.list_all"})
    out = await api.run_lowstates([low], session)
    return api.answer(request, {"return": out[0]["data"]["return"]})


async def events(request: web.Request) -> web.StreamResponse:
    api: Api = request.app[LINK]
    session = api.session(request, query=True)
    token_ = session.token
    return await sse.serve(request, api.link, lambda: api.tokens.get(token_) is not None,
                           api.opts.events_buffer_events, api.opts.events_buffer_bytes, _cors(request), api.stats)


async def metrics(request: web.Request) -> web.StreamResponse:
    api: Api = request.app[LINK]
    text = await api.link.metrics() + api.own_metrics.text()
    return web.Response(body=text.encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def build(opts: ApiOptions, pam_service: str = "login") -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=opts.max_request_body_size)
    api = app[LINK] = Api(opts, pam_service)
    r = app.router
    r.add_get("/", index)
    r.add_post("/", lowstate)
    r.add_get("/login", login_get)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_get("/logout", logout)
    r.add_post("/token", token)
    r.add_post("/run", run)
    r.add_get("/stats", stats)
    r.add_get("/minions", minions_get)
    r.add_get("/minions/{mid}", minions_get)
    r.add_post("/minions", minions_post)
    r.add_get("/jobs", jobs)
    r.add_get("/jobs/{jid}", jobs)
    r.add_get("/keys", keys)
    r.add_get("/keys/{mid}", keys)
    r.add_get("/events", events)
    r.add_get("/metrics", metrics)
    if opts.static:
        r.add_static(opts.static_path, opts.static)
    if opts.app:
        async def app_page(request: web.Request) -> web.StreamResponse:
            return web.FileResponse(opts.app)

        r.add_get(opts.app_path, app_page)
        r.add_get(opts.app_path.rstrip("/") + "/{tail:.*}", app_page)

    async def closing(_app: web.Application) -> None:
        api.link.close()
        await api.eauth.close()

    app.on_cleanup.append(closing)
    return app
