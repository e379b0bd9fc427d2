"""The API's options, read from the master config with Salt's names.

``rest_cherrypy:`` holds the server's own (``port``, ``host``, ``ssl_crt``, ``ssl_key``,
``disable_ssl``, ``debug``, ``static``, ``static_path``, ``app``, ``app_path``,
``max_request_body_size``, ``expire_responses``, ``collect_stats``), plus saline's bounds on
failed logins and on an event stream's buffer. At the top level: ``external_auth``,
``token_expire`` and ``netapi_enable_clients``. As in Salt, TLS is on unless ``disable_ssl`` is
true, and then ``ssl_crt`` and ``ssl_key`` are required: no self-signed pair is made behind the
operator's back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saline.config import ConfigError

#: Salt 3006's netapi clients; only those listed in ``netapi_enable_clients`` may be used
KNOWN_CLIENTS = ("local", "local_async", "local_batch", "local_subset", "runner", "runner_async", "ssh",
                 "wheel", "wheel_async")
#: the clients saline serves (``local_subset`` and ``ssh`` are Salt's, not saline's)
SERVED_CLIENTS = ("local", "local_async", "local_batch", "runner", "runner_async", "wheel", "wheel_async")

# option -> (types, default) of the rest_cherrypy block
_REST: dict[str, tuple[tuple[type, ...], Any]] = {
    "port": ((int, str), 8000),
    "host": ((str,), "0.0.0.0"),
    "ssl_crt": ((str,), None),
    "ssl_key": ((str,), None),
    "disable_ssl": ((bool,), False),
    "debug": ((bool,), False),
    "static": ((str,), None),
    "static_path": ((str,), "/static"),
    "app": ((str,), None),
    "app_path": ((str,), "/app"),
    "max_request_body_size": ((int,), 1048576),
    "expire_responses": ((bool,), True),
    "collect_stats": ((bool,), False),
    "thread_pool": ((int,), 100),
    "socket_queue_size": ((int,), 30),
    "webhook_url": ((str,), "/hook"),
    "webhook_disable_auth": ((bool,), False),
    # saline's own
    "max_failed_logins": ((int,), 10),
    "failed_login_window": ((int, float), 60),
    "events_buffer_events": ((int,), 10000),
    "events_buffer_bytes": ((int,), 4 * 1024 * 1024),
}


@dataclass
class ApiOptions:
    port: int = 8000
    host: str = "0.0.0.0"
    ssl_crt: str | None = None
    ssl_key: str | None = None
    disable_ssl: bool = False
    debug: bool = False
    static: str | None = None
    static_path: str = "/static"
    app: str | None = None
    app_path: str = "/app"
    max_request_body_size: int = 1048576
    expire_responses: bool = True
    max_failed_logins: int = 10
    failed_login_window: float = 60.0
    events_buffer_events: int = 10000
    events_buffer_bytes: int = 4 * 1024 * 1024
    external_auth: dict[str, Any] = field(default_factory=dict)
    token_expire: float = 43200.0
    netapi_enable_clients: list[str] = field(default_factory=list)
    sock_dir: str = ""
    token_dir: str = ""
    master_id: str = ""

    @property
    def tls(self) -> bool:
        return not self.disable_ssl


def _path(value: str | None, name: str, source: str) -> str | None:
    if value is None:
        return None
    if not Path(value).exists():
        raise ConfigError(f"{source}: rest_cherrypy: {name} {value} does not exist")
    return value


def _prefix(value: str, name: str, source: str) -> str:
    if not value.startswith("/"):
        raise ConfigError(f"{source}: rest_cherrypy: {name} must start with '/', got {value!r}")
    return "/" + value.strip("/") if value.strip("/") else "/"


def load(opts: dict[str, Any]) -> ApiOptions:
    """ApiOptions from the master's options; ConfigError (one line naming the option) when wrong."""
    source = str(Path(opts.get("config_dir") or ".") / "master")
    rest = opts.get("rest_cherrypy") or {}
    if not isinstance(rest, dict):
        raise ConfigError(f"{source}: rest_cherrypy must be a mapping of option: value")
    values: dict[str, Any] = {}
    for key, value in rest.items():
        if key not in _REST:
            import difflib

            close = difflib.get_close_matches(str(key), list(_REST), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: rest_cherrypy: unknown option '{key}'{hint}")
        types, _ = _REST[key]
        if value is not None and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            names = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{source}: rest_cherrypy: option '{key}' must be {names}, got {value!r}")
        values[key] = value
    try:
        port = int(values.get("port", 8000))
    except ValueError:
        raise ConfigError(f"{source}: rest_cherrypy: port must be a number, got {values['port']!r}") from None
    if not 0 <= port < 65536:
        raise ConfigError(f"{source}: rest_cherrypy: port must be between 0 and 65535, got {port}")
    api = ApiOptions(port=port, host=values.get("host") or "0.0.0.0", disable_ssl=bool(values.get("disable_ssl")),
                     debug=bool(values.get("debug")))
    if api.tls:
        if not values.get("ssl_crt") or not values.get("ssl_key"):
            raise ConfigError(f"{source}: rest_cherrypy: ssl_crt and ssl_key are required unless disable_ssl is "
                              "true (no self-signed pair is generated)")
        api.ssl_crt = _path(values["ssl_crt"], "ssl_crt", source)
        api.ssl_key = _path(values["ssl_key"], "ssl_key", source)
    for name in ("static", "app"):
        value = values.get(name)
        if value is not None:
            setattr(api, name, _path(value, name, source))
    api.static_path = _prefix(values.get("static_path") or "/static", "static_path", source)
    api.app_path = _prefix(values.get("app_path") or "/app", "app_path", source)
    for name in ("max_request_body_size", "max_failed_logins", "events_buffer_events", "events_buffer_bytes"):
        if name in values:
            setattr(api, name, int(values[name]))
    if "failed_login_window" in values:
        api.failed_login_window = float(values["failed_login_window"])
    if "expire_responses" in values:
        api.expire_responses = bool(values["expire_responses"])
    eauth = opts.get("external_auth") or {}
    if not isinstance(eauth, dict) or not all(isinstance(v, dict) for v in eauth.values()):
        raise ConfigError(f"{source}: external_auth must map each eauth (pam, file, rest) to its users")
    api.external_auth = eauth
    api.token_expire = float(opts.get("token_expire") or 43200)
    clients = opts.get("netapi_enable_clients") or []
    unknown = [c for c in clients if c not in KNOWN_CLIENTS]
    if unknown:
        raise ConfigError(f"{source}: netapi_enable_clients: unknown client {unknown[0]!r} "
                          f"(clients: {', '.join(KNOWN_CLIENTS)})")
    api.netapi_enable_clients = list(clients)
    api.sock_dir = str(opts["sock_dir"])
    api.token_dir = str(Path(opts["cachedir"]) / "tokens")
    api.master_id = str(opts.get("id") or "")
    return api
