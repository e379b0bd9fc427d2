"""Targeting: Salt's target types, compound grammar, nodegroups, and errors that are always TargetError."""

from __future__ import annotations

import ast
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saline.targeting import TGT_TYPES, Matcher, TargetError, compile_target, expected_minions, match

GRAINS: dict[str, Any] = {
    "id": "web1",
    "os": "Debian",
    "os_family": "Debian",
    "osrelease": "12",
    "osmajorrelease": 12,
    "virtual": True,
    "roles": ["web", "cache"],
    "locale_info": {"defaultlanguage": "en_US", "defaultencoding": "UTF-8"},
    "deep": {"a": {"b": "leaf"}},
    "disks": [{"name": "sda", "size": 100}, "loop0"],
    "ipv4": ["10.1.2.3", "127.0.0.1"],
    "ipv6": ["fe80::1", "::1"],
    "empty": {},
    "nothing": None,
}


def m(tgt: Any, tgt_type: str = "compound", minion_id: str = "web1", grains: dict | None = GRAINS, **kw: Any) -> bool:
    return match(tgt, tgt_type, minion_id, grains, **kw)


# -- simple types --------------------------------------------------------------------------------

@pytest.mark.parametrize("tgt, minion_id, expected", [
    ("*", "anything", True),
    ("web*", "web1", True),
    ("web*", "db1", False),
    ("WEB*", "web1", False),  # case-sensitive, as fnmatch is on POSIX minions
    ("web?", "web1", True),
    ("web?", "web10", False),
    ("web[12]", "web2", True),
    ("web[!12]", "web2", False),
    ("*.example.com", "web1.example.com", True),
    ("web1", "web1.example.com", False),  # a glob matches the whole id
])
def test_glob(tgt: str, minion_id: str, expected: bool) -> None:
    assert match(tgt, "glob", minion_id, None) is expected


def test_glob_ignores_surrounding_whitespace() -> None:
    assert m(" web1\n", "glob")


@pytest.mark.parametrize("tgt, minion_id, expected", [
    (r"web\d+", "web12", True),
    (r"web\d+", "db12", False),
    ("web", "web1", True),       # re.match: anchored at the start only, as in Salt
    ("eb1", "web1", False),
    (r"web\d$", "web12", False),
    ("(web|db)1", "db1", True),
])
def test_pcre_uses_re_match(tgt: str, minion_id: str, expected: bool) -> None:
    assert match(tgt, "pcre", minion_id, None) is expected


@pytest.mark.parametrize("tgt", [["web1", "db1"], "web1,db1", "web1 db1", "web1, db1", " db1,,web1 ", ("web1", "db1")])
def test_list_forms(tgt: Any) -> None:
    matcher = compile_target(tgt, "list")
    assert matcher.matches("web1", None) and matcher.matches("db1", None)
    assert not matcher.matches("web2", None)


def test_list_is_exact_not_glob() -> None:
    assert not m("web*", "list", "web1")
    assert not m("web", "list", "web1")
    assert m(["web*"], "list", "web*")


# -- grains --------------------------------------------------------------------------------------

@pytest.mark.parametrize("tgt, expected", [
    ("os:Debian", True),
    ("os:debian", True),           # Salt compares grains case-insensitively
    ("os:DEB*", True),
    ("os:Red*", False),
    ("os:Deb", False),             # a glob on the whole value
    ("osrelease:1?", True),
    ("osmajorrelease:12", True),   # an int grain by its string form
    ("virtual:true", True),        # a bool grain by its string form
    ("virtual:False", False),
    ("roles:web", True),           # a list grain: any member
    ("roles:ca*", True),
    ("roles:db", False),
    ("locale_info:defaultlanguage", True),         # a dict grain: the value names a key
    ("locale_info:defaultlanguage:en_us", True),   # nested with the delimiter
    ("locale_info:defaultlanguage:fr*", False),
    ("deep:a:b:leaf", True),
    ("deep:a:b:LEAF", True),
    ("deep:a:b:other", False),
    ("deep:a:*", True),
    ("deep:*", True),
    ("disks:name:sda", True),      # a key inside the dicts of a list
    ("disks:0:name:sda", True),    # a numeric index into a list
    ("disks:1:loop0", True),
    ("disks:5:loop0", False),
    ("ipv6:fe80::1", True),        # the value itself holds the delimiter
    ("*:debian", True),            # any top-level grain
    ("*:nope", False),
    ("missing:*", False),          # a missing grain never matches, not even with *
    ("empty:*", False),            # Salt skips an empty dict like a missing grain
    ("nothing:None", True),        # None by its string form, as in Salt
])
def test_grain(tgt: str, expected: bool) -> None:
    assert m(tgt, "grain") is expected
    assert m(f"G@{tgt}") is expected


