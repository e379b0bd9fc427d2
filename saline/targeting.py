"""Salt's targeting: which minions a job is for.

A target is compiled once (:func:`compile_target`) into a :class:`Matcher`, which then answers for
many minions. The minion asks "is this job for me?" with its own id and grains; the master asks
which accepted minions should answer, from their last known grains (:func:`expected_minions`).

Target types are Salt's: ``glob``, ``pcre``, ``list``, ``grain``, ``grain_pcre``, ``ipcidr``,
``pillar``, ``pillar_pcre``, ``nodegroup`` and ``compound`` (``G@os:Debian and not E@db\\d+``).
A compound expression is parsed into a small tree and evaluated per minion; nothing is ``eval``-ed.
On the master a minion's grains may be unknown (never reported): a test that depends on them is
then neither true nor false, and :func:`expected_minions` keeps such minions, as Salt's greedy
matching does.

Where saline deliberately parts from Salt:

* Salt logs a bad expression and matches nothing; saline raises :class:`TargetError` (one line
  naming the problem) when the target is compiled, so the CLI can say what is wrong.
* An unknown prefix (``Z@x``) is an error; Salt would quietly treat it as a glob on the id.
* Parentheses may be glued to words (``(G@os:Debian or web*)``); Salt needs spaces around them.
* Grain/pillar regexes are case-insensitive through ``re.IGNORECASE`` instead of Salt's lowercasing
  of the pattern, so escapes like ``\\D`` and ``\\S`` keep their meaning.
* The ``*<delimiter>`` wildcard key uses the configured delimiter (Salt hard-codes ``*:``).
* A nodegroup made only of bare names (``web1,web2 db1`` or a list of them) is a list of ids;
  Salt turns such a group into ``E@`` instead when a name holds a regex character.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol

TGT_TYPES = ("glob", "pcre", "list", "grain", "grain_pcre", "ipcidr", "compound", "pillar", "pillar_pcre",
             "nodegroup")

# Compound prefixes: letter -> the target type it stands for (N@ is expanded while parsing).
_ENGINES = {"G": "grain", "P": "grain_pcre", "I": "pillar", "J": "pillar_pcre", "L": "list", "E": "pcre",
            "S": "ipcidr", "N": "nodegroup"}
# Only these take Salt's one-character custom delimiter, as in ``G%@os%Debian``.
_DELIMITED_ENGINES = "GPIJ"
_PREFIX = re.compile(r"([A-Z])([^@\s]?)@")
_OPERATORS = frozenset({"and", "or", "not"})
# Parentheses plus nodegroup nesting. Parsing and evaluation recurse once per level, so a bound keeps
# a hostile ``((((...`` a TargetError instead of a RecursionError (at most ~450 frames deep).
_MAX_DEPTH = 100
# How deep grain/pillar matching follows nested data before giving up on a branch.
_MAX_DATA_DEPTH = 64
_LIST_SPLIT = re.compile(r"[,\s]+")
_PLAIN_ID = re.compile(r"[^\s()*?\[@]+")
_INT_KEY = re.compile(r"-?[0-9]+")
_ESCAPED = re.compile(r"\\.", re.DOTALL)


class TargetError(ValueError):
    """A target expression that cannot be compiled; the message is one line naming the problem."""


class _Unknown:
    """Grains the master has not seen yet: a grain test on them is neither true nor false."""

    def __repr__(self) -> str:
        return "<unknown grains>"


_UNKNOWN = _Unknown()
_MISSING = object()


def _show(text: str, limit: int = 80) -> str:
    """``text`` fit for a one-line message: line breaks and control characters as spaces, long text cut."""
    shown = "".join(" " if ch.isspace() or not ch.isprintable() else ch for ch in text[:limit])
    return shown + "..." if len(text) > limit else shown


def _compile(source: str, flags: int, problem: str) -> re.Pattern[str]:
    """``re.compile``, with every way it can fail turned into a TargetError starting with ``problem``."""
    try:
        return re.compile(source, flags)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise TargetError(f"{problem}: {exc.msg}{where}") from None
    except (RecursionError, OverflowError, ValueError) as exc:  # absurd nesting or repeat counts
        raise TargetError(f"{problem}: {type(exc).__name__}") from None


def _try_compile(source: str, flags: int) -> Callable[[str], Any] | None:
    """A compiled ``match`` for ``source``, or None if it is not a valid regex."""
    try:
        return re.compile(source, flags).match
    except (re.error, RecursionError, OverflowError, ValueError):
        return None


def _text(value: Any) -> str | None:
    """A value's lowercased string form, as Salt compares grains; None if it has no usable one."""
    if isinstance(value, str):
        return value.lower()
    try:
        return str(value).lower()
    except Exception:  # an int too long to print, a structure too deep to repr: it just does not match
        return None


