"""Every built-in returner that needs a client library names the pip extra that installs it, and
the hint printed when that library is missing names the same extra (aliases included)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from saline.returners import registry

EXTRAS = set(tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
             ["project"]["optional-dependencies"])


@pytest.mark.parametrize("name", sorted(registry.BUILTIN))
def test_the_install_hint_names_the_returners_extra(name: str) -> None:
    cls = registry.get_class(name)
    module = registry.BUILTIN[name].split(":")[0].rsplit(".", 1)[1]
    hinted = registry.EXTRA_OF.get(name) or module
    if cls.extra:
        assert cls.extra in EXTRAS and hinted == cls.extra, (name, cls.extra, hinted)
    assert name in registry.available()