def test_grain_numeric_key_reaches_int_dict_key() -> None:
    assert m("ports:8080:open", "grain", grains={"ports": {8080: "open"}})


def test_grain_custom_delimiter() -> None:
    assert m("locale_info|defaultlanguage|en_US", "grain", delimiter="|")
    with pytest.raises(TargetError, match=r"needs grain\|value"):
        compile_target("os:Debian", "grain", delimiter="|")
    # Salt's per-word delimiter in compound: G<char>@
    assert m("G%@locale_info%defaultlanguage%en_US")
    assert m("G|@deep|a|b|leaf and web*")


def test_grain_with_no_or_unknown_grains_never_matches() -> None:
    assert not m("os:Debian", "grain", grains=None)
    assert not m("os:Debian", "grain", grains={})
    assert not m("os:Debian", "grain", grains={"os": None})


@pytest.mark.parametrize("tgt, expected", [
    ("os:deb.*", True),
    ("os:DEB", True),               # re.match, case-insensitive
    ("os:ebian", False),
    ("os:^(debian|ubuntu)$", True),
    ("roles:c.che", True),
    (r"osrelease:\d+$", True),
    (r"osrelease:\D", False),      # \D keeps its meaning (Salt lowercasing would turn it into \d)
    ("deep:a:b:l..f", True),
    ("ipv6:fe80::\\d", True),
])
def test_grain_pcre(tgt: str, expected: bool) -> None:
    assert m(tgt, "grain_pcre") is expected
    assert m(f"P@{tgt}") is expected


def test_grain_pcre_accepts_a_value_valid_only_at_another_split() -> None:
    # "a:(x:y)" is not valid as key "a:(x" + value "y)", but is as key "a" + value "(x:y)".
    assert m("a:(x:y)", "grain_pcre", grains={"a": "x:y"})


# -- pillar --------------------------------------------------------------------------------------

def test_pillar_and_pillar_pcre() -> None:
    pillar = {"role": "web", "cluster": {"name": "blue"}}
    assert match("role:web", "pillar", "web1", GRAINS, pillar=pillar)
    assert match("cluster:name:bl*", "pillar", "web1", GRAINS, pillar=pillar)
    assert match("cluster:name:^b.u", "pillar_pcre", "web1", GRAINS, pillar=pillar)
    assert not match("role:db", "pillar", "web1", GRAINS, pillar=pillar)
    assert match("I@role:web and J@cluster:name:bl.e", "compound", "web1", GRAINS, pillar=pillar)
    # Pillar and grains are separate: a grain is not found by I@, nor pillar by G@.
    assert not match("I@os:Debian", "compound", "web1", GRAINS, pillar=pillar)
    assert not match("G@role:web", "compound", "web1", GRAINS, pillar=pillar)


def test_no_pillar_never_matches() -> None:
    assert not m("role:web", "pillar")
    assert not m("I@role:*")
    assert m("not I@role:*")  # no pillar is an empty pillar on the minion, so the negation holds


# -- ipcidr --------------------------------------------------------------------------------------

