"""Salt's beacons: the minion watches something and fires ``salt/beacon/<id>/<beacon>/`` events.

Configured as in Salt, a list of one-key maps per beacon (plain maps are read too)::

    beacons:
      load:
        - averages: {1m: [0.0, 2.0]}
        - interval: 10
      diskusage:
        - /: 90%
      inotify:
        - files: {/etc/important: {mask: [modify]}}

Every beacon takes ``interval`` (seconds between checks; 1 by default, Salt's minion loop),
``enabled`` and ``beacon_module`` (run a beacon under another name, to configure it twice).
Each check returns a list of events; an event's ``tag`` (when it has one) is appended to
``salt/beacon/<id>/<name>/``, and ``id`` is the minion's id, as in Salt. The minion sends them to
the master as ``_minion_event`` messages; the master fires them on its event bus, so
``event_return`` stores them and ``saline-run state.event`` shows them. Like Salt's, beacon events
are sent once: one made while the master is unreachable is not kept.

:class:`Beacons` holds the configuration and each beacon's state (what it saw last) and is
driven by :meth:`Beacons.process` (one pass over the due beacons), which the minion calls from a
thread; the ``beacons.*`` module changes it at run time.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import re
import threading
import time
import weakref
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)

SAVE_FILE = Path("minion.d") / "beacons.conf"
#: options every beacon takes, handled here rather than by the beacon
COMMON = ("interval", "enabled", "beacon_module", "disable_during_state_run")
DEFAULT_INTERVAL = 1.0


class BeaconError(Exception):
    """A beacon configuration that cannot be used; one line."""


def merge(config: Any, name: str = "beacon") -> dict[str, Any]:
    """Salt's list-of-maps form (``[{a: 1}, {b: 2}]``) as one map; a plain map as it is."""
    if isinstance(config, dict):
        return dict(config)
    if not isinstance(config, list):
        raise BeaconError(f"beacon {name}: configuration must be a list of maps (Salt's form)")
    out: dict[str, Any] = {}
    for item in config:
        if not isinstance(item, dict):
            raise BeaconError(f"beacon {name}: configuration must be a list of maps, got {item!r}")
        out.update(item)
    return out


def _percent(value: Any, what: str) -> float:
    text = str(value).strip().rstrip("%")
    try:
        number = float(text)
    except ValueError:
        raise BeaconError(f"{what}: {value!r} is not a percentage (e.g. 90%)") from None
    if not 0 <= number <= 100:
        raise BeaconError(f"{what}: {value!r} is not between 0% and 100%")
    return number


# -- the beacons -----------------------------------------------------------------------------------

class Beacon(ABC):
    """One beacon module: ``validate`` the merged config (raise BeaconError), ``check`` it."""

    def __init__(self, name: str, config: dict[str, Any], minion_id: str) -> None:
        self.name = name
        self.config = config
        self.minion_id = minion_id
        self.validate()

    def validate(self) -> None:
        """Raise BeaconError for a configuration this beacon cannot use."""

    @abstractmethod
    def check(self) -> list[dict[str, Any]]:
        """The events to fire now (each a dict of the event's data), or none."""

    def close(self) -> None:
        """Release what the beacon holds (inotify watches)."""


class LoadBeacon(Beacon):
    """``load``: fires the load averages when one is outside its ``averages`` range
    (``1m: [low, high]``); ``onchangeonly`` fires only when that changes; ``emitatstartup``
    (default True) fires the first check."""

    KEYS = ("1m", "5m", "15m")

    def validate(self) -> None:
        averages = self.config.get("averages")
        if not isinstance(averages, dict) or not averages:
            raise BeaconError("beacon load: 'averages' must be a map of 1m/5m/15m: [low, high]")
        for key, bounds in averages.items():
            if key not in self.KEYS:
                raise BeaconError(f"beacon load: unknown average {key!r} (1m, 5m, 15m)")
            if (not isinstance(bounds, list) or len(bounds) != 2
                    or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)):
                raise BeaconError(f"beacon load: {key} must be [low, high], got {bounds!r}")
        self.first = True
        self.last_outside: bool | None = None

    def check(self) -> list[dict[str, Any]]:
        values = dict(zip(self.KEYS, os.getloadavg()))
        outside = any(not low <= values[k] <= high for k, (low, high) in self.config["averages"].items())
        fire = outside
        if self.config.get("onchangeonly", False):
            fire = self.last_outside is not None and outside != self.last_outside
        if self.first and self.config.get("emitatstartup", True):
            fire = True
        self.first, self.last_outside = False, outside
        return [values] if fire else []


