"""Contract case: ``django`` with a real minimal Django project on SQLite, its receivers storing rows.

The project (``salinedj``: settings, an app with two models and the receivers) is written once per
test process into a temporary folder and set up in-process, as a master running the returner
would; Django's settings are process-wide, so every django test shares it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Any

from tests.contract.harness import ContractCase

FILES = {
    "salinedj/__init__.py": "",
    "salinedj/settings.py": """
        from pathlib import Path
        SECRET_KEY = "saline-test-only"
        INSTALLED_APPS = ["salinedj.returns"]
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(Path(__file__).parent / "db.sqlite3")}}
        DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
        USE_TZ = True
    """,
    "salinedj/returns/__init__.py": "",
    "salinedj/returns/apps.py": """
        from django.apps import AppConfig

        class ReturnsConfig(AppConfig):
            name = "salinedj.returns"

            def ready(self):
                from salinedj.returns import receivers  # noqa: F401  (connects them)
    """,
    "salinedj/returns/models.py": """
        from django.db import models

        class Return(models.Model):
            jid = models.CharField(max_length=255, db_index=True)
            minion = models.CharField(max_length=255)
            fun = models.CharField(max_length=255)
            success = models.BooleanField(null=True)
            full_ret = models.TextField()

            class Meta:
                unique_together = [("jid", "minion")]

        class Job(models.Model):
            jid = models.CharField(max_length=255, unique=True)
            load = models.TextField()
            minions = models.TextField(default="[]")
    """,
    "salinedj/returns/receivers.py": """
        import json
        from django.dispatch import receiver
        from saline.returners import _json
        from saline.returners.django import returner_signal, save_load_signal
        from salinedj.returns.models import Job, Return

        @receiver(returner_signal, sender="returner")
        def store_return(sender, ret, **kwargs):
            if ret.get("id") == "explode":
                raise RuntimeError("this receiver refuses minion explode")
            Return.objects.update_or_create(
                jid=str(ret["jid"]), minion=str(ret["id"]),
                defaults={"fun": str(ret.get("fun")), "success": ret.get("success"), "full_ret": _json.dumps(ret)})

        @receiver(save_load_signal, sender="save_load")
        def store_load(sender, jid, load, minions=None, **kwargs):
            Job.objects.get_or_create(jid=jid, defaults={"load": _json.dumps(load), "minions": json.dumps(minions or [])})
    """,
}

_lock = threading.Lock()
_root: Path | None = None


def project() -> Path:
    """The folder holding the ``salinedj`` project, written and set up (tables made) once."""
    global _root
    with _lock:
        if _root is None:
            root = Path(tempfile.mkdtemp(prefix="saline-django-"))
            for name, text in FILES.items():
                path = root / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(textwrap.dedent(text).lstrip())
            sys.path.insert(0, str(root))
            os.environ["DJANGO_SETTINGS_MODULE"] = "salinedj.settings"
            import django
            from django.core.management import call_command

            django.setup()
            call_command("migrate", run_syncdb=True, verbosity=0)
            _root = root
        return _root


def rows(jid: str) -> list[Any]:
    from salinedj.returns.models import Return  # type: ignore[import-not-found]

    return list(Return.objects.filter(jid=jid))


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"django.settings": "salinedj.settings", "django.path": [str(project())]}


CASES = [ContractCase(
    name="django", fixtures=(), config=config, unreachable=None,
    extra={"count": lambda fx, tmp, jid: len(rows(jid)),
           "fetch": lambda fx, tmp, jid: {r.minion: json.loads(r.full_ret)["return"] for r in rows(jid)}},
)]