@pytest.mark.parametrize("tgt, expected", [
    ("10.0.0.0/8", True),
    ("10.1.2.0/24", True),
    ("10.1.3.0/24", False),
    ("10.1.2.3", True),
    ("10.1.2.4", False),
    ("0.0.0.0/0", True),
    ("fe80::/10", True),
    ("fe80::1", True),
    ("2001:db8::/32", False),
])
def test_ipcidr(tgt: str, expected: bool) -> None:
    assert m(tgt, "ipcidr") is expected
    assert m(f"S@{tgt}") is expected


def test_ipcidr_tolerates_odd_grains() -> None:
    assert not m("10.0.0.0/8", "ipcidr", grains={})
    assert not m("10.0.0.0/8", "ipcidr", grains={"ipv4": ["not an ip", 7, None, {"x": 1}]})
    assert m("10.0.0.0/8", "ipcidr", grains={"ipv4": "10.9.9.9"})  # a bare string counts as a list of one
    assert not m("10.0.0.0/8", "ipcidr", grains={"ipv4": 10})
    assert not m("10.9.9.9", "ipcidr", grains={"ipv6": ["10.9.9.9"]})  # v4 targets look at ipv4 only


# -- compound ------------------------------------------------------------------------------------

@pytest.mark.parametrize("tgt, expected", [
    ("web* and G@os:Debian", True),
    ("web* and G@os:RedHat", False),
    ("db* or G@os:Debian", True),
    # and binds tighter than or: (db* and nope) or web*  -> True
    ("db* and G@os:nope or web*", True),
    # ... and so: web* or (db* and nope)  -> True, while (web* or db*) and nope -> False
    ("web* or db* and G@os:nope", True),
    ("( web* or db* ) and G@os:nope", False),
    ("(web* or db*) and G@os:nope", False),       # glued parentheses
    ("((web*) or (db*)) and not (G@os:nope)", True),
    # not binds tighter than and: (not db*) and web*
    ("not db* and web*", True),
    ("not web* and db*", False),
    ("not ( web* and db* )", True),
    ("not web*", False),
    ("not db*", True),
    ("not not web*", True),
    ("not not not web*", False),
    ("web* not G@os:RedHat", True),               # Salt's implicit "and" before a "not"
    ("web* not G@os:Debian", False),
    ("E@web(1|2) and L@web1,web2", True),         # parentheses inside a regex are not grouping
    ("(E@web(1|2))", True),
    ("( E@(db|web)\\d+ or G@os:nope )", True),
    ("L@db1,web1 and S@10.0.0.0/8 and G@roles:web and P@os:^deb", True),
    ("web1 and not L@web1", False),
    ("*", True),
])
def test_compound(tgt: str, expected: bool) -> None:
    assert m(tgt) is expected


def test_compound_as_a_list_of_words() -> None:
    # Salt also takes a compound target as a list of words; a word may then hold spaces.
    assert m(["web*", "and", "G@os:Debian"])
    assert m(["(", "G@osfullname:Debian GNU*", "or", "db*", ")"], grains={"osfullname": "Debian GNU/Linux"})
    with pytest.raises(TargetError, match="at word 2"):
        compile_target(["web*", "and"], "compound")


def test_leading_not_selects_the_rest() -> None:
    matcher = compile_target("not G@os:Debian", "compound")
    assert not matcher.matches("web1", GRAINS)
    assert matcher.matches("db1", {"os": "CentOS"})
    assert matcher.matches("db1", {})


# -- nodegroups ----------------------------------------------------------------------------------

NODEGROUPS: dict[str, Any] = {
    "webs": "web* and G@os:Debian",
    "ids": ["db1", "db2"],
    "names": "db1,db2 mail1",
    "words": ["G@roles:web", "or", "db*"],
    "nested": "N@ids or N@webs",
    "glued": "(N@ids or mail*)",
    "empty": "",
    "loop_a": "N@loop_b or web*",
    "loop_b": "db* and N@loop_a",
    "self": "N@self",
    "broken": "web* and",
    "odd": 42,
}