class DiskUsageBeacon(Beacon):
    """``diskusage``: fires ``{"diskusage": percent, "mount": mount}`` for each mount point (a
    path, or a regular expression matched against the mount points) at or above its threshold."""

    def validate(self) -> None:
        self.thresholds = {}
        for mount, limit in self.config.items():
            if mount in COMMON:
                continue
            self.thresholds[str(mount)] = _percent(limit, f"beacon diskusage: {mount}")
        if not self.thresholds:
            raise BeaconError("beacon diskusage: give mount points and thresholds, e.g. - /: 90%")

    def check(self) -> list[dict[str, Any]]:
        import psutil

        mounts = [p.mountpoint for p in psutil.disk_partitions(all=False)]
        events = []
        for pattern, limit in self.thresholds.items():
            chosen = [pattern] if pattern in mounts or os.path.ismount(pattern) else \
                [m for m in mounts if re.fullmatch(pattern, m)]
            for mount in chosen:
                try:
                    used = psutil.disk_usage(mount).percent
                except OSError:
                    continue
                if used >= limit:
                    events.append({"diskusage": used, "mount": mount})
        return events


class MemUsageBeacon(Beacon):
    """``memusage``: fires ``{"memusage": percent}`` when the memory in use reaches ``percent``."""

    def validate(self) -> None:
        if "percent" not in self.config:
            raise BeaconError("beacon memusage: 'percent' is required, e.g. - percent: 90%")
        self.limit = _percent(self.config["percent"], "beacon memusage: percent")

    def check(self) -> list[dict[str, Any]]:
        import psutil

        used = psutil.virtual_memory().percent
        return [{"memusage": used}] if used >= self.limit else []


class ServiceBeacon(Beacon):
    """``service``: for each service in ``services``, fires ``{<name>: {"running": bool},
    "service_name": <name>}`` (tag: the name) at every check, or with ``onchangeonly`` only when
    it starts or stops. Uses the ``service`` module (systemd, or init scripts without systemd)."""

    def validate(self) -> None:
        services = self.config.get("services")
        if not isinstance(services, dict) or not services:
            raise BeaconError("beacon service: 'services' must be a map of service name: options")
        for name, options in services.items():
            if options is not None and not isinstance(options, dict):
                raise BeaconError(f"beacon service: the options of {name} must be a map")
        self.last: dict[str, bool] = {}

    def check(self) -> list[dict[str, Any]]:
        from saline.modules import service
        from saline.modules.errors import CommandExecutionError

        events = []
        for name, options in self.config["services"].items():
            options = options or {}
            try:
                running = bool(service.status(name))
            except CommandExecutionError as exc:
                log.warning("beacon service: %s", exc)
                continue
            before = self.last.get(name)
            self.last[name] = running
            if options.get("onchangeonly", False):
                first = before is None
                if (first and not options.get("emitatstartup", True)) or (not first and before == running):
                    continue
            events.append({"tag": name, name: {"running": running}, "service_name": name})
        return events


_INOTIFY_MASKS = ("access", "attrib", "close_nowrite", "close_write", "create", "delete", "delete_self",
                  "modify", "move_self", "moved_from", "moved_to", "open")


