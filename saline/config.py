"""Master and minion configuration: Salt's option names, defaults, validation and loading.

A config folder holds the YAML files ``master`` and ``minion`` (plus ``master.d/*.conf`` and
``minion.d/*.conf``). Unknown keys only warn (Salt configs carry many keys saline does not use);
a wrong type or a missing required value raises :class:`ConfigError` naming the key and file.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DEFAULT_CONFIG_DIR = "/etc/saline"


class ConfigError(Exception):
    """A configuration problem, with a message fit to print as one line."""


# name -> (accepted types, default). ``None`` as default means "unset".
_COMMON: dict[str, tuple[tuple[type, ...], Any]] = {
    "id": ((str,), None),
    "root_dir": ((str,), "/"),
    "interface": ((str,), "0.0.0.0"),
    "publish_port": ((int,), 4505),
    "ret_port": ((int,), 4506),
    "pki_dir": ((str,), None),
    "cachedir": ((str,), None),
    "sock_dir": ((str,), None),
    "pidfile": ((str,), None),
    "log_level": ((str,), "warning"),
    "log_level_logfile": ((str,), None),
    "log_file": ((str,), None),
    "timeout": ((int, float), 5),
    "unique_jid": ((bool,), False),
    "max_frame_size": ((int,), 16 * 1024 * 1024),
    "return": ((str, list), None),
    "returner_dirs": ((list, str), []),
    "module_dirs": ((list, str), []),
    "keep_jobs": ((int, float), 24),
    "keep_jobs_seconds": ((int, float), None),
    "archive_jobs": ((bool,), False),
}

MASTER_OPTIONS: dict[str, tuple[tuple[type, ...], Any]] = {
    **_COMMON,
    "open_mode": ((bool,), False),
    "auto_accept": ((bool,), False),
    "master_job_cache": ((str,), None),  # saline_cache, or nats in a cluster (see _finish)
    "ext_job_cache": ((str,), None),
    "job_cache": ((bool,), True),
    "event_return": ((str, list), None),
    "event_return_queue": ((int,), 0),
    "event_return_queue_max_seconds": ((int, float), 0),
    "event_return_whitelist": ((list,), []),
    "event_return_blacklist": ((list,), []),
    "master_id": ((str,), None),
    "gather_job_timeout": ((int, float), 10),
    "loop_interval": ((int, float), 60),
    "returner_batch_size": ((int,), 4000),
    "returner_batch_wait_ms": ((int, float), 20),
    "returner_retry_max_seconds": ((int, float), 60),
    "returner_dead_after_seconds": ((int, float), 86400),
    "returners_on_minion": ((bool,), False),
    "returner_processes": ((bool,), True),
    "nodegroups": ((dict,), {}),
    # Salt's scheduler (runners on the master)
    "schedule": ((dict,), {}),
    "schedule_returner": ((str, list), None),
    # trust on first use: the master's public key served on a port of its own
    "serve_master_pub": ((bool,), True),
    "master_pub_port": ((int,), 4507),
    # several masters on one NATS JetStream cluster (docs/scale-out.md)
    "cluster_id": ((str,), None),
    "nats_servers": ((list, str), None),
    "nats_user": ((str,), None),
    "nats_password": ((str,), None),
    "nats_nkey_seed": ((str,), None),
    "nats_creds": ((str,), None),
    "nats_tls_ca": ((str,), None),
    "nats_tls_cert": ((str,), None),
    "nats_tls_key": ((str,), None),
    "nats_replicas": ((int,), None),
    "nats_connect_timeout": ((int, float), 5),
    "nats_setup_timeout": ((int, float), 60),
    "nats_ack_wait": ((int, float), 60),
    "master_delivers": ((bool,), True),
    # what unknown keys may make the master write
    "max_pending_keys": ((int,), 5000),
    "pending_hellos_per_second": ((int, float), 100),
    # saline-api (Salt's salt-api options) and the master's own /metrics listener
    "rest_cherrypy": ((dict,), {}),
    "external_auth": ((dict,), {}),
    "token_expire": ((int, float), 43200),
    "netapi_enable_clients": ((list,), []),
    "api_logfile": ((str,), None),
    "api_pidfile": ((str,), None),
    "metrics_port": ((int,), None),
    "metrics_host": ((str,), None),
}

MINION_OPTIONS: dict[str, tuple[tuple[type, ...], Any]] = {
    **_COMMON,
    "master": ((str, list), "salt"),
    "master_port": ((int,), 4506),
    # several masters (saline/minion/link.py): Salt's hot multi-master, or failover
    "master_type": ((str,), "str"),
    "master_alive_interval": ((int, float), 30),
    "master_failback": ((bool,), False),
    "master_failback_interval": ((int, float), 0),
    "random_master": ((bool,), False),
    "master_pub": ((str,), None),
    "master_pub_port": ((int,), 4507),
    "master_finger": ((str,), None),
    "grains": ((dict,), {}),
    "acceptance_wait_time": ((int, float), 10),
    "ping_interval": ((int, float), 10),
    "spool_resend_seconds": ((int, float), 5),
    "job_timeout": ((int, float), 0),
    "pub_ret": ((bool,), True),
    # Salt's scheduler and beacons; returners_on_minion: scheduled returns go to their returners
    # through this minion's own outbox instead of through the master
    "schedule": ((dict,), {}),
    "schedule_returner": ((str, list), None),
    "returners_on_minion": ((bool,), False),
    "beacons": ((dict,), {}),
}

_ROLE_DEFAULT_DIRS = {
    "master": {"pki_dir": "/etc/saline/pki/master", "cachedir": "/var/cache/saline/master",
               "sock_dir": "/var/run/saline/master", "pidfile": "/var/run/saline-master.pid",
               "log_file": "/var/log/saline/master"},
    "minion": {"pki_dir": "/etc/saline/pki/minion", "cachedir": "/var/cache/saline/minion",
               "sock_dir": "/var/run/saline/minion", "pidfile": "/var/run/saline-minion.pid",
               "log_file": "/var/log/saline/minion"},
}


def schema(role: str) -> dict[str, tuple[tuple[type, ...], Any]]:
    return MASTER_OPTIONS if role == "master" else MINION_OPTIONS


def config_dir(cli_value: str | None = None) -> Path:
    return Path(cli_value or os.environ.get("SALINE_CONFIG_DIR") or DEFAULT_CONFIG_DIR)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of option: value")
    return data


def _is_returner_key(key: str, value: Any) -> bool:
    """Keys that belong to returners (``mysql.host``, ``mysql: {...}``, ``alt.mysql.host``)."""
    from saline.returners.builtin import BUILTIN

    if "." in key:
        return True  # dotted keys are returner or profile options; validated by the returner
    return key in BUILTIN or key == "returner" or (isinstance(value, dict) and key not in MASTER_OPTIONS)


def validate(role: str, opts: dict[str, Any], source: str) -> None:
    """Warn about unknown keys; raise ConfigError on a wrong type."""
    known = schema(role)
    for key, value in opts.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: option names must be strings, got {key!r}")
        if key not in known:
            if _is_returner_key(key, value):
                continue
            import difflib  # only when an option is unknown

            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            log.warning("%s: unknown option '%s'%s; ignored", source, key, hint)
            continue
        types, _default = known[key]
        if value is None:
            continue
        if bool in types or not isinstance(value, bool):
            ok = isinstance(value, types)
        else:
            ok = False  # YAML's true/false must not pass as a number
        if not ok:
            names = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{source}: option '{key}' must be {names}, got {type(value).__name__} {value!r}")


def _defaults(role: str) -> dict[str, Any]:
    return {k: (list(v[1]) if isinstance(v[1], list) else dict(v[1]) if isinstance(v[1], dict) else v[1])
            for k, v in schema(role).items()}


def under_root(root: str | Path, path: str) -> str:
    """``path`` inside ``root`` (Salt's ``root_dir``): ``/var/cache/x`` under ``/srv/r`` is
    ``/srv/r/var/cache/x``; a relative path is taken from the root too."""
    root = Path(root)
    if str(root) in ("", "/"):
        return str(Path("/") / path)
    return str(root / Path(path).relative_to("/")) if Path(path).is_absolute() else str(root / path)


def _apply_root(role: str, opts: dict[str, Any]) -> None:
    """Salt's ``root_dir``: the default paths (pki, cache, sockets, pid and log files) live under
    it, and so does a path given relative; an absolute path given by the user stays as it is."""
    root = opts.get("root_dir") or "/"
    for key, default in _ROLE_DEFAULT_DIRS[role].items():
        value = opts.get(key)
        if value is None or value == default:
            opts[key] = under_root(root, default)
        elif isinstance(value, str) and not Path(value).is_absolute():
            opts[key] = under_root(root, value)


def load_config(role: str, cfg_dir: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read ``<cfg_dir>/<role>`` and ``<cfg_dir>/<role>.d/*.conf`` over the defaults."""
    folder = Path(cfg_dir) if cfg_dir else config_dir()
    opts = _defaults(role)
    opts.update(_ROLE_DEFAULT_DIRS[role])
    if os.environ.get("SALINE_ROOT_DIR"):  # a private root (tests, the demo) without a config key
        opts["root_dir"] = os.environ["SALINE_ROOT_DIR"]
    files = [folder / role] + sorted((folder / f"{role}.d").glob("*.conf"))
    for path in files:
        if not path.exists():
            continue
        data = _read_yaml(path)
        validate(role, data, str(path))
        opts.update(data)
    if overrides:
        validate(role, overrides, "command line")
        opts.update({k: v for k, v in overrides.items() if v is not None})
    opts["config_dir"] = str(folder)
    _apply_root(role, opts)
    _finish(role, opts)
    return opts


def _finish(role: str, opts: dict[str, Any]) -> None:
    if not opts.get("id"):
        opts["id"] = socket.getfqdn() if role == "minion" else f"{socket.gethostname()}_master"
    if role == "master" and not opts.get("master_id"):
        opts["master_id"] = opts["id"]
    if role == "master" and not opts.get("master_job_cache"):
        # a cluster's job cache is its stream, the same on every master; a single master's, its outbox
        opts["master_job_cache"] = "nats" if opts.get("nats_servers") else "saline_cache"
    if opts.get("keep_jobs_seconds") is None:
        opts["keep_jobs_seconds"] = int(float(opts.get("keep_jobs") or 0) * 3600)
    for key in ("returner_dirs", "module_dirs"):
        if isinstance(opts.get(key), str):
            opts[key] = [opts[key]]
    ret = opts.get("return")
    if isinstance(ret, list):
        opts["return"] = ",".join(str(r) for r in ret)
    for key in ("publish_port", "ret_port", "master_port"):
        port = opts.get(key)
        if port is not None and not 0 < int(port) < 65536:
            raise ConfigError(f"option '{key}' must be a port number between 1 and 65535, got {port}")


def returner_names(value: Any) -> list[str]:
    """A returner selection (``"a,b"``, ``["a", "b"]``, None) as an ordered, de-duplicated list."""
    if not value:
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    seen: list[str] = []
    for item in items:
        name = str(item).strip()
        if name and name not in seen:
            seen.append(name)
    return seen