@pytest.mark.parametrize("name, minion_id, grains, expected", [
    ("webs", "web1", GRAINS, True),
    ("webs", "web1", {"os": "CentOS"}, False),
    ("ids", "db2", {}, True),
    ("ids", "db3", {}, False),
    ("names", "mail1", {}, True),
    ("names", "db1", {}, True),       # bare names are exact ids, like Salt's L@ expansion
    ("names", "db9", {}, False),
    ("words", "web1", GRAINS, True),
    ("words", "db7", {}, True),
    ("words", "mail1", {}, False),
    ("nested", "db1", {}, True),
    ("nested", "web1", GRAINS, True),
    ("nested", "web1", {}, False),
    ("glued", "mail9", {}, True),
    ("empty", "web1", GRAINS, False),  # an empty group selects nobody
])
def test_nodegroup(name: str, minion_id: str, grains: dict, expected: bool) -> None:
    assert match(name, "nodegroup", minion_id, grains, nodegroups=NODEGROUPS) is expected
    assert match(f"N@{name}", "compound", minion_id, grains, nodegroups=NODEGROUPS) is expected


def test_nodegroup_expands_as_one_parenthesised_operand() -> None:
    # "webs" is "web* and G@os:Debian"; inside "not N@webs" it must stay grouped.
    assert match("not N@webs", "compound", "web1", {"os": "CentOS"}, nodegroups=NODEGROUPS)
    assert not match("not N@webs", "compound", "web1", GRAINS, nodegroups=NODEGROUPS)
    assert match("db1 or N@webs and G@roles:cache", "compound", "db1", {}, nodegroups=NODEGROUPS)