class InotifyBeacon(Beacon):
    """``inotify``: watches ``files`` (``{path: {mask: [create, modify, ...], recurse, auto_add,
    exclude}}``) and fires ``{"path": file, "change": "IN_MODIFY"}`` per change, tagged with the
    watched path, as Salt does."""

    def validate(self) -> None:
        try:
            import inotify_simple
        except ImportError:
            raise BeaconError("beacon inotify: inotify_simple is not installed (pip install inotify_simple)") from None
        files = self.config.get("files")
        if not isinstance(files, dict) or not files:
            raise BeaconError("beacon inotify: 'files' must be a map of path: options")
        flags = inotify_simple.flags
        self.inotify = inotify_simple.INotify(nonblocking=True)
        self.watches: dict[int, tuple[str, dict[str, Any]]] = {}
        try:
            for path, options in files.items():
                options = options or {}
                if not isinstance(options, dict):
                    raise BeaconError(f"beacon inotify: the options of {path} must be a map")
                masks = options.get("mask") or ["create", "delete", "modify"]
                if isinstance(masks, str):
                    masks = [masks]
                bad = [m for m in masks if str(m).lower() not in _INOTIFY_MASKS]
                if bad:
                    raise BeaconError(f"beacon inotify: unknown mask {bad[0]!r} ({', '.join(_INOTIFY_MASKS)})")
                mask = 0
                for item in masks:
                    mask |= getattr(flags, str(item).upper())
                self._watch(str(path), mask, options)
        except BeaconError:
            self.close()
            raise

    def _watch(self, path: str, mask: int, options: dict[str, Any]) -> None:
        import inotify_simple

        add = mask | (inotify_simple.flags.CREATE if options.get("auto_add") else 0)
        try:
            wd = self.inotify.add_watch(path, add)
        except OSError as exc:
            raise BeaconError(f"beacon inotify: cannot watch {path}: {exc.strerror}") from None
        self.watches[wd] = (path, {**options, "_mask": mask})
        if options.get("recurse") and os.path.isdir(path):
            for entry in sorted(os.scandir(path), key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False):
                    self._watch(entry.path, mask, options)

    def check(self) -> list[dict[str, Any]]:
        import inotify_simple

        flags = inotify_simple.flags
        events = []
        for event in self.inotify.read(timeout=0):
            watched = self.watches.get(event.wd)
            if watched is None:
                continue
            folder, options = watched
            path = os.path.join(folder, event.name) if event.name else folder
            if any(re.search(str(x), path) if options.get("regex") else path.startswith(str(x))
                   for x in options.get("exclude") or []):
                continue
            if options.get("auto_add") and event.mask & flags.CREATE and event.mask & flags.ISDIR:
                self._watch(path, options["_mask"], options)
            if not event.mask & options["_mask"]:
                continue
            names = [f.name for f in flags.from_mask(event.mask) if f is not flags.ISDIR]
            events.append({"tag": folder, "path": path, "change": "IN_" + names[0] if names else hex(event.mask)})
        return events

    def close(self) -> None:
        inotify = getattr(self, "inotify", None)
        if inotify is not None:
            inotify.close()
            self.inotify = None


class StatusBeacon(Beacon):
    """``status``: fires ``{"data": {function: result}}`` of ``status.*`` functions, all of each
    result (``- loadavg: all``) or some keys (``- loadavg: [1-min]``); tagged with the time.
    With no function named: loadavg, cpustats and meminfo."""

    DEFAULT = {"loadavg": ["all"], "cpustats": ["all"], "meminfo": ["all"]}

    def validate(self) -> None:
        from saline.modules import status

        self.functions = {k: v for k, v in self.config.items() if k not in COMMON} or dict(self.DEFAULT)
        for func in self.functions:
            if not callable(getattr(status, str(func), None)) or str(func).startswith("_"):
                raise BeaconError(f"beacon status: status.{func} is not available")

    def check(self) -> list[dict[str, Any]]:
        import datetime as dt

        from saline.modules import status
        from saline.modules.errors import CommandExecutionError

        data: dict[str, Any] = {}
        for func, items in self.functions.items():
            try:
                result = getattr(status, func)()
            except CommandExecutionError as exc:
                log.debug("beacon status: status.%s failed: %s", func, exc)
                continue
            items = items if isinstance(items, list) else [items]
            if "all" in items or not items:
                data[func] = result
                continue
            picked: dict[str, Any] = {}
            for item in items:
                try:
                    picked[str(item)] = result[item] if not isinstance(result, list) else result[int(item)]
                except (KeyError, IndexError, ValueError, TypeError):
                    picked[str(item)] = None
            data[func] = picked
        stamp = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat()
        return [{"tag": stamp, "data": data}]


