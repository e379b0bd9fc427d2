"""Salt's ``mongo`` returner (``mongo_future_return``) over pymongo: Salt's collections, one client.

``saltReturns`` holds one document per return, ``jobs`` one per job load, ``events`` one per
event, each in Salt's shape. What both MongoDB returners share (the options, the connection, the
documents of ``saltReturns``) lives here too; ``mongo_return`` takes it from this module.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
from typing import Any, Callable, Iterable, Mapping, TypeVar

import bson
import pymongo
from bson.errors import BSONError
from bson.raw_bson import RawBSONDocument
from pymongo import errors as mongo_errors
from pymongo import uri_parser

from saline.config import ConfigError
from saline.returners import _json
from saline.returners._sql import cutoff_jid, jids_filter_listing, jids_listing, prepare_returns
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError
from saline.returners.options import scrub, secret_values

T = TypeVar("T")
log = logging.getLogger(__name__)

RETURNS, JOBS, EVENTS = "saltReturns", "jobs", "events"
#: the key that makes a return delivered twice (a retried batch) a duplicate the server refuses
RETURN_KEY = [("jid", pymongo.ASCENDING), ("minion", pymongo.ASCENDING)]
#: Salt's ``mongo.indexes``: (collection, field); saline adds ``fun`` (``get_fun``)
SALT_INDEXES = ((RETURNS, "minion"), (RETURNS, "jid"), (RETURNS, "fun"), (JOBS, "jid"), (EVENTS, "tag"))
#: the fields of a load that ``jobs.list_jobs`` shows (``format_jid_instance``)
LISTING = {"_id": 0, "jid": 1, "fun": 1, "arg": 1, "tgt": 1, "tgt_type": 1, "user": 1, "metadata": 1,
           "kwargs.metadata": 1}
_DUPLICATE = 11000
_INDEX_CONFLICT = (85, 86)  # an index with the same keys and other options, or the same name and other keys
_UNAUTHORIZED, _AUTH_FAILED = 13, 18
# not primary, shutting down, interrupted: the server will take the work again later
_TRANSIENT = {91, 189, 10107, 11600, 11602, 13435, 13436}
_INT64 = 1 << 63
_SURROGATE = re.compile("[\ud800-\udfff]")
_BAD_KEY = re.compile("[\x00\ud800-\udfff]")
# Salt's escaping of the keys of a load (``_safe_copy``): URL-style, ``%`` first so it reverses
_ESCAPE = str.maketrans({"%": "%25", "\\": "%5c", "$": "%24", ".": "%2e"})
_UNESCAPE = re.compile("%(25|5c|24|2e)")
_UNESCAPED = {"25": "%", "5c": "\\", "24": "$", "2e": "."}


# -- documents -------------------------------------------------------------------------------------
def dash_dots(key: str) -> str:
    """Salt's ``_remove_dots`` for one key of a return: ``.`` becomes ``-``."""
    return key.replace(".", "-") if "." in key else key


def escape_key(key: str) -> str:
    """Salt's escaping of a load's key: ``%`` → ``%25``, ``\\`` → ``%5c``, ``$`` → ``%24``, ``.`` → ``%2e``."""
    return key.translate(_ESCAPE)


def unescape_key(key: str) -> str:
    return _UNESCAPE.sub(lambda m: _UNESCAPED[m.group(1)], key) if "%" in key else key


def _same(key: str) -> str:
    return key


def _key_text(key: Any) -> str:
    """A key as BSON holds it: text without U+0000 or lone surrogates; others as JSON writes them."""
    if isinstance(key, str):
        return key if key.isascii() and "\x00" not in key else _BAD_KEY.sub("\ufffd", key)
    if key is True or key is False or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    if isinstance(key, (int, float)):
        return repr(key) if isinstance(key, float) else str(key)
    return _key_text(_json.decode(key))