@pytest.mark.parametrize("tgt, tgt_type, message", [
    ("loop_a", "nodegroup", r"nodegroup 'loop_a' includes itself \(loop_a -> loop_b -> loop_a\)"),
    ("N@self", "compound", r"nodegroup 'self' includes itself \(self -> self\)"),
    ("N@missing", "compound", r"unknown nodegroup 'missing' in 'N@missing' at column 1 \(known: .*webs"),
    ("missing", "nodegroup", r"unknown nodegroup 'missing'"),
    ("N@broken", "compound", r"nodegroup 'broken': ends after 'and'"),
    ("odd", "nodegroup", r"nodegroup 'odd' must be a compound string or a list, got int"),
])
def test_nodegroup_errors(tgt: str, tgt_type: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        compile_target(tgt, tgt_type, nodegroups=NODEGROUPS)


def test_nodegroup_without_configuration() -> None:
    with pytest.raises(TargetError, match="no nodegroups are configured"):
        compile_target("N@webs", "compound")


def test_deeply_chained_nodegroups_are_an_error_not_a_crash() -> None:
    chain = {f"g{i}": f"N@g{i + 1}" for i in range(500)}
    chain["g500"] = "web*"
    with pytest.raises(TargetError, match="nodegroups nested too deeply"):
        compile_target("N@g0", "compound", nodegroups=chain)
    assert match("N@g480", "compound", "web1", None, nodegroups=chain)


# -- expected_minions (the master's view) ------------------------------------------------------

MINIONS: dict[str, dict | None] = {
    "web2": {"os": "CentOS", "ipv4": ["192.168.1.2"]},
    "web1": GRAINS,
    "db1": {"os": "Debian", "ipv4": ["10.5.5.5"]},
    "new1": None,  # accepted, but its grains have not arrived yet
}


@pytest.mark.parametrize("tgt, tgt_type, greedy, expected", [
    ("*", "glob", True, ["db1", "new1", "web1", "web2"]),
    ("web*", "glob", True, ["web1", "web2"]),
    ("os:Debian", "grain", True, ["db1", "new1", "web1"]),        # unknown grains may match: kept
    ("os:Debian", "grain", False, ["db1", "web1"]),               # certain matches only
    ("10.0.0.0/8", "ipcidr", True, ["db1", "new1", "web1"]),
    ("web* and G@os:Debian", "compound", True, ["web1"]),         # the glob rules new1 out
    ("web* or G@os:Debian", "compound", True, ["db1", "new1", "web1", "web2"]),
    ("not G@os:Debian", "compound", True, ["new1", "web2"]),      # unknown stays unknown under not
    ("not G@os:Debian", "compound", False, ["web2"]),
    ("new1 and not G@os:Debian", "compound", False, []),
    ("new1 or G@os:nope", "compound", False, ["new1"]),           # certain through the id alone
    ("I@role:web", "compound", True, []),                         # the master knows no pillar
    (["web2", "new1", "ghost"], "list", True, ["new1", "web2"]),
])
def test_expected_minions(tgt: Any, tgt_type: str, greedy: bool, expected: list[str]) -> None:
    assert expected_minions(tgt, tgt_type, MINIONS, greedy=greedy) == expected
    # the master's form: the accepted ids, and the grains it knows apart (new1's not there yet)
    known = {mid: grains for mid, grains in MINIONS.items() if grains is not None}
    assert expected_minions(tgt, tgt_type, tuple(MINIONS), grains=known, greedy=greedy) == expected


@pytest.mark.parametrize("tgt, tgt_type, by_id", [
    ("web*", "glob", True), (r"web\d", "pcre", True), (["web1", "ghost"], "list", True),
    ("os:Debian", "grain", False), ("web* and G@os:Debian", "compound", False),
])
def test_a_target_of_ids_alone_is_checked_on_the_ids(tgt: Any, tgt_type: str, by_id: bool) -> None:
    """The master's shortcut for a target that names ids only (no grains looked at) selects what
    the minion-by-minion evaluation selects; any other target takes the long way."""
    matcher = compile_target(tgt, tgt_type)
    assert (matcher.id_test() is not None) is by_id
    slow = sorted(m for m, grains in MINIONS.items() if matcher.evaluate(m, grains) is not False)
    assert expected_minions(tgt, tgt_type, MINIONS) == slow


def test_evaluate_is_three_valued() -> None:
    matcher = compile_target("G@os:Debian or db*", "compound")
    assert matcher.evaluate("web9", None) is None
    assert matcher.evaluate("db9", None) is True
    assert matcher.evaluate("web9", {"os": "CentOS"}) is False
    assert matcher.matches("web9", None) is False  # matches() reads None grains as empty


def test_expected_minions_is_fast_for_5000_minions() -> None:
    minions = {f"{'web' if i % 2 else 'db'}{i}.example.com": None if i % 100 == 0 else {
        "os": ("Debian", "Ubuntu", "CentOS")[i % 3], "roles": ["web", f"shard{i % 7}"],
        "ipv4": [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", "127.0.0.1"]} for i in range(5000)}
    tgt = r"( G@os:Debian and web* ) or ( E@db\d+\.example\.com and not S@10.0.3.0/24 ) or G@roles:shard3"
    start = time.perf_counter()
    chosen = expected_minions(tgt, "compound", minions)
    elapsed = time.perf_counter() - start
    assert 0 < len(chosen) < 5000
    assert "web1.example.com" not in chosen and "db2.example.com" in chosen
    assert elapsed < 1.0, f"5000 minions took {elapsed:.2f}s"


# -- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("tgt, tgt_type, message", [
    ("", "compound", "compound target '' is empty"),
    ("   ", "compound", "is empty"),
    ("and web*", "compound", r"unexpected 'and' at column 1"),
    ("web* and", "compound", r"ends after 'and' at column 6"),
    ("web* or", "compound", r"ends after 'or'"),
    ("not", "compound", r"ends after 'not'"),
    ("web* and and db*", "compound", r"unexpected 'and' at column 10"),
    ("web* or and db*", "compound", r"unexpected 'and' at column 9"),
    ("( web*", "compound", r"unmatched '\(' at column 1"),
    ("(web* or (db*)", "compound", r"unmatched '\(' at column 1"),
    ("web* )", "compound", r"unmatched '\)' at column 6"),
    ("( web* ) )", "compound", r"unmatched '\)' at column 10"),
    ("( )", "compound", r"unexpected '\)' at column 3"),
    ("()", "compound", r"unexpected '\)' at column 2"),
    ("( and web* )", "compound", r"unexpected 'and' at column 3"),
    ("web* db*", "compound", r"missing 'and' or 'or' before 'db\*' at column 6"),
    ("web* ( db* )", "compound", r"missing 'and' or 'or' before '\(' at column 6"),
    ("( web* db* )", "compound", r"missing 'and' or 'or' before 'db\*' at column 8"),
    ("Z@x", "compound", r"unknown target prefix 'Z@' in 'Z@x' at column 1"),
    ("web* and R@%cluster", "compound", r"range targeting \(R@\) is not supported"),
    ("G@", "compound", r"nothing after '@' in 'G@'"),
    ("G@os", "compound", r"'G@os' at column 1 needs grain:value"),
    ("I@role", "compound", r"needs pillar:value"),
    ("G@:Debian", "compound", r"no grain name before ':'"),
    ("E@web(", "compound", r"invalid regular expression 'E@web\(' at column 1: missing \)"),
    ("P@os:deb[", "compound", r"invalid regular expression in 'P@os:deb\[' at column 1"),
    ("L@,,", "compound", r"no minion ids in 'L@,,'"),
    ("S@10.0.0.1/8", "compound", r"host bits set \(did you mean 10.0.0.0/8\?\)"),
    ("S@10.0.0.300", "compound", r"'S@10.0.0.300' at column 1 is not an IP address or CIDR network"),
    ("(" * 150 + "web*" + ")" * 150, "compound", r"nested more than 100 deep"),
    ("", "glob", "glob target is empty"),
    ("web(", "pcre", r"invalid regular expression pcre target 'web\(': missing \)"),
    ("os", "grain", r"grain target 'os' needs grain:value \(no ':' in it\)"),
    ("os(", "grain_pcre", r"needs grain:value"),
    ("role", "pillar", r"needs pillar:value"),
    ("role:(", "pillar_pcre", r"invalid regular expression"),
    ("10.0.0.0/33", "ipcidr", r"ipcidr target '10.0.0.0/33' is not an IP address or CIDR network"),
    (" , ", "list", r"no minion ids"),
    ([], "list", r"list target is empty"),
    ([], "compound", r"compound target is empty"),
    (["web1"], "glob", r"a glob target must be a string, got a list"),
    (None, "glob", r"a glob target must be a string, got NoneType"),
    (5, "compound", r"a compound target must be a string, got int"),
    ("web*", "globb", r"unknown target type 'globb' \(expected one of: glob, pcre"),
    ("web*", None, r"unknown target type 'None'"),
])
def test_errors_name_the_problem(tgt: Any, tgt_type: Any, message: str) -> None:
    with pytest.raises(TargetError, match=message) as caught:
        compile_target(tgt, tgt_type)
    assert "\n" not in str(caught.value)


def test_bad_delimiter_and_nodegroups_arguments() -> None:
    with pytest.raises(TargetError, match="delimiter must be a non-empty string"):
        compile_target("os:x", "grain", delimiter="")
    with pytest.raises(TargetError, match="nodegroups must be a mapping"):
        compile_target("N@x", "compound", nodegroups=["x"])  # type: ignore[arg-type]


def test_error_messages_stay_one_line_and_short() -> None:
    with pytest.raises(TargetError) as caught:
        compile_target("web*\nand\n" + "x" * 500 + " and", "compound")
    text = str(caught.value)
    assert "\n" not in text and len(text) < 300 and "..." in text


def test_target_error_is_a_value_error() -> None:
    assert issubclass(TargetError, ValueError)
    assert isinstance(compile_target("web*"), Matcher)


# -- odd minion data never breaks matching -------------------------------------------------------

@pytest.mark.parametrize("grains", [
    {"os": 10 ** 5000},                         # an int too long for str()
    {"os": ["x"] * 3, "ipv4": [[1], {"a": 2}]},
    {"os": {"a": {"b": {"c": {}}}}},
    ["not", "a", "dict"],
    "a string",
    {1: 2, None: 3, ("t",): 4},
])
def test_odd_grains_do_not_raise(grains: Any) -> None:
    matcher = compile_target("G@os:* or P@os:x or G@*:y or S@10.0.0.0/8 or G@a:0:b or not G@os:1", "compound")
    assert matcher.matches("web1", grains) in (True, False)
    assert matcher.evaluate("web1", grains) in (True, False)


def test_deep_grain_data_does_not_raise() -> None:
    deep: Any = "leaf"
    for _ in range(5000):
        deep = {"k": deep}
    grains = {"os": deep, "list": [deep]}
    for tgt in ("G@os:*:leaf", "G@*:leaf", "G@list:x", "P@os:k"):
        assert compile_target(tgt, "compound").matches("web1", grains) in (True, False)


# -- fuzzing: compile either returns a Matcher or raises TargetError -----------------------------

TOKENS = [
    "and", "or", "not", "(", ")", "((", "))", "web*", "db?", "[", "]", "*", "@", ":", "\\", "E@",
    "G@os:Debian", "G@", "G@os", "G@:x", "G@*:x", "G@a:b:c", "G@ipv6:fe80::1", "G%@a%b", "Gx@a", "P@os:deb.*",
    "P@os:(", "P@a:(x:y)", "E@web\\d+", "E@(", "E@web(1|2)", "E@\\)", "L@a,b", "L@", "L@,", "S@10.0.0.0/8",
    "S@10.0.0.1/8", "S@fe80::/10", "S@x", "N@webs", "N@ids", "N@loop_a", "N@self", "N@odd", "N@nope", "N@broken",
    "I@role:web", "J@role:w.*", "J@role:[", "Z@x", "R@x", "T@x", "os:Debian", "10.0.0.0/8", "web1,db1",
]
SEPARATORS = [" ", "", "  ", "\t", "\n", ","]

token_text = st.lists(st.tuples(st.sampled_from(TOKENS), st.sampled_from(SEPARATORS)), max_size=12).map(
    lambda pairs: "".join(tok + sep for tok, sep in pairs))
OPERATOR_TOKENS = {"and", "or", "not", "(", ")", "((", "))"}
shaped_words = st.recursive(
    st.sampled_from([t for t in TOKENS if t not in OPERATOR_TOKENS]).map(lambda word: [word]),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda t: [*t[0], t[1], *t[2]]),
        inner.map(lambda t: ["not", *t]),
        inner.map(lambda t: ["(", *t, ")"]),
    ),
    max_leaves=6,
)


