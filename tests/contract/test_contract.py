"""The contract: what "a returner works" means, checked against every returner on its real backend.

Every module in ``tests/contract/cases/`` that defines ``CASES`` joins the suite without editing
this file. Each test runs once per case (test id = the case name). A capability a returner does
not have is still checked: ``supports()`` must say so and the call must raise ``Unsupported``.

What a case may give in ``extra`` (all optional):

- ``count(values, tmp_path, jid) -> int``: returns stored for ``jid``, read from the backend
  directly (rows, files, lines). Needed to see duplicates a read side would hide, and to check
  write-only returners.
- ``count_events(values, tmp_path, jid) -> int``: stored events whose tag contains ``jid``;
  required when the returner has ``event_returns``.
- ``fetch(values, tmp_path, jid) -> {minion: return value}``: the stored values of a returner
  without a read side, so they can be compared with what was written.
- ``duplicates``: ``"ignored"`` (default: a batch delivered twice is stored once) or ``"kept"``
  (an append-only backend stores it twice, as documented).
- ``bytes``: ``"kept"`` when bytes come back as bytes (msgpack), else they come back as text.
- ``jsonb``: the backend cannot hold U+0000 or NaN (PostgreSQL jsonb): they read back as U+FFFD
  and ``"nan"``.
- ``load_keys`` / ``ret_keys``: the only load keys / return keys the backend keeps.
- ``kwargs(values, tmp_path) -> dict``: ``--return_kwargs`` that make the unreachable config
  work, for returners whose unreachable keys are not their own options.
- ``expires``: the backend drops old jobs by itself (a TTL of ``keep_jobs_seconds``).
"""

from __future__ import annotations

import datetime as dt
import importlib
import math
import pkgutil
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from saline.config import ConfigError
from saline.jid import format_jid_instance, gen_jid
from saline.returners import registry
from saline.returners.base import Returner, ReturnerError, Unsupported
from saline.returners.options import secret_values
from tests.contract import cases as cases_package
from tests.contract.harness import ContractCase


