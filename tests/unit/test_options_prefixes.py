"""``alt_prefixes``: a returner that also answers to an older spelling of its keys."""

from typing import ClassVar

from saline.returners.base import Option, Returner
from saline.returners.options import resolve


class Twin(Returner):
    name = "twin"
    prefix = "returner.twin"
    alt_prefixes: ClassVar[tuple[str, ...]] = ("twin",)
    options = (Option("host", default="localhost"), Option("port", int, default=5432),
               Option("passwd", secret=True, default="salt"))


class Plain(Returner):
    name = "plain"
    options = (Option("host", default="localhost"),)


def test_main_prefix_wins_over_the_alternate() -> None:
    cfg = {"returner.twin.host": "main", "twin.host": "alt", "twin.port": 6000}
    assert resolve(Twin, cfg) == {"host": "main", "port": 6000, "passwd": "salt"}


def test_alternate_prefix_alone_is_read_flat_and_nested() -> None:
    assert resolve(Twin, {"twin.host": "alt"})["host"] == "alt"
    assert resolve(Twin, {"twin": {"host": "nested", "port": "7000"}}) == {"host": "nested", "port": 7000, "passwd": "salt"}


def test_ret_config_tries_both_prefixes_before_the_plain_keys() -> None:
    cfg = {"returner.twin.host": "main", "alternative.twin.host": "alt-config", "twin.port": 1}
    assert resolve(Twin, cfg, ret_config="alternative") == {"host": "alt-config", "port": 1, "passwd": "salt"}
    cfg["alternative.returner.twin.host"] = "alt-main"
    assert resolve(Twin, cfg, ret_config="alternative")["host"] == "alt-main"


def test_empty_alternate_value_means_unset_and_kwargs_still_win() -> None:
    cfg = {"twin.host": "", "twin.passwd": "None"}
    assert resolve(Twin, cfg) == {"host": "localhost", "port": 5432, "passwd": "salt"}
    assert resolve(Twin, cfg, ret_kwargs={"host": "kw"})["host"] == "kw"


def test_a_returner_without_alternates_ignores_other_prefixes() -> None:
    assert resolve(Plain, {"returner.plain.host": "x"})["host"] == "localhost"
    assert resolve(Plain, {"plain.host": "y"})["host"] == "y"