# -- the tree a target compiles to ---------------------------------------------------------------
# Every node answers ``ev(minion_id, grains, pillar)`` with True, False, or None when the answer
# depends on grains that are not known (_UNKNOWN). None follows Kleene logic through and/or/not.

class _Node(Protocol):
    def ev(self, minion_id: str, grains: Any, pillar: Any) -> bool | None: ...


class _IdPattern:
    """A glob (translated to a regex) or a Salt ``pcre`` (``re.match``) on the minion id."""

    __slots__ = ("_match",)

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self._match = pattern.match

    def ev(self, minion_id: str, grains: Any, pillar: Any) -> bool:
        return self._match(minion_id) is not None


class _IdSet:
    __slots__ = ("_ids",)

    def __init__(self, ids: frozenset[str]) -> None:
        self._ids = ids

    def ev(self, minion_id: str, grains: Any, pillar: Any) -> bool:
        return minion_id in self._ids


class _Data:
    """A grain or pillar test (``G@``, ``P@``, ``I@``, ``J@``)."""

    __slots__ = ("_query", "_pillar")

    def __init__(self, query: _DataQuery, pillar: bool) -> None:
        self._query = query
        self._pillar = pillar

    def ev(self, minion_id: str, grains: Any, pillar: Any) -> bool | None:
        data = pillar if self._pillar else grains
        if data is _UNKNOWN:
            return None
        return self._query.match(data)


@functools.lru_cache(maxsize=16384)
def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # The master checks the same minions' addresses on every publish; parse each string once.
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


