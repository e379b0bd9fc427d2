"""Outputters: the exact text each one prints, as Salt's do."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from saline.output import OUTPUTTERS, render


def dedent(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


# -- nested ----------------------------------------------------------------------------------------

def test_nested_scalar_per_minion() -> None:
    assert render({"web1": True}) == "web1:\n    True"
    assert render({"web1": None, "web2": 3, "web3": 1.5}) == "web1:\n    None\nweb2:\n    3\nweb3:\n    1.5"


def test_nested_dict_list_and_multiline_like_salt() -> None:
    data = {"web1": {"pkgs": ["vim", "curl"], "result": True, "comment": "line one\nline two",
                     "nested": {"b": 2, "a": 1}, "empty": {}, "none": None}}
    assert render(data) == dedent("""
        web1:
            ----------
            comment:
                line one
                line two
            empty:
                ----------
            nested:
                ----------
                a:
                    1
                b:
                    2
            none:
                None
            pkgs:
                - vim
                - curl
            result:
                True
        """)


def test_nested_lists_of_containers_use_pipe_marker() -> None:
    data = {"m": [1, {"x": "y"}, [2, "three"]]}
    assert render(data) == dedent("""
        m:
            - 1
            |_
              ----------
              x:
                  y
            |_
              - 2
              - three
        """)


def test_nested_multiline_string_in_list_keeps_alignment() -> None:
    assert render({"m": ["a\nb"]}) == "m:\n    - a\n      b"


def test_nested_empty_string_and_list_print_only_the_key() -> None:
    assert render({"m": ""}) == "m:"
    assert render({"m": []}) == "m:"


def test_nested_strips_escape_sequences_from_minion_data() -> None:
    assert render({"m": "\x1b[31mred"}) == "m:\n    ?[31mred"


def test_nested_colors_only_when_asked() -> None:
    plain = render({"web1": {"a": "x"}})
    assert "\x1b" not in plain
    colored = render({"web1": {"a": "x", "n": 1}}, color=True)
    assert colored == (
        "\x1b[0;36mweb1\x1b[0;0m:\n"
        "    \x1b[0;36m----------\x1b[0;0m\n"
        "    \x1b[0;36ma\x1b[0;0m:\n"
        "        \x1b[0;32mx\x1b[0;0m\n"
        "    \x1b[0;36mn\x1b[0;0m:\n"
        "        \x1b[0;1;33m1\x1b[0;0m"
    )
    # a failed job shows its keys in red, as Salt does
    assert render({"web1": {"a": 1}}, color=True, retcode=1).startswith("\x1b[0;31mweb1")


def test_nested_non_static_keeps_arrival_order_static_sorts() -> None:
    data = {"web2": True, "web1": False}
    assert render(data) == "web2:\n    True\nweb1:\n    False"
    assert render(data, static=True) == "web1:\n    False\nweb2:\n    True"


# -- json ------------------------------------------------------------------------------------------

def test_json_one_document_per_minion_unless_static() -> None:
    data = {"web1": True, "web2": {"a": [1, 2]}}
    assert render(data, "json") == '{\n    "web1": true\n}\n{\n    "web2": {\n        "a": [\n            1,\n            2\n        ]\n    }\n}'
    static = render(data, "json", static=True)
    assert json.loads(static) == data
    assert static.startswith('{\n    "web1": true,\n')


def test_json_single_minion_and_negative_indent() -> None:
    assert render({"web1": True}, "json") == '{\n    "web1": true\n}'
    assert render({"web1": True, "web2": "é"}, "json", indent=-1) == '{"web1": true}\n{"web2": "é"}'


def test_json_unserializable_values_use_repr() -> None:
    assert json.loads(render({"m": {1, 2}}, "json")) == {"m": "{1, 2}"}
    assert json.loads(render({"m": {(1, 2): "x"}}, "json")) == {"m": {"(1, 2)": "x"}}


# -- yaml, txt, raw, newline_values_only, quiet ------------------------------------------------------

def test_yaml() -> None:
    assert render({"web1": True}, "yaml") == "web1: true"
    assert render({"web1": {"b": [1, 2], "a": "x"}}, "yaml") == "web1:\n  a: x\n  b:\n  - 1\n  - 2"
    assert render(True, "yaml") == "true"
    assert render({"m": (1, 2)}, "yaml") == "m:\n- 1\n- 2"


def test_txt() -> None:
    assert render({"web1": "hello"}, "txt") == "web1: hello"
    assert render({"web1": "line1\nline2", "web2": True}, "txt") == "web1: line1\nweb1: line2\nweb2: True"
    assert render({"web1": {"a": 1}}, "txt") == "web1: {'a': 1}"


def test_raw() -> None:
    assert render({"web1": True}, "raw") == "{'web1': True}"
    assert render({"web1": True, "web2": 1}, "raw") == "{'web1': True}\n{'web2': 1}"
    assert render({"web1": True, "web2": 1}, "raw", static=True) == "{'web1': True, 'web2': 1}"


def test_newline_values_only() -> None:
    data = {"myminion": ["127.0.0.1", "10.0.0.1"], "second-minion": ["127.0.0.1", "10.0.0.2"]}
    assert render(data, "newline_values_only") == "127.0.0.1\n10.0.0.1\n127.0.0.1\n10.0.0.2"
    assert render({"a": 8, "b": 10}, "newline_values_only") == "8\n10"


def test_quiet_prints_nothing() -> None:
    assert render({"web1": True}, "quiet") == ""


def test_unknown_outputter_falls_back_to_nested() -> None:
    assert render({"web1": True}, "no-such-outputter") == "web1:\n    True"


# -- table -----------------------------------------------------------------------------------------

def test_table_minion_to_value() -> None:
    assert render({"web1": True, "web22": "ok"}, "table") == dedent("""
        -------------------
        | Minion | Return |
        -------------------
        |  web1  |  True  |
        -------------------
        | web22  |   ok   |
        -------------------
        """)


def test_table_rows_per_minion_like_salt() -> None:
    data = {"m": [{"name": "a", "size_kb": 1}, {"name": "bbb", "size_kb": 22}]}
    assert render(data, "table") == dedent("""
        m:
        ----------
            ------------------
            | Name | Size Kb |
            ------------------
            |  a   |    1    |
            ------------------
            | bbb  |    22   |
            ------------------
        """)


def test_table_multiline_cells() -> None:
    assert render({"m": "a\nbb"}, "table") == dedent("""
        -------------------
        | Minion | Return |
        -------------------
        |   m    |   a    |
        |        |   bb   |
        -------------------
        """)


# -- the module itself ---------------------------------------------------------------------------------

def test_every_outputter_renders_awkward_data() -> None:
    data = {"m": {"s": {3, 1}, "b": b"\xff", "t": (1,), 5: None, "o": object}}
    for name in OUTPUTTERS:
        assert isinstance(render(data, name), str)


def test_importing_output_does_not_import_yaml() -> None:
    code = ("import sys, saline.output as o; assert 'yaml' not in sys.modules; "
            "o.render({'a': 1}, 'nested'); o.render({'a': 1}, 'json'); assert 'yaml' not in sys.modules; "
            "o.render({'a': 1}, 'yaml'); assert 'yaml' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", sorted(OUTPUTTERS))
def test_no_trailing_newline(name: str) -> None:
    assert not render({"web1": {"a": [1, "x"]}}, name).endswith("\n")