BEACONS: dict[str, type[Beacon]] = {
    "load": LoadBeacon, "diskusage": DiskUsageBeacon, "memusage": MemUsageBeacon, "service": ServiceBeacon,
    "inotify": InotifyBeacon, "status": StatusBeacon,
}


# -- the set of beacons ------------------------------------------------------------------------------

class Beacons:
    """The configured beacons of one minion and what each saw last; thread-safe."""

    def __init__(self, config: Any, minion_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.minion_id = minion_id
        self.clock = clock
        self.lock = threading.RLock()
        self.enabled = True
        self.errors: dict[str, str] = {}
        self._raw: dict[str, Any] = {}
        self._active: dict[str, Beacon] = {}
        self._next: dict[str, float] = {}
        self.changed: Callable[[], None] = lambda: None  # wakes the loop when beacons change
        self.load(config or {})

    def load(self, config: Any) -> None:
        if not isinstance(config, dict):
            raise BeaconError(f"beacons: must be a map of beacon name: options, got {type(config).__name__}")
        with self.lock:
            self.close()
            self.enabled = config.get("enabled", True) is not False
            self.errors.clear()
            for name, raw in config.items():
                if name == "enabled":
                    continue
                try:
                    self._install(str(name), raw)
                except BeaconError as exc:
                    self.errors[str(name)] = str(exc)
                    log.error("%s", exc)

    def _build(self, name: str, raw: Any) -> tuple[dict[str, Any], Beacon | None]:
        merged = merge(raw, name)
        module = str(merged.get("beacon_module") or name)
        cls = BEACONS.get(module)
        if cls is None:
            raise BeaconError(f"Beacon {module} is not available (beacons: {', '.join(sorted(BEACONS))})")
        interval = merged.get("interval", DEFAULT_INTERVAL)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise BeaconError(f"beacon {name}: 'interval' must be a number of seconds, got {interval!r}")
        if merged.get("enabled", True) is False:
            return merged, None
        return merged, cls(name, {k: v for k, v in merged.items() if k not in COMMON}, self.minion_id)

    def _install(self, name: str, raw: Any) -> None:
        merged, beacon = self._build(name, raw)
        self._raw[name] = raw
        if beacon is not None:
            self._active[name] = beacon
            self._next[name] = self.clock()
            self.changed()

    # -- changes (the beacons.* module) ------------------------------------------------------------
    def names(self) -> list[str]:
        with self.lock:
            return list(self._raw)

    def config(self) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = copy.deepcopy(self._raw)
            if not self.enabled:
                out["enabled"] = False
            return out

    def validate(self, name: str, raw: Any) -> None:
        """Raise BeaconError when ``raw`` is not a usable configuration for beacon ``name``."""
        _merged, beacon = self._build(name, raw)
        if beacon is not None:
            beacon.close()

    def add(self, name: str, raw: Any) -> None:
        with self.lock:
            if name in self._raw:
                raise BeaconError(f"Beacon {name} is already configured.")
            self._install(name, raw)

    def modify(self, name: str, raw: Any) -> None:
        with self.lock:
            if name not in self._raw:
                raise BeaconError(f"Beacon {name} is not configured.")
            self.validate(name, raw)
            self._remove(name)
            self._install(name, raw)

    def delete(self, name: str) -> None:
        with self.lock:
            if name not in self._raw:
                raise BeaconError(f"Beacon {name} is not configured.")
            self._remove(name)

    def _remove(self, name: str) -> None:
        self._raw.pop(name, None)
        self._next.pop(name, None)
        beacon = self._active.pop(name, None)
        if beacon is not None:
            beacon.close()

    def set_beacon_enabled(self, name: str, enabled: bool) -> None:
        """Salt keeps this in the beacon's list as ``- enabled: false``."""
        with self.lock:
            if name not in self._raw:
                raise BeaconError(f"Beacon {name} is not configured.")
            raw = self._raw[name]
            items = [{k: v} for k, v in raw.items()] if isinstance(raw, dict) else list(raw)
            new = [i for i in items if not (isinstance(i, dict) and set(i) == {"enabled"})]
            if not enabled:
                new.append({"enabled": False})
            self._remove(name)
            self._install(name, new)

    def set_enabled(self, enabled: bool) -> None:
        with self.lock:
            self.enabled = enabled
        self.changed()

    # -- running ---------------------------------------------------------------------------------
    def process(self) -> list[dict[str, Any]]:
        """Check every due beacon once; their events as ``{"tag", "data"}``. A beacon that fails
        is logged (one line) and tried again at its next interval."""
        now = self.clock()
        out: list[dict[str, Any]] = []
        with self.lock:
            if not self.enabled:
                return out
            for name, beacon in list(self._active.items()):
                if self._next.get(name, now) > now:
                    continue
                interval = float(merge(self._raw[name], name).get("interval", DEFAULT_INTERVAL))
                self._next[name] = now + interval
                try:
                    events = beacon.check()
                except Exception as exc:  # a beacon's failure must not stop the others
                    log.warning("beacon %s failed: %s: %s", name, type(exc).__name__, exc)
                    continue
                for event in events:
                    data = dict(event)
                    tag = f"salt/beacon/{self.minion_id}/{name}/" + str(data.pop("tag", ""))
                    data.setdefault("id", self.minion_id)
                    out.append({"tag": tag, "data": data})
        return out

    def sleep_for(self) -> float | None:
        """Seconds until a beacon is due; None when none is active (sleep until a change)."""
        now = self.clock()
        with self.lock:
            if not self.enabled or not self._active:
                return None
            waits = [t - now for name, t in self._next.items() if name in self._active]
        return max(0.05, min([DEFAULT_INTERVAL, *waits]))

    def close(self) -> None:
        with self.lock:
            for beacon in self._active.values():
                beacon.close()
            self._active.clear()
            self._raw.clear()
            self._next.clear()


def save(opts: dict[str, Any], config: dict[str, Any]) -> Path:
    """Write the beacons to ``<config_dir>/minion.d/beacons.conf`` (Salt's file), read at start."""
    import yaml

    folder = opts.get("config_dir")
    if not folder:
        raise BeaconError("the minion's config folder is not known; cannot save the beacons")
    path = Path(folder) / SAVE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"beacons": config}, default_flow_style=False, sort_keys=True))
    os.replace(tmp, path)
    opts["beacons"] = config
    return path