class _Cidr:
    """``S@``: an address or network against the ``ipv4``/``ipv6`` grain lists."""

    __slots__ = ("_grain", "_target", "_network")

    def __init__(self, target: ipaddress.IPv4Address | ipaddress.IPv6Address
                 | ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        self._grain = f"ipv{target.version}"
        self._target = target
        self._network = isinstance(target, (ipaddress.IPv4Network, ipaddress.IPv6Network))

    def ev(self, minion_id: str, grains: Any, pillar: Any) -> bool | None:
        if grains is _UNKNOWN:
            return None
        if not isinstance(grains, Mapping):
            return False
        values = grains.get(self._grain)
        if isinstance(values, str):
            values = (values,)
        elif not isinstance(values, (list, tuple)):
            return False
        for item in values:
            address = _parse_ip(item) if isinstance(item, str) else None
            if address is None:
                continue
            if (address in self._target) if self._network else (address == self._target):  # type: ignore[operator]
                return True
        return False


class _Not:
    __slots__ = ("_part",)

    def __init__(self, part: _Node) -> None:
        self._part = part

    def ev(self, minion_id: str, grains: Any, pillar: Any) -> bool | None:
        value = self._part.ev(minion_id, grains, pillar)
        return None if value is None else not value


class _All:
    __slots__ = ("_parts",)

    def __init__(self, parts: list[_Node]) -> None:
        self._parts = tuple(parts)

    def ev(self, minion_id: str, grains: Any, pillar: Any) -> bool | None:
        result: bool | None = True
        for part in self._parts:
            value = part.ev(minion_id, grains, pillar)
            if value is False:
                return False
            if value is None:
                result = None
        return result


class _Any:
    __slots__ = ("_parts",)

    def __init__(self, parts: list[_Node]) -> None:
        self._parts = tuple(parts)

    def ev(self, minion_id: str, grains: Any, pillar: Any) -> bool | None:
        result: bool | None = False
        for part in self._parts:
            value = part.ev(minion_id, grains, pillar)
            if value is True:
                return True
            if value is None:
                result = None
        return result


# -- grain and pillar expressions ----------------------------------------------------------------

def _traverse(data: Any, path: tuple[str, ...]) -> Any:
    """Follow ``path`` through nested dicts and lists as Salt does; _MISSING if it leads nowhere.

    In a list, a numeric key is an index and any other key is looked up in the list's dicts.
    """
    node = data
    for key in path:
        if isinstance(node, dict):
            if key in node:
                node = node[key]
                continue
            # Salt YAML-loads a key it cannot find, so ``8`` still reaches an integer key 8.
            number = _int_key(key)
            if number is None or number not in node:
                return _MISSING
            node = node[number]
        elif isinstance(node, (list, tuple)):
            number = _int_key(key)
            lookup: Any = key if number is None else number
            found: Any = _MISSING
            for item in node:
                if isinstance(item, dict) and lookup in item:
                    found = item[lookup]
                    break
            if found is _MISSING and number is not None and -len(node) <= number < len(node):
                found = node[number]
            if found is _MISSING:
                return _MISSING
            node = found
        else:
            return _MISSING
    return node


def _int_key(key: str) -> int | None:
    if not _INT_KEY.fullmatch(key):
        return None
    try:
        return int(key)
    except ValueError:  # more digits than Python converts
        return None


class _DataQuery:
    """Salt's ``subdict_match``: does ``key[:subkey...]:value`` hold in a nested dict?

    The expression is split at every delimiter in turn (longest key first), so values may contain
    the delimiter (``ipv6:fe80::1``) and keys may be nested (``a:b:c``). A list value matches if a
    member does; a dict value matches if the pattern names one of its keys. Values are compared by
    their lowercased string form, so ``True``, ``1`` and ``debian`` all match as Salt's do. Compiled
    pieces are cached per string: the expression compiles once, then only each minion's data is walked.
    """

    __slots__ = ("_delimiter", "_wildcard", "_regex", "_expr", "_splits", "_tests")

    def __init__(self, expr: str, delimiter: str, regex: bool) -> None:
        self._delimiter = delimiter
        self._wildcard = "*" + delimiter
        self._regex = regex
        self._expr = expr
        self._splits: dict[str, tuple[tuple[tuple[str, ...] | None, str], ...]] = {}
        self._tests: dict[str, Callable[[str], Any] | None] = {}

    def match(self, data: Any) -> bool:
        return self._subdict(data, self._expr, 0)

    def values(self) -> list[str]:
        """Every candidate value pattern, longest first (for checking regexes at compile time)."""
        return [value[len(self._wildcard):] if path is None else value
                for path, value in self._candidates(self._expr)]

    def _candidates(self, expr: str) -> tuple[tuple[tuple[str, ...] | None, str], ...]:
        found = self._splits.get(expr)
        if found is None:
            parts = expr.split(self._delimiter)
            out: list[tuple[tuple[str, ...] | None, str]] = []
            for idx in range(len(parts) - 1, 0, -1):
                if idx == 1 and parts[0] == "*":
                    out.append((None, expr))  # ``*:value`` tests every top-level entry
                else:
                    out.append((tuple(parts[:idx]), self._delimiter.join(parts[idx:])))
            found = self._splits[expr] = tuple(out)
        return found

    def _test(self, pattern: str) -> Callable[[str], Any] | None:
        try:
            return self._tests[pattern]
        except KeyError:
            pass
        if self._regex:
            test = _try_compile(pattern, re.IGNORECASE)
        else:
            test = _try_compile(fnmatch.translate(pattern.lower()), 0)
        self._tests[pattern] = test
        return test

    def _scalar(self, value: Any, pattern: str) -> bool:
        test = self._test(pattern)
        if test is None:
            return False
        text = _text(value)
        return text is not None and test(text) is not None

    def _subdict(self, data: Any, expr: str, depth: int) -> bool:
        if depth > _MAX_DATA_DEPTH:
            return False
        for path, pattern in self._candidates(expr):
            found = data if path is None else _traverse(data, path)
            if found is _MISSING or (isinstance(found, dict) and not found):
                continue
            if isinstance(found, dict):
                if self._dict(found, pattern, depth + 1):
                    return True
            elif isinstance(found, (list, tuple)):
                for member in found:
                    if isinstance(member, dict) and self._dict(member, pattern, depth + 1):
                        return True
                    if self._scalar(member, pattern):
                        return True
            elif self._scalar(found, pattern):
                return True
        return False

    def _dict(self, target: dict, pattern: str, depth: int) -> bool:
        if depth > _MAX_DATA_DEPTH:
            return False
        wildcard = pattern.startswith(self._wildcard)
        if wildcard:
            pattern = pattern[len(self._wildcard):]
        if pattern == "*" or pattern in target:  # the key exists
            return True
        if self._subdict(target, pattern, depth):
            return True
        if wildcard:
            for value in target.values():
                if isinstance(value, dict):
                    if self._dict(value, pattern, depth + 1):
                        return True
                elif isinstance(value, (list, tuple)):
                    if any(self._scalar(item, pattern) for item in value):
                        return True
                elif self._scalar(value, pattern):
                    return True
        return False


# -- compiling -----------------------------------------------------------------------------------

class _Token(NamedTuple):
    kind: str  # "and", "or", "not", "(", ")" or "word"
    text: str
    pos: int


def _tokenize(tgt: str | list | tuple) -> list[_Token]:
    """Split a compound target into tokens, peeling parentheses glued to words.

    A string splits at whitespace and positions are 1-based columns; a list (Salt's other form of
    a compound target) is taken word by word and positions are 1-based word numbers.
    """
    if isinstance(tgt, str):
        words = [(m.group(), m.start() + 1) for m in re.finditer(r"\S+", tgt)]
    else:
        words = [(str(word).strip(), idx + 1) for idx, word in enumerate(tgt)]
    column = isinstance(tgt, str)
    tokens: list[_Token] = []
    for word, pos in words:
        if not word:
            continue
        lead = len(word) - len(word.lstrip("("))
        tokens.extend(_Token("(", "(", pos + idx if column else pos) for idx in range(lead))
        body = word[lead:]
        # Only peel the closing parentheses the word itself does not open, so E@web(1|2) stays whole.
        unescaped = _ESCAPED.sub("", body)
        excess = unescaped.count(")") - unescaped.count("(")
        trailing = min(max(excess, 0), len(body) - len(body.rstrip(")")))
        if trailing:
            body = body[:-trailing]
        if body:
            kind = body if body in _OPERATORS else "word"
            tokens.append(_Token(kind, body, pos + lead if column else pos))
        start = pos + lead + len(body)
        tokens.extend(_Token(")", ")", start + idx if column else pos) for idx in range(trailing))
    return tokens


class _Parser:
    """Recursive descent over compound tokens: ``or`` < ``and`` < ``not`` < parentheses.

    Like Salt, ``web* not db*`` reads as ``web* and not db*``.
    """

    def __init__(self, compiler: _Compiler, tokens: list[_Token], label: str, unit: str, depth: int) -> None:
        self._compiler = compiler
        self._tokens = tokens
        self._label = label
        self._unit = unit
        self._depth = depth
        self._nested = label.startswith("nodegroup '")
        self._i = 0

    def parse(self) -> _Node:
        if not self._tokens:
            raise TargetError(f"{self._label} is empty")
        node = self._or()
        if self._i < len(self._tokens):
            tok = self._tokens[self._i]
            if tok.kind == ")":
                raise self._error(f"unmatched ')' {self._at(tok)}")
            raise self._error(f"missing 'and' or 'or' before '{_show(tok.text)}' {self._at(tok)}")
        return node

    def _at(self, tok: _Token) -> str:
        return f"at {self._unit} {tok.pos}"

    def _error(self, problem: str) -> TargetError:
        return TargetError(f"{self._label}: {problem}")

    def _peek(self) -> str | None:
        return self._tokens[self._i].kind if self._i < len(self._tokens) else None

    def _or(self) -> _Node:
        parts = [self._and()]
        while self._peek() == "or":
            self._i += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else _Any(parts)

    def _and(self) -> _Node:
        parts = [self._not()]
        while True:
            kind = self._peek()
            if kind == "and":
                self._i += 1
            elif kind != "not":  # a ``not`` right after an operand is Salt's implicit ``and not``
                break
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else _All(parts)

    def _not(self) -> _Node:
        # Consecutive nots fold by parity: no recursion, however many there are.
        negate = False
        while self._peek() == "not":
            negate = not negate
            self._i += 1
        node = self._primary()
        return _Not(node) if negate else node

    def _primary(self) -> _Node:
        if self._i >= len(self._tokens):
            last = self._tokens[-1]
            raise self._error(f"ends after '{_show(last.text)}' {self._at(last)}: a target is missing")
        tok = self._tokens[self._i]
        self._i += 1
        if tok.kind == "word":
            try:
                return self._compiler.word(tok.text, f"'{_show(tok.text)}' {self._at(tok)}", self._depth)
            except TargetError as exc:
                if self._nested and str(exc).startswith("nodegroup '"):
                    raise  # name the innermost group only, however deep the nesting
                raise self._error(str(exc)) from None
        if tok.kind == "(":
            if self._depth >= _MAX_DEPTH:
                raise self._error(f"parentheses nested more than {_MAX_DEPTH} deep {self._at(tok)}")
            self._depth += 1
            node = self._or()
            self._depth -= 1
            if self._i >= len(self._tokens):
                raise self._error(f"unmatched '(' {self._at(tok)}")
            if self._tokens[self._i].kind == ")":
                self._i += 1
                return node
            nxt = self._tokens[self._i]
            raise self._error(f"missing 'and' or 'or' before '{_show(nxt.text)}' {self._at(nxt)}")
        raise self._error(f"unexpected '{tok.text}' {self._at(tok)}: a target is missing before it")


class _Compiler:
    """Builds the tree for one target; expands each nodegroup at most once."""

    def __init__(self, delimiter: str, nodegroups: Mapping[str, Any] | None) -> None:
        self.delimiter = delimiter
        self.nodegroups = nodegroups or {}
        self._expanded: dict[str, _Node] = {}
        self._stack: list[str] = []

    def root(self, tgt: Any, tgt_type: str) -> _Node:
        if isinstance(tgt, (list, tuple)):
            if tgt_type == "list":
                ids = frozenset(text for text in (str(item).strip() for item in tgt) if text)
                if not ids:
                    raise TargetError("list target is empty")
                return _IdSet(ids)
            if tgt_type == "compound":
                return self.compound(tgt, "compound target", 0)
            raise TargetError(f"a {tgt_type} target must be a string, got a list")
        if not isinstance(tgt, str):
            raise TargetError(f"a {tgt_type} target must be a string, got {type(tgt).__name__}")
        if tgt_type == "compound":
            return self.compound(tgt, f"compound target '{_show(tgt)}'", 0)
        text = tgt.strip()
        if not text:
            raise TargetError(f"{tgt_type} target is empty")
        if tgt_type == "nodegroup":
            return self.nodegroup(text, f"'{_show(text)}'", 0)
        return self.term(tgt_type, text, self.delimiter, f"{tgt_type} target '{_show(text)}'")

    def compound(self, tgt: str | list | tuple, label: str, depth: int) -> _Node:
        unit = "column" if isinstance(tgt, str) else "word"
        return _Parser(self, _tokenize(tgt), label, unit, depth).parse()

    def word(self, word: str, what: str, depth: int) -> _Node:
        """One compound word: ``X@pattern`` with a known prefix, or else a glob on the id."""
        found = _PREFIX.match(word)
        if found is None:
            return self.term("glob", word, self.delimiter, what)
        engine, delimiter = found.group(1), found.group(2)
        if delimiter and engine not in _DELIMITED_ENGINES:
            return self.term("glob", word, self.delimiter, what)  # Salt reads ``Ex@...`` as a glob too
        if engine not in _ENGINES:
            hint = "range targeting (R@) is not supported" if engine == "R" else \
                "known prefixes: " + " ".join(f"{letter}@" for letter in sorted(_ENGINES))
            raise TargetError(f"unknown target prefix '{engine}{delimiter}@' in {what} ({hint})")
        pattern = word[found.end():]
        if not pattern:
            raise TargetError(f"nothing after '@' in {what}")
        if engine == "N":
            # A nodegroup level takes about twice the stack of a parenthesis, so it counts double.
            return self.nodegroup(pattern, f"'{_show(pattern)}' in {what}", depth + 2)
        return self.term(_ENGINES[engine], pattern, delimiter or self.delimiter, what)

    def term(self, kind: str, pattern: str, delimiter: str, what: str) -> _Node:
        """A single non-compound test; ``what`` names it in error messages."""
        if kind == "glob":
            # Salt's fnmatch on the id; case-sensitive as on the POSIX systems minions run on.
            return _IdPattern(_compile(fnmatch.translate(pattern), 0, f"invalid glob {what}"))
        if kind == "pcre":
            return _IdPattern(_compile(pattern, 0, f"invalid regular expression {what}"))
        if kind == "list":
            ids = frozenset(item for item in _LIST_SPLIT.split(pattern) if item)
            if not ids:
                raise TargetError(f"no minion ids in {what}")
            return _IdSet(ids)
        if kind == "ipcidr":
            return _Cidr(_ip_target(pattern, what))
        regex = kind.endswith("_pcre")
        source = "pillar" if kind.startswith("pillar") else "grain"
        if delimiter not in pattern:
            raise TargetError(f"{what} needs {source}{delimiter}value (no '{_show(delimiter)}' in it)")
        if pattern.startswith(delimiter):
            raise TargetError(f"{what} has no {source} name before '{_show(delimiter)}'")
        query = _DataQuery(pattern, delimiter, regex)
        if regex:
            # The value may itself hold the delimiter, so each split is a candidate; one must compile.
            values = query.values()
            if not any(_try_compile(value, re.IGNORECASE) for value in values):
                _compile(values[0], re.IGNORECASE, f"invalid regular expression in {what}")
        return _Data(query, pillar=source == "pillar")

    def nodegroup(self, name: str, what: str, depth: int) -> _Node:
        if name in self._expanded:
            return self._expanded[name]
        if name in self._stack:
            cycle = " -> ".join([*self._stack[self._stack.index(name):], name])
            raise TargetError(f"nodegroup '{_show(name)}' includes itself ({cycle})")
        if name not in self.nodegroups:
            known = "no nodegroups are configured" if not self.nodegroups else \
                "known: " + ", ".join(sorted(str(key) for key in self.nodegroups))
            raise TargetError(f"unknown nodegroup {what} ({_show(known)})")
        if depth > _MAX_DEPTH:
            raise TargetError(f"nodegroups nested too deeply (about {_MAX_DEPTH // 2} levels) at '{_show(name)}'")
        definition = self.nodegroups[name]
        label = f"nodegroup '{_show(name)}'"
        if isinstance(definition, str):
            words = definition.split()
        elif isinstance(definition, (list, tuple)):
            words = [str(word).strip() for word in definition]
        else:
            raise TargetError(f"{label} must be a compound string or a list, got {type(definition).__name__}")
        self._stack.append(name)
        try:
            if all(_PLAIN_ID.fullmatch(word) and word not in _OPERATORS for word in words if word):
                # Like Salt: a definition of bare names (``web1,web2`` or ``[web1, web2]``) is a list.
                node: _Node = _IdSet(frozenset(i for word in words for i in _LIST_SPLIT.split(word) if i))
            else:
                node = self.compound(definition, label, depth)
        finally:
            self._stack.pop()
        self._expanded[name] = node
        return node


def _ip_target(text: str, what: str) -> Any:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise TargetError(f"{what} is not an IP address or CIDR network ({_show(str(exc))})") from None
        raise TargetError(f"{what} has host bits set (did you mean {loose}?)") from None


# -- public API ----------------------------------------------------------------------------------

class Matcher:
    """A compiled target. :meth:`matches` answers for one minion; reuse it for many."""

    __slots__ = ("tgt", "tgt_type", "_root")

    def __init__(self, tgt: Any, tgt_type: str, root: _Node) -> None:
        self.tgt = tgt
        self.tgt_type = tgt_type
        self._root = root

    def __repr__(self) -> str:
        return f"Matcher({self.tgt!r}, {self.tgt_type!r})"

    def matches(self, minion_id: str, grains: dict | None, pillar: dict | None = None) -> bool:
        """Does the target select this minion? ``None`` grains or pillar count as empty."""
        mid = minion_id if isinstance(minion_id, str) else str(minion_id)
        return self._root.ev(mid, {} if grains is None else grains, {} if pillar is None else pillar) is True

    def id_test(self) -> Callable[[str], Any] | None:
        """A test of the minion id alone (truthy: selected) when the target names nothing else
        (a glob, a pcre, a list), else None: thousands of ids are then checked at C speed."""
        root = self._root
        if isinstance(root, _IdPattern):
            return root._match
        if isinstance(root, _IdSet):
            return root._ids.__contains__
        return None

    def evaluate(self, minion_id: str, grains: dict | None, pillar: dict | None = None) -> bool | None:
        """Like :meth:`matches`, but ``None`` grains are unknown: None when the answer depends on them."""
        mid = minion_id if isinstance(minion_id, str) else str(minion_id)
        return self._root.ev(mid, _UNKNOWN if grains is None else grains, {} if pillar is None else pillar)


def compile_target(tgt: str | list, tgt_type: str = "glob", *, delimiter: str = ":",
                   nodegroups: dict | None = None) -> Matcher:
    """Compile ``tgt`` once; raises TargetError (one line) if it is not a valid target of ``tgt_type``.

    ``delimiter`` separates nested grain/pillar keys from the value. ``nodegroups`` maps a name to
    a compound string or a list of words (the master's ``nodegroups`` option) for ``N@`` and the
    ``nodegroup`` type.
    """
    if not isinstance(tgt_type, str) or tgt_type not in TGT_TYPES:
        raise TargetError(f"unknown target type '{_show(str(tgt_type))}' (expected one of: {', '.join(TGT_TYPES)})")
    if not isinstance(delimiter, str) or not delimiter:
        raise TargetError(f"the target delimiter must be a non-empty string, got {_show(repr(delimiter))}")
    if nodegroups is not None and not isinstance(nodegroups, Mapping):
        raise TargetError(f"nodegroups must be a mapping of name to target, got {type(nodegroups).__name__}")
    return Matcher(tgt, tgt_type, _Compiler(delimiter, nodegroups).root(tgt, tgt_type))


def match(tgt: str | list, tgt_type: str, minion_id: str, grains: dict | None, *, delimiter: str = ":",
          nodegroups: dict | None = None, pillar: dict | None = None) -> bool:
    """Compile and check in one go, for a single minion (the minion's own question); may raise TargetError."""
    return compile_target(tgt, tgt_type, delimiter=delimiter, nodegroups=nodegroups).matches(minion_id, grains, pillar)


def expected_minions(tgt: str | list, tgt_type: str, minions: Mapping[str, dict | None] | Iterable[str], *,
                     grains: Mapping[str, dict | None] | None = None, delimiter: str = ":",
                     nodegroups: dict | None = None, greedy: bool = True) -> list[str]:
    """Sorted ids of the minions the target selects, from ``{id: last known grains or None}``,
    or from the ids alone with their grains in ``grains`` (an id missing there: grains unknown),
    so that a caller keeping both apart builds nothing per call.

    A minion whose grains are unknown is kept when the answer depends on them (Salt's ``greedy``
    default: better to wait for a minion that may answer than to drop its return); ``greedy=False``
    keeps only certain matches. Pillar is not known on the master, so pillar tests never match here.
    """
    matcher = compile_target(tgt, tgt_type, delimiter=delimiter, nodegroups=nodegroups)
    names = list(minions)
    by_id = matcher.id_test()
    if by_id is not None:
        if set(map(type, names)) <= {str}:  # the usual case: every id tested in C, in one call
            return sorted(filter(by_id, names))
        return sorted(m for m in names if by_id(m if isinstance(m, str) else str(m)))
    known: Mapping[str, dict | None] = grains if grains is not None else minions  # type: ignore[assignment]
    chosen = []
    for minion_id in names:
        result = matcher.evaluate(minion_id, known.get(minion_id))
        if result is True or (greedy and result is None):
            chosen.append(minion_id)
    return sorted(chosen)


def named_ids(tgt: str | list, tgt_type: str) -> list[str]:
    """The minion ids a target names outright, which Salt reports as "missing" when no such minion
    is accepted: every id of a list target, and in a compound target the ids of ``L@`` words and
    the words that are plain ids (a glob without wildcards), except right after ``not``."""
    if tgt_type == "list":
        items = tgt if isinstance(tgt, (list, tuple)) else _LIST_SPLIT.split(str(tgt))
        return list(dict.fromkeys(str(i).strip() for i in items if str(i).strip()))
    if tgt_type != "compound":
        return []
    found: list[str] = []
    previous = ""
    for token in _tokenize(tgt):
        if token.kind == "word" and previous != "not":
            word = token.text
            if word.startswith("L@"):
                found += [i for i in _LIST_SPLIT.split(word[2:]) if i]
            elif _PLAIN_ID.fullmatch(word) and not _PREFIX.match(word):
                found.append(word)
        previous = token.kind
    return list(dict.fromkeys(found))
