"""The ``beacons`` module: see and change the minion's beacons (Salt's ``beacons.*``).

Run as a job it changes the running minion's beacons at once; ``beacons.save`` writes them to
``minion.d/beacons.conf`` in the config folder (read at start), as Salt does. Run where no minion
is running (``saline-call --local``) it works on that file. Results are Salt's
``{"result": bool, "comment": str}``; a failure is ``result: False`` with a one-line comment.
"""

from __future__ import annotations

from typing import Any

from saline.minion import beacons as bcn
from saline.modules.context import current

__func_alias__ = {"list_": "list"}


class _Offline:
    """The saved beacons (no minion running in this process); every change is saved."""

    def __init__(self, opts: dict[str, Any]) -> None:
        self.opts = opts
        config = opts.get("beacons") or {}
        self.beacons = bcn.Beacons(config if isinstance(config, dict) else {}, str(opts.get("id")))

    def save(self) -> Any:
        try:
            return bcn.save(self.opts, self.beacons.config())
        finally:
            self.beacons.close()  # no watches left behind by a one-off call


def _target() -> Any:
    opts = current().opts
    return bcn.live(str(opts.get("id"))) or _Offline(opts)


def _done(target: Any, comment: str) -> dict[str, Any]:
    if isinstance(target, _Offline):
        try:
            target.save()
        except (OSError, bcn.BeaconError) as exc:
            return {"comment": f"{comment} But it was not saved: {exc}", "result": False}
    return {"comment": comment, "result": True}


def _fail(comment: str) -> dict[str, Any]:
    return {"comment": comment, "result": False}


def _yaml(key: str, value: Any, return_yaml: bool) -> Any:
    if not return_yaml:
        return value
    import yaml

    return yaml.safe_dump({key: value}, default_flow_style=False)


def list_(return_yaml: bool = True, include_pillar: bool = True, include_opts: bool = True) -> Any:
    """List the beacons configured on the minion (YAML, or a map with ``return_yaml=False``).

    CLI Example::

        saline '*' beacons.list
    """
    target = _target()
    config = target.beacons.config()
    if isinstance(target, _Offline):
        target.beacons.close()
    if not config:
        return {"beacons": {}}
    return _yaml("beacons", config, bool(return_yaml))


def list_available(return_yaml: bool = True) -> Any:
    """List the beacons this minion can run.

    CLI Example::

        saline '*' beacons.list_available
    """
    return _yaml("beacons", sorted(bcn.BEACONS), bool(return_yaml))


def add(name: Any, beacon_data: Any, **kwargs: Any) -> dict[str, Any]:
    """Add a beacon: ``beacon_data`` is its configuration in Salt's list-of-maps form.

    CLI Example::

        saline '*' beacons.add diskusage "[{'/': '90%'}, {'interval': 60}]"
    """
    target = _target()
    try:
        target.beacons.add(str(name), beacon_data)
    except bcn.BeaconError as exc:
        if "already configured" in str(exc) or "not available" in str(exc):
            return _fail(str(exc))
        return _fail(f"Beacon {name} configuration invalid, not adding: {exc}")
    return _done(target, f"Added beacon: {name}.")


def modify(name: Any, beacon_data: Any, **kwargs: Any) -> dict[str, Any]:
    """Replace a beacon's configuration.

    CLI Example::

        saline '*' beacons.modify diskusage "[{'/': '95%'}]"
    """
    target = _target()
    try:
        target.beacons.modify(str(name), beacon_data)
    except bcn.BeaconError as exc:
        if "not configured" in str(exc):
            return _fail(str(exc))
        return _fail(f"Beacon {name} configuration invalid, not modifying: {exc}")
    return _done(target, f"Modified beacon: {name}.")


def delete(name: Any, **kwargs: Any) -> dict[str, Any]:
    """Delete a beacon.

    CLI Example::

        saline '*' beacons.delete diskusage
    """
    target = _target()
    try:
        target.beacons.delete(str(name))
    except bcn.BeaconError as exc:
        return _fail(str(exc))
    return _done(target, f"Deleted beacon: {name}.")


def enable(**kwargs: Any) -> dict[str, Any]:
    """Enable every beacon.

    CLI Example::

        saline '*' beacons.enable
    """
    target = _target()
    target.beacons.set_enabled(True)
    return _done(target, "Enabled beacons on minion.")


def disable(**kwargs: Any) -> dict[str, Any]:
    """Disable every beacon (they stay configured).

    CLI Example::

        saline '*' beacons.disable
    """
    target = _target()
    target.beacons.set_enabled(False)
    return _done(target, "Disabled beacons on minion.")


def enable_beacon(name: Any, **kwargs: Any) -> dict[str, Any]:
    """Enable one beacon.

    CLI Example::

        saline '*' beacons.enable_beacon diskusage
    """
    target = _target()
    try:
        target.beacons.set_beacon_enabled(str(name), True)
    except bcn.BeaconError as exc:
        return _fail(str(exc))
    return _done(target, f"Enabled beacon {name} on minion.")


def disable_beacon(name: Any, **kwargs: Any) -> dict[str, Any]:
    """Disable one beacon (it stays configured, with ``- enabled: false``).

    CLI Example::

        saline '*' beacons.disable_beacon diskusage
    """
    target = _target()
    try:
        target.beacons.set_beacon_enabled(str(name), False)
    except bcn.BeaconError as exc:
        return _fail(str(exc))
    return _done(target, f"Disabled beacon {name} on minion.")


def save(**kwargs: Any) -> dict[str, Any]:
    """Save the beacons to ``minion.d/beacons.conf`` in the minion's config folder.

    CLI Example::

        saline '*' beacons.save
    """
    target = _target()
    try:
        path = target.save()
    except (OSError, bcn.BeaconError) as exc:
        return _fail(f"Unable to write to beacons file: {exc}")
    return {"comment": f"Beacons saved to {path}.", "result": True}


def reset(**kwargs: Any) -> dict[str, Any]:
    """Remove every beacon.

    CLI Example::

        saline '*' beacons.reset
    """
    target = _target()
    for name in target.beacons.names():
        target.beacons.delete(name)
    target.beacons.set_enabled(True)
    return _done(target, "Beacon configuration reset.")