@st.composite
def grammar_text(draw: st.DrawFn) -> str:
    """Mostly well-formed compound text, sometimes with one word swapped for any token, sometimes glued."""
    words = draw(shaped_words)
    if draw(st.booleans()):
        at = draw(st.integers(0, len(words)))
        words = [*words[:at], draw(st.sampled_from(TOKENS)), *words[at + 1:]]
    text = " ".join(words)
    return re.sub(r"\( ", "(", re.sub(r" \)", ")", text)) if draw(st.booleans()) else text


targets = (st.text(max_size=40) | token_text | grammar_text()
           | st.sampled_from([*TOKENS, *NODEGROUPS, "10.1.2.3", "fe80::/10"]))
grain_keys = (st.sampled_from(["os", "roles", "a", "b", "c", "*", "0", "1", "ipv4", "ipv6", "role", "x"])
              | st.text(max_size=4))
scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8)
           | st.sampled_from(["Debian", "web", "10.1.2.3", "fe80::1", "not-an-ip", "x:y"]))
data = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(grain_keys, inner, max_size=4),
                    max_leaves=12)
grains_or_none = st.none() | st.dictionaries(grain_keys, data, max_size=6)
minion_ids = st.sampled_from(["web1", "db1", "a", "b", "", "web(1)"]) | st.text(max_size=10)