def storable(value: Any, keys: Callable[[str], str] = _same, _seen: frozenset[int] = frozenset()) -> Any:
    """A copy of ``value`` that BSON can hold, each key of each map passed through ``keys``.

    Bytes become text, sets and tuples lists, values with no BSON form their text (``_json``'s
    rules, so they read back as in the other returners); lone surrogates become U+FFFD, integers
    beyond 64 bits their decimal text. NaN and infinities stay (BSON has them)."""
    if isinstance(value, str):
        return value if value.isascii() or not _SURROGATE.search(value) else _SURROGATE.sub("\ufffd", value)
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else str(value)
    if isinstance(value, (dict, list, tuple)):
        if id(value) in _seen:
            return f"<cycle {type(value).__name__}>"
        seen = _seen | {id(value)}
        if isinstance(value, dict):
            return {keys(_key_text(k)): storable(v, keys, seen) for k, v in value.items()}
        return [storable(v, keys, seen) for v in value]
    return storable(_json.decode(value), keys, _seen)  # bytes, sets, dates, objects


def unescaped(value: Any) -> Any:
    """A stored load with Salt's key escaping undone."""
    if isinstance(value, dict):
        return {unescape_key(k): unescaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unescaped(v) for v in value]
    return value


def return_document(ret: Mapping[str, Any]) -> dict[str, Any]:
    """Salt's ``saltReturns`` document of a return: ``minion``, ``jid``, ``return``, ``fun``,
    ``full_ret`` (and ``out`` when the return has it), dots in keys turned into ``-``."""
    back = storable(ret.get("return"), dash_dots)
    full = {dash_dots(_key_text(k)): (back if k == "return" else storable(v, dash_dots)) for k, v in ret.items()}
    doc = {"minion": _json.text(ret.get("id")), "jid": _json.text(ret.get("jid")), "return": back,
           "fun": storable(ret.get("fun")), "full_ret": full}
    if "out" in ret:
        doc["out"] = storable(ret["out"])
    return doc