def discover() -> list[ContractCase]:
    found: list[ContractCase] = []
    for info in sorted(pkgutil.iter_modules(cases_package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{cases_package.__name__}.{info.name}")
        found.extend(getattr(module, "CASES", []))
    return found


CASES = discover()
READ_SIDE = ("get_load", "get_jid", "get_jids")
EVIL = "'); DROP TABLE salt_returns; --"
UNICODE = ("emoji 😀🎉👩‍💻 cjk 漢字かなカナ 한국어 rtl עברית العربية \u200f mixed ltr "
           "controls \x01\x07\x08\x0b\x0c\x1b\x1f\x7f\u0085 separators \u2028\u2029 combining e\u0301 end")


# -- the environment of one case ------------------------------------------------------------------
class Env:
    def __init__(self, case: ContractCase, values: dict[str, Any], tmp_path: Path, base: dict[str, Any]) -> None:
        self.case = case
        self.values = values
        self.tmp_path = tmp_path
        self.base = base
        self.good = case.config(values, tmp_path)
        self.opts = {**base, **self.good}
        self.made: list[Returner] = []

    def make(self, opts: dict[str, Any] | None = None, ret_config: str | None = None,
             ret_kwargs: dict[str, Any] | None = None, init: bool = True) -> Returner:
        returner = registry.create(self.case.name, self.opts if opts is None else opts, ret_config, ret_kwargs)
        self.made.append(returner)
        if init and returner.supports("init_schema"):
            returner.init_schema()
        return returner

    def bad(self) -> dict[str, Any]:
        assert self.case.unreachable is not None
        return self.case.unreachable(self.values, self.tmp_path)

    def _call(self, key: str, jid: str) -> Any:
        fn = self.case.extra.get(key)
        return None if fn is None else fn(self.values, self.tmp_path, jid)

    def count(self, jid: str) -> int | None:
        return self._call("count", jid)

    def count_events(self, jid: str) -> int | None:
        return self._call("count_events", jid)

    def stored(self, returner: Returner, jid: str) -> dict[str, Any] | None:
        """``{minion: stored return value}`` through the read side, else ``fetch``; None if neither."""
        if returner.has_read_side():
            return {minion: value_of(item) for minion, item in returner.get_jid(jid).items()}
        fetched = self._call("fetch", jid)
        return None if fetched is None else dict(fetched)

    def returns_seen(self, returner: Returner, jid: str) -> int:
        """How many returns of ``jid`` the backend holds (the count callable, else the read side)."""
        counted = self.count(jid)
        if counted is not None:
            return counted
        stored = self.stored(returner, jid)
        assert stored is not None, f"case {self.case.name}: no read side: give extra['count']"
        return len(stored)

    def expected(self, value: Any) -> Any:
        """What ``value`` reads back as on this backend."""
        if self.case.extra.get("bytes") != "kept":
            value = decoded(value)
        if self.case.extra.get("jsonb"):
            value = jsonb(value)
        return value

    def close(self) -> None:
        for returner in self.made:
            returner.close()


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def env(request: pytest.FixtureRequest, tmp_path: Path, master_opts: dict[str, Any]) -> Iterator[Env]:
    case: ContractCase = request.param
    values = {name: request.getfixturevalue(name) for name in case.fixtures}
    environment = Env(case, values, tmp_path, master_opts)
    try:
        yield environment
    finally:
        environment.close()


# -- helpers -----------------------------------------------------------------------------------------
def stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat()


def make_ret(jid: str, minion: str, value: Any, fun: str = "test.ping", fun_args: list[Any] | None = None,
             retcode: int = 0, **extra: Any) -> dict[str, Any]:
    """A return as the master hands it to returners (Salt's master-side return load)."""
    return {"cmd": "_return", "id": minion, "jid": jid, "fun": fun, "fun_args": fun_args or [],
            "return": value, "retcode": retcode, "success": retcode == 0, "_stamp": stamp(), **extra}


def make_load(jid: str, fun: str = "test.ping", arg: list[Any] | None = None, minions: list[str] | None = None,
              **extra: Any) -> dict[str, Any]:
    return {"cmd": "publish", "jid": jid, "fun": fun, "arg": arg or [], "tgt": "web*", "tgt_type": "glob",
            "user": "root", "ret": "", "minions": minions or [], "kwargs": {"show_jid": False}, **extra}


def value_of(item: Any) -> Any:
    """The return value inside what ``get_jid``/``get_fun`` give (a whole return, or the value)."""
    return item["return"] if isinstance(item, dict) and "return" in item else item


def decoded(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {decoded(k): decoded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [decoded(v) for v in value]
    return value


def jsonb(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, dict):
        return {jsonb(k): jsonb(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonb(v) for v in value]
    return value


def assert_unsupported(returner: Returner, method: str, *args: Any) -> None:
    assert not returner.supports(method), f"{returner.name} claims {method}"
    with pytest.raises(Unsupported) as info:
        getattr(returner, method)(*args)
    assert str(info.value).startswith(f"returner {returner.name}")


def assert_one_line(message: str, name: str) -> None:
    assert message.startswith(f"returner {name}"), message
    assert "\n" not in message and "\r" not in message, message
    assert "Traceback" not in message


def check_load(env: Env, got: dict[str, Any], load: dict[str, Any]) -> None:
    keys = env.case.extra.get("load_keys") or tuple(load)
    for key in keys:
        if key in load:
            assert got.get(key) == load[key], (key, got.get(key), load[key])


# -- the contract ------------------------------------------------------------------------------------
def test_write_then_read_back(env: Env) -> None:
    r = env.make()
    jid = gen_jid()
    load = make_load(jid, "test.arg", ["a", {"k": 1}], minions=["web1", "web2"])
    rets = [make_ret(jid, "web1", {"a": [1, 2.5, None, True], "b": "text", "c": {"d": []}}, "test.arg", ["a", {"k": 1}]),
            make_ret(jid, "web2", "ERROR: boom", "test.arg", ["a", {"k": 1}], retcode=1)]
    if r.supports("save_loads"):
        r.save_loads([(jid, load, load["minions"])])
    else:
        assert_unsupported(r, "save_loads", [(jid, load, None)])
    r.returns(rets)
    assert env.returns_seen(r, jid) == 2

    stored = env.stored(r, jid)
    if stored is not None:
        assert set(stored) == {"web1", "web2"}
        if env.case.lossless:
            assert stored["web1"] == rets[0]["return"]
            assert stored["web2"] == "ERROR: boom"

    if not r.has_read_side():
        for method in READ_SIDE:
            assert_unsupported(r, method, *([jid] if method != "get_jids" else []))
        for method, args in (("get_fun", ("test.arg",)), ("get_minions", ()), ("get_jids_filter", (5,))):
            assert_unsupported(r, method, *args)
        return

    check_load(env, r.get_load(jid), load)
    unknown = gen_jid()
    assert r.get_load(unknown) == {}
    assert r.get_jid(unknown) == {}
    listing = r.get_jids()
    assert listing[jid] == format_jid_instance(jid, load)
    assert listing[jid]["Function"] == "test.arg" and listing[jid]["Target"] == "web*"

    # two newer jobs: a find_job probe (filtered out by default) and a real one
    probe, newest = gen_jid(), gen_jid()
    r.save_loads([(probe, make_load(probe, "saltutil.find_job", [jid]), None),
                  (newest, make_load(newest, "test.arg", ["b"]), None)])
    r.returns([make_ret(newest, "web1", "newer", "test.arg", ["b"])])

    if r.supports("get_jids_filter"):
        jobs = r.get_jids_filter(10)
        assert isinstance(jobs, list)
        assert [j["JID"] for j in jobs] == sorted(j["JID"] for j in jobs)  # oldest first
        assert {jid, newest} <= {j["JID"] for j in jobs} and probe not in {j["JID"] for j in jobs}
        assert probe in {j["JID"] for j in r.get_jids_filter(10, filter_find_job=False)}
        only = r.get_jids_filter(1)
        assert [j["JID"] for j in only] == [newest] and only[0]["Function"] == "test.arg"
    else:
        assert_unsupported(r, "get_jids_filter", 10)

    if r.supports("get_minions"):
        assert {"web1", "web2"} <= set(r.get_minions())
    else:
        assert_unsupported(r, "get_minions")

    if r.supports("get_fun"):
        latest = r.get_fun("test.arg")
        assert set(latest) == {"web1", "web2"}
        assert value_of(latest["web1"]) == "newer"  # the newest job wins
        assert value_of(latest["web2"]) == "ERROR: boom"
        assert r.get_fun("no.such_function") == {}
    else:
        assert_unsupported(r, "get_fun", "test.arg")


def test_batch_of_1000_returns(env: Env) -> None:
    r = env.make()
    jid = gen_jid()
    rets = [make_ret(jid, f"minion{i:04d}", {"i": i, "ok": i % 7 != 0}, "test.echo", [str(i)]) for i in range(1000)]
    started = time.perf_counter()
    r.returns(rets)
    elapsed = time.perf_counter() - started
    assert env.returns_seen(r, jid) == 1000
    stored = env.stored(r, jid)
    if stored is not None:
        assert len(stored) == 1000
        if env.case.lossless:
            assert all(stored[f"minion{i:04d}"] == {"i": i, "ok": i % 7 != 0} for i in range(1000))
    # a batch is one round trip / transaction, not 1,000: generous bound for a loaded machine
    assert elapsed < 20, f"1,000 returns took {elapsed:.1f}s"


def test_unicode_and_bytes(env: Env) -> None:
    r = env.make()
    jid = gen_jid()
    minion = "mínion-漢字-ü"
    text_value = {"text": UNICODE, UNICODE: [UNICODE, "ascii"], "שלום": "עולם"}
    bytes_value = {"raw": b"\xff\xfe\x00binary\x80", "utf8": "ünï©ødé".encode(), "list": [b"a", "b"]}
    r.returns([make_ret(jid, minion, text_value, "test.echo", [UNICODE]),
               make_ret(jid, "bytes-minion", bytes_value, "test.echo")])
    assert env.returns_seen(r, jid) == 2
    stored = env.stored(r, jid)
    if stored is not None and env.case.lossless:
        assert stored[minion] == env.expected(text_value)
        assert stored["bytes-minion"] == env.expected(bytes_value)
    if r.supports("get_minions"):
        assert minion in r.get_minions()


def test_five_megabyte_return(env: Env) -> None:
    r = env.make()
    jid = gen_jid()
    chunk = "0123456789abcdef-ß-漢\n"
    big = {"stdout": chunk * (5 * 1024 * 1024 // len(chunk.encode()) + 1), "lines": list(range(1000))}
    assert len(big["stdout"].encode()) >= 5 * 1024 * 1024
    r.returns([make_ret(jid, "big", big, "cmd.run", ["cat /var/log/big"])])
    assert env.returns_seen(r, jid) == 1
    stored = env.stored(r, jid)
    if stored is not None and env.case.lossless:
        assert stored["big"] == big


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


def test_value_that_is_not_json(env: Env) -> None:
    r = env.make()
    jid = gen_jid()
    odd = {"set": {3, 1, 2}, "blob": b"\x00\x01\xfe", "nan": float("nan"), "inf": float("inf"),
           "object": Opaque(), "nested": {"deep": [{"frozen": frozenset({"a"})}, (1, 2)]},
           # a lone surrogate (bytes decoded with surrogateescape): valid str, not encodable UTF-8
           "surrogate": "bad\udcffbyte"}
    r.returns([make_ret(jid, "odd", odd, "test.odd")])  # must not raise
    assert env.returns_seen(r, jid) == 1
    stored = env.stored(r, jid)
    if stored is None:
        return
    got = stored["odd"]
    assert isinstance(got, dict) and set(got) == set(odd)
    assert sorted(got["set"]) == [1, 2, 3]
    assert got["nan"] == "nan" if env.case.extra.get("jsonb") else math.isnan(got["nan"])
    assert "Opaque" in str(got["object"])
    assert got["nested"]["deep"][0]["frozen"] == ["a"] and list(got["nested"]["deep"][1]) == [1, 2]
    assert got["surrogate"] in ("bad\udcffbyte", "bad\ufffdbyte")  # kept (JSON escape) or replaced


def test_hundred_events(env: Env) -> None:
    r = env.make()
    jid = gen_jid()
    events = [{"tag": f"salt/job/{jid}/ret/minion{i}", "data": {"i": i, "jid": jid, "_stamp": stamp(), "text": UNICODE}}
              for i in range(100)]
    if not r.supports("event_returns"):
        assert_unsupported(r, "event_returns", events)
        return
    assert env.case.extra.get("count_events"), (
        f"case {env.case.name}: the returner stores events; give extra['count_events'] = "
        f"(values, tmp_path, jid) -> number of stored events whose tag contains jid")
    r.event_returns(events)
    r.event_returns([])  # an empty batch is fine
    assert env.count_events(jid) == 100


def test_duplicate_delivery(env: Env) -> None:
    r = env.make()
    jid = gen_jid()
    first, second = make_load(jid, "test.ping", minions=["a", "b", "c"]), make_load(jid, "state.apply")
    batch = [make_ret(jid, m, f"from {m}") for m in ("a", "b", "c")]
    if r.supports("save_loads"):
        r.save_loads([(jid, first, None)])
        r.save_loads([(jid, second, None)])  # a jid keeps its first load
    r.returns(batch)
    r.returns(batch)  # the outbox retried a batch that had in fact been stored
    expected = 6 if env.case.extra.get("duplicates", "ignored") == "kept" else 3
    assert env.returns_seen(r, jid) == expected
    stored = env.stored(r, jid)
    if stored is not None:
        assert set(stored) == {"a", "b", "c"}
        if env.case.lossless:
            assert stored == {m: f"from {m}" for m in ("a", "b", "c")}
    if r.has_read_side() and r.supports("save_loads"):
        assert r.get_load(jid)["fun"] == "test.ping"


def _option_name(cls: type[Returner], suffix: str) -> str:
    return next((o.name for o in cls.options if o.suffix == suffix), suffix)


def _write_and_see(env: Env, r: Returner) -> None:
    """A return written through ``r`` reads back through ``r`` (or, write-only, is counted)."""
    jid = gen_jid()
    r.returns([make_ret(jid, "cfg", "through the chosen options")])
    if r.has_read_side():
        assert value_of(r.get_jid(jid)["cfg"]) == "through the chosen options"
    else:
        assert env.returns_seen(r, jid) == 1


def test_return_config_and_return_kwargs(env: Env) -> None:
    cls = registry.get_class(env.case.name)
    prefix = cls.option_prefix()
    own = {k: v for k, v in env.good.items() if k.startswith(prefix + ".")}
    bad = env.bad() if env.case.unreachable else {}
    broken = {**env.opts, **bad}
    if bad and own and all(k.startswith(prefix + ".") for k in bad):
        # --return_config alt: the plain keys point nowhere, alt.<prefix>.* at the real backend
        alt = {**broken, **{f"alt.{k}": v for k, v in own.items()}}
        _write_and_see(env, env.make(alt, "alt"))
        with pytest.raises(ReturnerError):
            env.make(alt, init=False).returns([make_ret(gen_jid(), "x", 1)])
        # nested form of the alternative: alt: {<prefix>: {...}}
        nested = {**broken, "alt": {prefix: {k[len(prefix) + 1:]: v for k, v in own.items()}}}
        _write_and_see(env, env.make(nested, "alt"))
        # --return_kwargs (internal names) override the plain keys ...
        kwargs = {_option_name(cls, k[len(prefix) + 1:]): v for k, v in own.items()}
        _write_and_see(env, env.make(broken, ret_kwargs=kwargs))
        # ... and the alternative too
        bad_kwargs = {_option_name(cls, k[len(prefix) + 1:]): v for k, v in bad.items()}
        with pytest.raises(ReturnerError):
            env.make(alt, "alt", bad_kwargs, init=False).returns([make_ret(gen_jid(), "x", 1)])
    else:
        if bad:
            rescue = env.case.extra.get("kwargs")
            assert rescue, f"case {env.case.name}: give extra['kwargs'] (return_kwargs that make the unreachable config work)"
            _write_and_see(env, env.make(broken, ret_kwargs=rescue(env.values, env.tmp_path)))
        # an alternative with no keys of its own falls back to the plain ones
        _write_and_see(env, env.make(env.opts, "alt"))
    with pytest.raises(ConfigError, match="unknown option 'no_such_option'"):
        registry.create(env.case.name, env.opts, None, {"no_such_option": 1})


def test_unreachable_backend(env: Env) -> None:
    jid = gen_jid()
    if env.case.unreachable is None:
        # nothing can be unreachable (standard output): it writes, and its health check passes
        r = env.make()
        r.check()
        _write_and_see(env, r)
        return
    r = env.make({**env.opts, **env.bad()}, init=False)
    secrets = secret_values(type(r), r.opts) + secret_values(type(r), env.make(init=False).opts)
    for attempt in range(2):  # the second attempt fails the same way (no hang, no stale state)
        with pytest.raises(ReturnerError) as info:
            r.returns([make_ret(jid, "m", "never stored")])
        message = str(info.value)
        assert_one_line(message, env.case.name)
        for secret in secrets:
            assert secret not in message, "a secret leaked into the error"
    with pytest.raises(ReturnerError) as info:
        r.check()
    assert_one_line(str(info.value), env.case.name)
    # the same returner, created again with the good config, works
    good = env.make()
    good.check()
    _write_and_see(env, good)


def test_sql_injection_text_is_stored_as_text(env: Env) -> None:
    r = env.make()
    jid = gen_jid()
    if r.supports("save_loads"):
        r.save_loads([(jid, make_load(jid, EVIL, [EVIL]), None)])
    r.returns([make_ret(jid, EVIL, EVIL, EVIL, [EVIL])])
    r.returns([make_ret(jid, "after", "still here")])  # the tables are still there
    assert env.returns_seen(r, jid) == 2
    stored = env.stored(r, jid)
    if stored is not None:
        assert stored[EVIL] == EVIL and stored["after"] == "still here"
    if r.has_read_side():
        check_load(env, r.get_load(jid), make_load(jid, EVIL, [EVIL]))
        if r.supports("get_fun"):
            assert value_of(r.get_fun(EVIL)[EVIL]) == EVIL
    fresh = env.make()
    _write_and_see(env, fresh)


def test_check_close_and_reuse(env: Env) -> None:
    r = env.make()
    r.check()
    _write_and_see(env, r)
    r.close()
    _write_and_see(env, r)  # a closed returner opens its backend again on the next call
    r.close()
    r.close()  # closing twice is harmless


def test_clean_old_jobs(env: Env) -> None:
    if not env.make().supports("clean_old_jobs"):
        r = env.make()
        assert not r.supports("clean_old_jobs")
        assert r.clean_old_jobs() is None  # nothing to clean: a no-op, as in Salt
        return
    keep = env.make({**env.opts, "keep_jobs_seconds": 2})
    forever = env.make({**env.opts, "keep_jobs_seconds": 0})
    old = gen_jid()
    if keep.supports("save_loads"):
        keep.save_loads([(old, make_load(old, "test.old"), None)])
    keep.returns([make_ret(old, "m1", "old"), make_ret(old, "m2", "old")])
    time.sleep(3.2)  # older than keep_jobs_seconds (and than a second-resolution timestamp)
    new = gen_jid()
    if keep.supports("save_loads"):
        keep.save_loads([(new, make_load(new, "test.new"), None)])
    keep.returns([make_ret(new, "m1", "new")])

    forever.clean_old_jobs()  # keep_jobs_seconds 0 keeps everything
    if not env.case.extra.get("expires"):  # (a backend with a TTL drops it by itself meanwhile)
        assert env.returns_seen(keep, old) == 2
    keep.clean_old_jobs()
    assert env.returns_seen(keep, old) == 0
    assert env.returns_seen(keep, new) == 1
    if keep.has_read_side():
        assert keep.get_jid(old) == {}
        assert keep.get_jid(new) != {}
        if keep.supports("save_loads"):
            assert keep.get_load(old) == {}
            check_load(env, keep.get_load(new), make_load(new, "test.new"))
            assert old not in keep.get_jids() and new in keep.get_jids()
    keep.clean_old_jobs()  # again: nothing left to do, no error


def test_outage_through_the_outbox_loses_nothing(env: Env) -> None:
    """The backend is unavailable while returns come in, then it is back: through the outbox and
    the delivery workers every return arrives, once."""
    from saline.master.delivery import Delivery
    from saline.master.outbox import SqliteOutbox

    env.make()  # the good backend's schema, for after the outage
    name = env.case.name
    jid = gen_jid()
    rets = [make_ret(jid, f"out{i:02d}", f"value {i}") for i in range(50)]
    fast = {"returner_retry_max_seconds": 0.2, "returner_batch_wait_ms": 5}
    outbox = SqliteOutbox(env.tmp_path / "outage" / "outbox.db")
    try:
        if env.case.unreachable is not None:
            down = Delivery({**env.opts, **env.bad(), **fast}, outbox)
            down.start()
            down.submit([item for ret in rets for item in down.items_for_return([name], ret)])
            deadline = time.monotonic() + 15
            while not down.status().get(name, {}).get("last_error") and time.monotonic() < deadline:
                time.sleep(0.05)
            status = down.status()[name]
            assert status["last_error"] and status["pending"] == 50 and status["delivered"] == 0
            down.stop()
        up = Delivery({**env.opts, **fast}, outbox)
        up.start()
        if env.case.unreachable is None:
            up.submit([item for ret in rets for item in up.items_for_return([name], ret)])
        assert up.flush(60), f"{name}: the outbox did not drain: {up.status().get(name)}"
        assert up.status()[name]["dead"] == 0
        up.stop()
    finally:
        outbox.close()
    assert env.returns_seen(env.make(init=False), jid) == 50