def _compile_or_error(tgt: Any, tgt_type: str, nodegroups: dict | None = NODEGROUPS) -> Matcher | None:
    try:
        matcher = compile_target(tgt, tgt_type, nodegroups=nodegroups)
    except TargetError as exc:
        assert "\n" not in str(exc) and str(exc)
        return None
    assert isinstance(matcher, Matcher)
    return matcher


def _check_matches(matcher: Matcher | None, minion_id: str, grains: dict | None, pillar: dict | None) -> None:
    if matcher is None:
        return
    assert matcher.matches(minion_id, grains, pillar) in (True, False)
    assert matcher.evaluate(minion_id, grains, pillar) in (True, False, None)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(tgt=targets, minion_id=minion_ids, grains=grains_or_none, pillar=grains_or_none)
def test_fuzz_every_type_compiles_or_raises_target_error(tgt: str, minion_id: str, grains: dict | None,
                                                         pillar: dict | None) -> None:
    for tgt_type in TGT_TYPES:
        _check_matches(_compile_or_error(tgt, tgt_type), minion_id, grains, pillar)


@FUZZ
@given(words=st.lists(st.sampled_from(TOKENS) | st.text(max_size=6), max_size=10), minion_id=minion_ids,
       grains=grains_or_none)
def test_fuzz_list_forms(words: list[str], minion_id: str, grains: dict | None) -> None:
    for tgt_type in ("compound", "list"):
        _check_matches(_compile_or_error(words, tgt_type), minion_id, grains, None)