# -- the connection and the returns, shared with mongo_return ----------------------------------------
class MongoBase(Returner):
    """What ``mongo`` and ``mongo_return`` share: Salt's ``mongo.*`` options, one pooled
    ``MongoClient`` per returner, the indexes, and the ``saltReturns`` documents."""

    extra = "mongo"
    options = (
        Option("host", doc="server host name (unset: localhost, as pymongo); not together with uri"),
        Option("port", int, 27017, doc="server port"),
        Option("db", default="salt", doc="database (with uri: the URI's database, else this)"),
        Option("user", doc="user name"),
        Option("password", secret=True, doc="password"),
        Option("uri", secret=True, doc="a mongodb:// or mongodb+srv:// URI instead of host and port "
                                       "(Salt's mongo only; credentials may be in it)"),
        Option("indexes", bool, False, doc="also create Salt's indexes: saltReturns minion, jid (and fun), "
                                           "jobs jid, events tag"),
        Option("auth_source", doc="database holding the user (unset: the URI's authSource, else admin) (saline)"),
        Option("timeout", float, 10.0, doc="seconds to wait for the server before it counts as unreachable (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        prefix = self.option_prefix()
        self._secrets = secret_values(type(self), self.opts)
        uri = self.opts.get("uri")
        if uri and self.opts.get("host"):
            raise ConfigError(f"returner {self.name}: set {prefix}.uri or {prefix}.host, not both")
        self.db_name = str(self.opts.get("db") or "salt")
        if uri:
            try:
                parsed = uri_parser.parse_uri(str(uri)) if str(uri).startswith("mongodb://") else None
            except (mongo_errors.InvalidURI, mongo_errors.ConfigurationError, ValueError) as exc:
                raise ConfigError(scrub(f"returner {self.name}: {prefix}.uri is not a MongoDB URI: "
                                        f"{_one_line(exc)}", self._secrets)) from None
            if not str(uri).startswith(("mongodb://", "mongodb+srv://")):
                raise ConfigError(f"returner {self.name}: {prefix}.uri must start with mongodb:// or mongodb+srv://")
            if parsed is not None:
                self._secrets += [p for p in [parsed.get("password")] if p]
                self.db_name = parsed.get("database") or self.db_name
                self.where = "MongoDB at " + ",".join(f"{h}:{p}" for h, p in parsed["nodelist"])
            else:
                self.where = "MongoDB at " + str(uri).split("@")[-1].split("/")[0].split("?")[0]
        else:
            self.where = f"MongoDB at {self.opts.get('host') or 'localhost'}:{self.opts.get('port') or 27017}"
        self._client: pymongo.MongoClient | None = None
        self._db: Any = None
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._unique = True  # saltReturns has the unique (jid, minion) index
        self._max_size = 16 * 1024 * 1024

    # -- connection ------------------------------------------------------------------------------
    def _connect(self) -> pymongo.MongoClient:
        wait = float(self.opts.get("timeout") or 10.0)
        args: dict[str, Any] = {"serverSelectionTimeoutMS": int(wait * 1000), "connectTimeoutMS": int(wait * 1000),
                                # a batch of thousands of documents may take a while on a busy server
                                "socketTimeoutMS": int(max(wait, 60.0) * 1000), "appname": "saline"}
        if self.opts.get("user"):
            args["username"] = str(self.opts["user"])
            args["password"] = str(self.opts.get("password") or "")
        if self.opts.get("auth_source"):
            args["authSource"] = str(self.opts["auth_source"])
        if self.opts.get("uri"):
            return pymongo.MongoClient(str(self.opts["uri"]), **args)
        return pymongo.MongoClient(self.opts.get("host") or "localhost", int(self.opts.get("port") or 27017), **args)

    def _database(self) -> Any:
        """The database, on the one client of this returner (made on first use, and again after
        ``close`` or in a forked child); indexes are made once per client."""
        with self._lock:
            if self._client is not None and self._pid != os.getpid():
                self._client, self._db = None, None  # the parent's: a child must not use (or close) it
            if self._db is not None:
                return self._db
            try:
                client = self._connect()
            except (mongo_errors.ConfigurationError, ValueError, TypeError) as exc:
                raise ReturnerError(self._line(f"cannot set up the client: {_one_line(exc)}")) from None
            try:
                db = client[self.db_name]
                hello = client.admin.command("hello")
                self._max_size = int(hello.get("maxBsonObjectSize") or self._max_size)
                self._make_indexes(db)
            except BaseException:
                client.close()
                raise
            self._client, self._db, self._pid = client, db, os.getpid()
            return db

    def _make_indexes(self, db: Any) -> None:
        returns = db[RETURNS]
        try:
            returns.create_index(RETURN_KEY, unique=True)
            self._unique = True
        except mongo_errors.OperationFailure as exc:
            if exc.code != _DUPLICATE and exc.code not in _INDEX_CONFLICT:
                raise
            if any(i.get("unique") and list(i.get("key") or []) == RETURN_KEY
                   for i in returns.index_information().values()):
                self._unique = True  # there already, under another name
                self._make_single_indexes(db)
                return
            # documents written before (Salt's, which never deduplicated) repeat a (jid, minion),
            # or another index holds these keys: duplicates are then found by a lookup instead
            self._unique = False
            log.warning("%s", self._line(f"no unique (jid, minion) index on {self.db_name}.{RETURNS} "
                                         f"({_one_line(_message(exc))}): a return delivered twice is "
                                         "found by a lookup before inserting instead"))
            if exc.code == _DUPLICATE:
                returns.create_index(RETURN_KEY)  # the same keys, not unique: for that lookup
        self._make_single_indexes(db)

    def _make_single_indexes(self, db: Any) -> None:
        for collection, field in self._indexes():
            db[collection].create_index(field)

    def _indexes(self) -> Iterable[tuple[str, str]]:
        """The single-field indexes this returner needs, besides the unique (jid, minion) one."""
        return SALT_INDEXES[:3] if self.opts.get("indexes") else ()

    def _run(self, work: Callable[[Any], T]) -> T:
        """``work(database)``; a connection kept from before a server restart is retried once."""
        for attempt in (0, 1):
            try:
                return work(self._database())
            except mongo_errors.PyMongoError as exc:
                if (attempt == 0 and isinstance(exc, mongo_errors.AutoReconnect)
                        and not isinstance(exc, mongo_errors.ServerSelectionTimeoutError)):
                    continue
                raise self._error(exc) from None
        raise AssertionError("unreachable")

    def _line(self, text: str) -> str:
        return scrub(f"returner {self.name}: {' '.join(str(text).split())}", self._secrets)

    def _error(self, exc: BaseException) -> ReturnerError:
        text = _one_line(_message(exc))
        low = text.lower()
        code = getattr(exc, "code", None)
        if code == _AUTH_FAILED or "authentication failed" in low:
            return ReturnerError(self._line(f"authentication failed for user {self.opts.get('user')!r} on {self.where} "
                                            f"(check {self.option_prefix()}.user and {self.option_prefix()}.password)"))
        if code == _UNAUTHORIZED:
            if "requires authentication" in low:
                return ReturnerError(self._line(f"{self.where} asks for a user and password ({text}): set "
                                                f"{self.option_prefix()}.user and {self.option_prefix()}.password"))
            return ReturnerError(self._line(f"{self.where}: {text} (grant the user readWrite on {self.db_name})"))
        if isinstance(exc, mongo_errors.DocumentTooLarge):
            return ReturnerError(self._line(f"{text} (a document of {self.where} holds at most {self._max_size} bytes)"))
        if isinstance(exc, mongo_errors.ConnectionFailure) or code in _TRANSIENT:
            return BackendUnavailable(self._line(f"cannot reach {self.where}: {_reason(text)}"))
        return ReturnerError(self._line(f"{self.where}: {text}"))

    def close(self) -> None:
        with self._lock:
            client, self._client, self._db = self._client, None, None
            if client is not None and self._pid == os.getpid():
                client.close()

    # -- writing ------------------------------------------------------------------------------------
    def _encode(self, doc: dict[str, Any], what: Callable[[], str]) -> RawBSONDocument:
        """``doc`` as BSON, with its ``_id``, checked against the server's size limit before anything
        of the batch is sent (so a batch fails whole or not at all for a document too large)."""
        raw = self._bson({"_id": bson.ObjectId(), **doc}, what)
        if len(raw) > self._max_size:
            raise ReturnerError(self._line(f"{what()} is {len(raw)} bytes as a BSON document, more than "
                                           f"{self.where} takes ({self._max_size})"))
        return RawBSONDocument(raw)

    def _built(self, build: Callable[[Any], T], value: Any, what: Callable[[], str]) -> T:
        """``build(value)``, or one line when the value is nested deeper than Python recurses."""
        try:
            return build(value)
        except RecursionError:
            raise ReturnerError(self._line(f"{what()} is nested too deep to be stored")) from None

    def _bson(self, doc: dict[str, Any], what: Callable[[], str]) -> bytes:
        try:
            return bson.encode(doc)
        except (BSONError, OverflowError, ValueError, RecursionError) as exc:
            # storable() leaves nothing BSON refuses; a value nested too deep still can be
            raise ReturnerError(self._line(f"{what()} cannot be stored as BSON: {_one_line(exc)[:300]}")) from None

    def _insert(self, db: Any, collection: str, docs: list[RawBSONDocument]) -> None:
        """``insert_many(ordered=False)``: every document is tried; one already there (the unique
        index) is not an error."""
        if not docs:
            return
        try:
            db[collection].insert_many(docs, ordered=False)
        except mongo_errors.BulkWriteError as exc:
            details = exc.details or {}
            refused = [e for e in details.get("writeErrors") or [] if e.get("code") != _DUPLICATE]
            if refused:
                first = refused[0]
                raise ReturnerError(self._line(
                    f"{self.where} refused {len(refused)} of {len(docs)} document(s) in {self.db_name}.{collection}, "
                    f"e.g. {_one_line(first.get('errmsg'))[:300]} (error {first.get('code')})")) from None
            if details.get("writeConcernErrors"):
                first = details["writeConcernErrors"][0]
                raise BackendUnavailable(self._line(f"{self.where} could not confirm the write: "
                                                    f"{_one_line(first.get('errmsg'))[:300]}")) from None

    def _stored_pairs(self, db: Any, docs: list[tuple[str, str, RawBSONDocument]]) -> set[tuple[str, str]]:
        """Without the unique index: the (jid, minion) pairs of ``docs`` already stored."""
        jids, minions = sorted({d[0] for d in docs}), sorted({d[1] for d in docs})
        found = db[RETURNS].find({"jid": {"$in": jids}, "minion": {"$in": minions}}, {"_id": 0, "jid": 1, "minion": 1})
        return {(d.get("jid"), d.get("minion")) for d in found}

    def _fresh_jids(self, rets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Salt's ``req`` rule: a return with the jid ``req`` (``saline-call``, a schedule) gets a jid
        of its own (and, where loads are kept, is stored as that job's load)."""
        if self.supports("save_loads"):
            return prepare_returns(self, rets)
        return [{**r, "jid": self.prep_jid(nocache=bool(r.get("nocache")))} if r.get("jid") == "req" else r
                for r in rets]

    def returns(self, rets: list[dict[str, Any]], check: bool = True) -> None:
        """``check``: without the unique index, first look up the returns of the batch already
        stored (it may have been sent before) and leave them out; copies inside the batch are left
        out either way."""
        rets = self._fresh_jids(rets)
        if not rets:
            return
        for ret in rets:
            if not ret.get("id") or not ret.get("jid"):
                raise ReturnerError(self._line(f"a return without '{'id' if not ret.get('id') else 'jid'}' "
                                               "cannot be stored"))
        docs = [self._built(return_document, ret, lambda r=ret: f"the return of {r.get('id')} for job {r.get('jid')}")
                for ret in rets]

        def write(db: Any) -> None:
            encoded = [(d["jid"], d["minion"], self._encode(d, lambda d=d: f"the return of {d['minion']} for job "
                                                                            f"{d['jid']}")) for d in docs]
            if not self._unique:
                stored = self._stored_pairs(db, encoded) if check else set()
                kept = []
                for jid, minion, raw in encoded:
                    if (jid, minion) not in stored:
                        stored.add((jid, minion))
                        kept.append((jid, minion, raw))
                encoded = kept
            self._insert(db, RETURNS, [raw for _, _, raw in encoded])

        self._run(write)

    def returns_first(self, rets: list[dict[str, Any]]) -> None:
        self.returns(rets, check=False)

    def init_schema(self) -> None:
        """Collections appear as they are written; this connects and creates the indexes."""
        self.close()
        self.check()

    def check(self) -> None:
        self._run(lambda db: db.command("ping"))


class MongoReturner(MongoBase):
    """Salt's ``mongo`` returner (``mongo_future_return``): returns, job loads and events in MongoDB.

    Collections in ``mongo.db`` (Salt's documents)::

        saltReturns  {minion, jid, return, fun, full_ret[, out]}   one per return; dots in the
                     keys of return and full_ret turned into "-" (Salt's _remove_dots)
        jobs         the job's load, its keys escaped as Salt's: % -> %25, \\ -> %5c,
                     $ -> %24, . -> %2e (read back unescaped); jid is always there
        events       {tag, data, master_id, alter_time}             one per event

    ``full_ret`` is the whole return load (``id``, ``jid``, ``fun``, ``fun_args``, ``return``,
    ``retcode``, ``success``, ``_stamp`` …); values are BSON: numbers stay numbers (NaN too),
    bytes become text, integers beyond 64 bits their decimal text.

    Indexes (made on first use, or by ``saline-run returners.init mongo``): a unique one on
    ``saltReturns`` ``(jid, minion)``, so a batch the outbox delivers again (a retry after a lost
    answer) is stored once (``insert_many(ordered=False)`` skips the duplicates), and ``jobs``
    ``jid``. ``mongo.indexes: true`` adds Salt's ``saltReturns`` ``minion`` and ``jid``,
    ``events`` ``tag``, and ``saltReturns`` ``fun``. A ``saltReturns`` written by Salt may
    already repeat a ``(jid, minion)`` (Salt never deduplicated): then the unique index cannot be
    built, a warning says so, and each batch first looks up which of its returns are stored.

    Options are Salt's: ``mongo.host``/``mongo.port``/``mongo.db``/``mongo.user``/
    ``mongo.password``, or ``mongo.uri`` instead of host (both set is an error). With a URI the
    database is the URI's, or ``mongo.db`` when it names none (Salt's failed then).

    Differences from Salt: one ``MongoClient`` per returner, its connections pooled and kept
    (Salt opened a new client on every call and never closed it, exhausting the master's ports,
    salt#55999); a batch is one ``insert_many`` (Salt: one ``insert_one`` per return); every
    event of a batch is stored (Salt's stored only the first); the first load of a jid is kept
    and later ones change nothing (an upsert with ``$setOnInsert``; Salt inserted another
    document for the load at publish and for every return); ``get_jids`` reads ``jobs`` with a
    plain query (Salt's used map-reduce, which MongoDB 5 deprecated); ``get_fun`` gives each
    minion's newest return of the function (Salt's gave one document), ``get_minions`` the list
    of minions (Salt's, a list holding that list); ``get_jids_filter`` and ``clean_old_jobs``
    exist: jobs whose jid is older than ``keep_jobs_seconds`` lose their load and returns,
    events older than that go too. Dots are replaced inside lists too (Salt's only looked
    into maps), so a server that refuses dotted keys takes every return.

    Example, in ``mongosh``::

        db.saltReturns.find({jid: "20240105123456123456"}, {_id: 0, minion: 1, return: 1})
        db.saltReturns.find({fun: "test.ping", "full_ret.success": false})
        db.jobs.find({}, {_id: 0, jid: 1, fun: 1, tgt: 1}).sort({jid: -1}).limit(10)
    """

    name = "mongo"
    summary = "MongoDB: Salt's saltReturns, jobs and events collections, one pooled client, insert_many batches"

    def _indexes(self) -> Iterable[tuple[str, str]]:
        return SALT_INDEXES if self.opts.get("indexes") else ((JOBS, "jid"),)

    # -- write side -----------------------------------------------------------------------------------
    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        first: dict[str, dict[str, Any]] = {}
        for jid, load, _minions in loads:
            jid = _json.text(jid)
            if jid not in first:
                body = self._built(lambda v: storable(v, escape_key), load if isinstance(load, dict) else {"load": load},
                                   lambda jid=jid: f"the load of job {jid}")
                first[jid] = {**body, "jid": jid}
        if not first:
            return

        def write(db: Any) -> None:
            for jid, doc in first.items():
                size = len(self._bson(doc, lambda jid=jid: f"the load of job {jid}"))
                if size > self._max_size:
                    raise ReturnerError(self._line(f"the load of job {jid} is {size} bytes as a BSON document, "
                                                   f"more than {self.where} takes ({self._max_size})"))
            # the first load of a jid stays: $setOnInsert writes only when there is none
            ops = [pymongo.UpdateOne({"jid": jid}, {"$setOnInsert": doc}, upsert=True) for jid, doc in first.items()]
            try:
                db[JOBS].bulk_write(ops, ordered=False)
            except mongo_errors.BulkWriteError as exc:
                refused = [e for e in (exc.details or {}).get("writeErrors") or [] if e.get("code") != _DUPLICATE]
                if refused:
                    raise ReturnerError(self._line(f"{self.where} refused {len(refused)} load(s) in "
                                                   f"{self.db_name}.{JOBS}, e.g. "
                                                   f"{_one_line(refused[0].get('errmsg'))[:300]}")) from None

        self._run(write)

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        now = dt.datetime.now(dt.timezone.utc)
        docs = [{"tag": _json.text(ev.get("tag")),
                 "data": self._built(storable, ev.get("data"), lambda ev=ev: f"the event {ev.get('tag')}"),
                 "master_id": self.master_id, "alter_time": now} for ev in events]

        def write(db: Any) -> None:
            self._insert(db, EVENTS, [self._encode(d, lambda d=d: f"the event {d['tag']}") for d in docs])

        self._run(write)

    # -- read side -------------------------------------------------------------------------------------
    def get_load(self, jid: str) -> dict[str, Any]:
        doc = self._run(lambda db: db[JOBS].find_one({"jid": jid}, {"_id": 0}, sort=[("_id", pymongo.ASCENDING)]))
        return unescaped(doc) if isinstance(doc, dict) else {}

    def get_jid(self, jid: str) -> dict[str, Any]:
        found = self._run(lambda db: list(db[RETURNS].find({"jid": jid}, {"_id": 0, "minion": 1, "full_ret": 1})))
        return {d["minion"]: d.get("full_ret") for d in sorted(found, key=lambda d: str(d.get("minion")))
                if "minion" in d}

    def get_fun(self, fun: str) -> dict[str, Any]:
        """For each minion, the whole return (``full_ret``) of its newest job that ran ``fun``."""
        pipeline = [{"$match": {"fun": fun}}, {"$sort": {"jid": -1}},
                    {"$group": {"_id": "$minion", "full_ret": {"$first": "$full_ret"}}}]
        found = self._run(lambda db: list(db[RETURNS].aggregate(pipeline)))
        return {d["_id"]: d.get("full_ret") for d in sorted(found, key=lambda d: str(d["_id"])) if d.get("_id")}

    def _listing(self, query: dict[str, Any], limit: int | None = None) -> list[tuple[str, dict[str, Any]]]:
        """``(jid, load)`` of the jobs, newest first, one per jid (Salt's data may repeat a jid)."""
        def read(db: Any) -> list[tuple[str, dict[str, Any]]]:
            rows: dict[str, dict[str, Any]] = {}
            # the oldest document of a jid first: its publish load, not a return's payload after it
            for doc in db[JOBS].find(query, LISTING).sort([("jid", pymongo.DESCENDING), ("_id", pymongo.ASCENDING)]):
                jid = doc.get("jid")
                if isinstance(jid, str) and jid not in rows:
                    rows[jid] = unescaped(doc)
                    if limit is not None and len(rows) >= limit:
                        break
            return list(rows.items())

        return self._run(read)

    def get_jids(self) -> dict[str, Any]:
        return jids_listing(sorted(self._listing({})))

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        count = max(int(count), 0)
        if not count:
            return []
        query = {"fun": {"$ne": "saltutil.find_job"}} if filter_find_job else {}
        return jids_filter_listing(self._listing(query, count))

    def get_minions(self) -> list[str]:
        return sorted(m for m in self._run(lambda db: db[RETURNS].distinct("minion")) if isinstance(m, str))

    # -- housekeeping -----------------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        """Delete the loads and returns of jobs whose jid is older than ``keep_jobs_seconds``, and
        the events stored before then."""
        keep = self.keep_jobs_seconds
        if keep <= 0:
            return
        old = cutoff_jid(keep)
        before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=keep)

        def clean(db: Any) -> None:
            # jids are digits first: the range stops below them, so other ids ("req", names) stay
            older = {"jid": {"$gte": "0", "$lt": old}}
            db[RETURNS].delete_many(older)
            db[JOBS].delete_many(older)
            db[EVENTS].delete_many({"alter_time": {"$lt": before}})

        self._run(clean)


def _message(exc: BaseException) -> str:
    """The server's own message of an error, without pymongo's dump of the full reply."""
    details = getattr(exc, "details", None)
    if isinstance(details, dict) and details.get("errmsg"):
        return str(details["errmsg"])
    text = str(exc)
    return text.split(", full error:")[0]


def _reason(text: str) -> str:
    """``127.0.0.1:27017: [Errno 111] Connection refused (configured timeouts: …), Timeout: 10s,
    Topology Description: …`` → ``connection refused``."""
    text = text.split(", Timeout:")[0]
    text = re.sub(r"\s*\(configured timeouts:[^)]*\)", "", text)
    text = re.sub(r"^[\w.\-\[\]:]+:\d+: ", "", text)
    text = re.sub(r"\[Errno -?\d+\] ", "", text).strip()
    text = text[:1].lower() + text[1:]
    return text[:300] or "no answer"


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


__all__ = ["MongoBase", "MongoReturner", "escape_key", "return_document", "storable", "unescape_key"]