class MinionLike(Protocol):
    id: str
    opts: dict[str, Any]

    def _send(self, message: dict[str, Any]) -> None: ...


_LIVE: "weakref.WeakValueDictionary[str, MinionBeacons]" = weakref.WeakValueDictionary()


def live(minion_id: str) -> "MinionBeacons | None":
    """The running beacons of minion ``minion_id`` in this process (for ``beacons.*``)."""
    return _LIVE.get(minion_id)


class MinionBeacons:
    """The minion's ``beacons:``, checked in a worker thread, their events sent to the master."""

    def __init__(self, minion: MinionLike) -> None:
        self.minion = minion
        self.opts = minion.opts
        self.beacons = Beacons(self.opts.get("beacons") or {}, minion.id)
        _LIVE[minion.id] = self

    def save(self) -> Path:
        return save(self.opts, self.beacons.config())

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        self.beacons.changed = lambda: loop.call_soon_threadsafe(wake.set)
        try:
            while True:
                wake.clear()  # before looking: a change made after this still wakes the loop
                wait = self.beacons.sleep_for()
                if wait is None:  # no beacon: nothing to do until beacons.add or enable
                    await wake.wait()
                    continue
                await asyncio.sleep(wait)
                events = await loop.run_in_executor(None, self.beacons.process)
                for event in events:
                    self.minion._send({"cmd": "_minion_event", "tag": event["tag"], "data": event["data"]})
        finally:
            self.beacons.close()