@FUZZ
@given(first=targets, second=st.lists(st.sampled_from(TOKENS), max_size=6), minion_id=minion_ids,
       grains=grains_or_none)
def test_fuzz_nodegroup_definitions(first: str, second: list[str], minion_id: str, grains: dict | None) -> None:
    groups = {**NODEGROUPS, "webs": first, "ids": second}
    for tgt, tgt_type in (("webs", "nodegroup"), ("ids", "nodegroup"), ("N@webs or N@ids", "compound")):
        _check_matches(_compile_or_error(tgt, tgt_type, groups), minion_id, grains, None)


# -- fuzzing: compound precedence against Python's own boolean grammar ---------------------------
# Salt evaluates a compound target by turning each word into True/False and handing the string to
# Python; Python's parser (via ast, never eval) is therefore the reference for precedence.

ORACLE_ID = "mx1"
ORACLE_GRAINS = {"os": "Debian", "roles": ["web"], "ipv4": ["10.0.0.5"]}
LEAVES = {
    "mx*": True, "db*": False, "G@os:debian": True, "G@os:RedHat": False, r"E@m(x|y)\d": True,
    "E@(db|web)": False, "L@a,mx1": True, "S@10.0.0.0/24": True, "S@192.168.0.0/16": False,
    "G@roles:web": True, "P@os:^deb": True, "I@any:*": False,
}


def _oracle(node: ast.AST) -> bool:
    if isinstance(node, ast.Expression):
        return _oracle(node.body)
    if isinstance(node, ast.BoolOp):
        values = [_oracle(v) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _oracle(node.operand)
    assert isinstance(node, ast.Constant) and isinstance(node.value, bool), ast.dump(node)
    return node.value


expressions = st.recursive(
    st.sampled_from(sorted(LEAVES)).map(lambda word: [word]),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda t: [*t[0], t[1], *t[2]]),
        inner.map(lambda t: ["not", *t]),
        inner.map(lambda t: ["(", *t, ")"]),
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(words=expressions)
def test_fuzz_compound_agrees_with_python_precedence(words: list[str]) -> None:
    python = " ".join(str(LEAVES[w]) if w in LEAVES else w for w in words)
    expected = _oracle(ast.parse(python, mode="eval"))
    spaced = " ".join(words)
    glued = re.sub(r"\( ", "(", re.sub(r" \)", ")", spaced))
    for tgt in (spaced, glued, words):
        assert compile_target(tgt, "compound").matches(ORACLE_ID, ORACLE_GRAINS) is expected, (tgt, python)
