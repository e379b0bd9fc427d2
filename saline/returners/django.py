"""Salt's ``django`` returner: Django signals for each return and each job load."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Mapping

import django
from django.conf import settings
from django.dispatch import Signal

from saline.config import ConfigError
from saline.returners._notify import one_line
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError

log = logging.getLogger(__name__)

#: sent with ``sender="returner"`` and ``ret=<the return>`` for each return
returner_signal = Signal()
#: sent with ``sender="save_load"``, ``jid=<jid>``, ``load=<the load>`` (and ``minions``) for each job
save_load_signal = Signal()


class DjangoReturner(Returner):
    """Salt's ``django``: tells a Django project about each return and each job, by signals.

    Two signals, as Salt named them; connect receivers to them in your Django app::

        from django.dispatch import receiver
        from saline.returners.django import returner_signal, save_load_signal

        @receiver(returner_signal, sender="returner")
        def store_return(sender, ret, **kwargs):
            Return.objects.update_or_create(jid=ret["jid"], minion=ret["id"], defaults={"full_ret": ret})

        @receiver(save_load_signal, sender="save_load")
        def store_load(sender, jid, load, **kwargs):
            Job.objects.get_or_create(jid=jid, defaults={"load": load})

    ``returner_signal`` carries ``ret`` (the whole return), ``save_load_signal`` carries ``jid``
    and ``load`` (and ``minions``, the expected minion ids). Salt made a new ``Signal`` object
    on every call (and passed ``providing_args``, gone since Django 4), so no receiver could
    ever be connected to it; these are module-level and stay.

    Receivers run in the master, in the delivery thread, inside one database transaction per
    batch (``atomic``, on by default): when a receiver fails, what the batch wrote is rolled back
    and the whole batch is delivered again later, so a receiver that writes rows never writes
    them twice. A receiver's exception fails the batch with one line naming it; a database that
    cannot be reached (``OperationalError``, ``InterfaceError``) is reported as unavailable.
    Receivers should be idempotent all the same (``update_or_create``): a batch whose commit
    was lost may come again.

    The master needs Django set up: when it is not, ``settings`` (a ``DJANGO_SETTINGS_MODULE``)
    and ``path`` (folders added to ``sys.path`` so the project imports) make the returner call
    ``django.setup()`` itself on first use. Both are saline's: Salt had no options.

    Example::

        django.settings: mysite.settings
        django.path: [/srv/mysite]
    """

    name = "django"
    extra = "django"
    summary = "Django: the returner and save_load signals, one transaction per batch"
    options = (
        Option("settings", doc="DJANGO_SETTINGS_MODULE to set Django up with, when it is not (saline)"),
        Option("path", list, default=[], doc="folders added to sys.path so the project imports (saline)"),
        Option("atomic", bool, default=True, doc="run each batch's receivers in one transaction (saline)"),
        Option("database", default="default", doc="the database alias of that transaction (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self._ready = False

    def _setup(self) -> None:
        if self._ready:
            return
        if not settings.configured:
            module = self.opts.get("settings") or os.environ.get("DJANGO_SETTINGS_MODULE")
            if not module:
                raise ConfigError("returner django: Django is not set up in the master: set django.settings "
                                  "(the project's settings module) and django.path")
            for folder in self.opts.get("path") or []:
                if folder not in sys.path:
                    sys.path.insert(0, str(folder))
            os.environ["DJANGO_SETTINGS_MODULE"] = str(module)
        try:
            django.setup()  # loads the apps, whose ready() connect the receivers; a no-op the second time
        except Exception as exc:
            raise ConfigError(one_line(self.name, f"django.setup() failed: {type(exc).__name__}: {exc}", [])) from None
        self._ready = True

    def _send(self, signal: Signal, items: list[dict[str, Any]], what: str) -> None:
        from django.db import InterfaceError, OperationalError, transaction

        self._setup()
        try:
            if self.opts.get("atomic"):
                with transaction.atomic(using=self.opts.get("database") or "default"):
                    for kwargs in items:
                        signal.send(sender=what, **kwargs)
            else:
                for kwargs in items:
                    signal.send(sender=what, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            raise BackendUnavailable(one_line(self.name, f"database unavailable: {type(exc).__name__}: {exc}", [])) from None
        except Exception as exc:  # a receiver failed: the user's code, named in one line
            raise ReturnerError(one_line(self.name, f"a {what} receiver failed: {type(exc).__name__}: {exc}", [])) from None

    def returns(self, rets: list[dict[str, Any]]) -> None:
        if rets:
            self._send(returner_signal, [{"ret": ret} for ret in rets], "returner")

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        if loads:
            self._send(save_load_signal, [{"jid": jid, "load": load, "minions": minions} for jid, load, minions in loads],
                       "save_load")

    def check(self) -> None:
        """Django is set up and its database answers."""
        from django.db import connections

        self._setup()
        alias = self.opts.get("database") or "default"
        if alias in settings.DATABASES:
            try:
                connections[alias].ensure_connection()
            except Exception as exc:
                raise BackendUnavailable(one_line(self.name, f"database unavailable: {type(exc).__name__}: {exc}", [])) from None

    def close(self) -> None:
        if self._ready:
            from django.db import connections

            connections.close_all()  # this thread's connections; the next batch opens them again
