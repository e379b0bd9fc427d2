"""The JSON text the SQL and document returners store: what Salt's ``json.dumps(x,
ensure_ascii=False)`` writes, for every value that has a JSON form, and a readable stand-in for
the rest (saline/returners/_json.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from saline.returners import _json

SALT_VALUES: list[Any] = [
    True, False, None, 0, -7, 2**70, 1.5, 1e300, float("inf"), "", "plain", "ünïcödé ✓ 𝄞", 'quote " back \\ nl \n',
    [], {}, [1, [2, [3, {"a": None}]]],
    {"fun_args": [], "jid": "20261207134512345678", "return": True, "retcode": 0, "success": True,
     "fun": "test.ping", "id": "web1"},
    {"return": {"file_|-/etc/motd_|-/etc/motd_|-managed": {"result": True, "changes": {"diff": "+x"}}},
     "fun": "state.apply", "id": "web1", "jid": "20261207134512345678", "retcode": 0},
    {1: "int key", 2.5: "float key", True: "bool key", None: "none key"},
]


@pytest.mark.parametrize("value", SALT_VALUES, ids=lambda v: repr(v)[:30])
def test_a_value_with_a_json_form_is_written_as_salt_writes_it(value: Any) -> None:
    assert _json.dumps(value) == json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize("value", [True, False, None, 3, 2.25, "text", [1, "b"], {"k": {"n": [None]}}],
                         ids=lambda v: repr(v)[:20])
def test_dumps_ret_gives_the_whole_return_and_its_value_as_two_dumps_would(value: Any) -> None:
    ret = {"fun": "test.echo", "id": "web1", "jid": "20261207134512345678", "return": value, "success": True}
    assert _json.dumps_ret(ret) == (json.dumps(ret, ensure_ascii=False), json.dumps(value, ensure_ascii=False))


def test_a_return_without_a_value_stores_null() -> None:
    ret = {"fun": "test.ping", "id": "web1"}
    assert _json.dumps_ret(ret) == (json.dumps(ret), "null")


def test_values_without_a_json_form_get_a_readable_stand_in() -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    assert _json.dumps({"s": {3, 1, 2}, "b": b"caf\xc3\xa9 \xff"}) == '{"s": [1, 2, 3], "b": "café \ufffd"}'
    assert _json.dumps({b"key": 1, (1, 2): 2}) == '{"key": 1, "(1, 2)": 2}'
    assert _json.dumps(cyclic) == '[1, "<cycle list>"]'
    assert _json.dumps({"obj": object}) == '{"obj": "<class \'object\'>"}'


def test_a_lone_surrogate_is_kept_as_an_escape_that_utf8_can_carry() -> None:
    out = _json.dumps({"s": "bad\udcffbyte"})
    assert out == '{"s": "bad\\udcffbyte"}'
    assert json.loads(out) == {"s": "bad\udcffbyte"}
    out.encode("utf-8")  # would raise on a raw surrogate
