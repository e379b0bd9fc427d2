"""The ``elasticsearch`` returner: Salt's Elasticsearch documents and indices, written with ``_bulk``."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import threading
import uuid
from typing import Any, Callable, Mapping, TypeVar

from opensearchpy import OpenSearch
from opensearchpy import exceptions as oserr

from saline.returners import _json
from saline.returners._docjson import safe
from saline.returners._sql import jids_listing, prepare_returns
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError
from saline.returners.options import scrub

T = TypeVar("T")
log = logging.getLogger(__name__)

STATE_FUNCTIONS = {"state.apply": "state_apply", "state.highstate": "state_apply", "state.sls": "state_apply"}
_MAX_ID = 512  # bytes of a document id
_PAGE = 10000
# the load index: a load's arguments mix strings and maps (kwargs), which dynamic mapping refuses
# (Salt's loads of such jobs were lost); the load is kept whole in _source, its main keys searchable
_JOBS_MAPPING = {"properties": {
    "jid": {"type": "keyword"},
    "load": {"type": "object", "dynamic": False, "properties": {
        k: {"type": "keyword"} for k in ("fun", "tgt", "tgt_type", "user", "jid")}}}}
# characters an index name cannot hold (Elasticsearch and OpenSearch)
_BAD_INDEX = re.compile(r'[\\/*?"<>|\s,#:]')


def convert_keys(data: Any) -> Any:
    """Salt's ``_convert_keys``: dots in keys become ``_`` (Elasticsearch reads a dot as a path),
    the last original key of a map kept in ``_orig_key``."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            key = str(key)
            if "." in key:
                out["_orig_key"] = key
                key = key.replace(".", "_")
            out[key] = convert_keys(value)
        return out
    if isinstance(data, list):
        return [convert_keys(v) for v in data]
    return data


def index_name(name: str) -> str:
    """An index name the server takes: lower case, no characters it refuses, no leading ``_-+``."""
    cleaned = _BAD_INDEX.sub("_", name.lower()).lstrip("_-+")
    return cleaned.encode("utf-8")[:255].decode("utf-8", errors="ignore") or "salt-unknown"


def return_id(jid: str, minion: str) -> str:
    """A return's document id: one per (jid, minion), so a batch delivered twice rewrites it."""
    doc_id = f"{jid}-{minion}"
    return doc_id if len(doc_id.encode("utf-8")) <= _MAX_ID else hashlib.sha256(doc_id.encode()).hexdigest()


class ElasticsearchReturner(Returner):
    """Salt's ``elasticsearch`` returner: one document per return in ``salt-<fun>`` indices.

    A return's document, exactly Salt's::

        {"@timestamp": "2024-01-05T12:34:56.123456+00:00",   # UTC, when written
         "success": true, "retcode": 0,                       # success = not retcode (1 if absent)
         "minion": "web1", "fun": "test.ping", "jid": "20240105123456123456",
         "counts": {},                                         # states_count: {"suceeded", "failed"}
         "data": <the return, dots in keys turned into _, the original key in _orig_key>}

    Index ``salt-<fun with . → _>`` (``salt-state_apply`` for state.apply/sls/highstate with
    ``states_single_index``), ``-<YYYY.MM.DD>`` with ``index_date``, ``-ordered`` with
    ``states_order_output`` (state keys prefixed with their ``__run_num__``, ``_func`` added).
    An index is created as ``<index>-v1`` with ``number_of_shards``/``number_of_replicas`` and
    the alias ``<index>``. Returns of ``functions_blacklist`` functions, and ``None`` returns, are
    not stored (as Salt). Loads go to ``master_job_cache_index`` (id = jid, ``{jid, load}``),
    events to ``master_event_index`` (``{tag, data}``, ids uuid4). ``doc_type`` options are
    accepted and unused: servers since Elasticsearch 7 have no document types.

    The client is ``opensearch-py`` (the official ``elasticsearch`` 8/9 clients refuse servers
    that are not Elastic's own, and opensearch-py speaks the common REST API to both); one client
    per returner, its connection pool kept. Connection options: ``hosts`` (``host:port`` or URLs),
    ``username``/``password``, ``use_ssl``, ``verify_certs``, ``ca_certs``, ``timeout``.

    Differences from Salt: a batch is one ``_bulk`` request (Salt: one request per return);
    ``event_return`` stores every event of a batch (Salt's stored only the last, an indentation
    slip); a return's document id is ``<jid>-<minion>`` (Salt let the server pick one), so a
    batch delivered twice changes nothing; the first load of a jid is kept (``create``); index
    names are made valid (lower case; ``\\ / * ? " < > |``, spaces, ``,``, ``#``, ``:`` become
    ``_``) where Salt's request failed; ``get_load`` gives the load (Salt's parsed the response
    object as text), and ``get_jid``/``get_jids`` exist (searching ``salt-*`` by jid, reading
    ``master_job_cache_index``), so it can be a ``master_job_cache``. Documents are strict JSON:
    NaN and infinities are stored as ``"nan"``, ``"inf"``, ``"-inf"`` and U+0000 as U+FFFD.

    Mappings: the load index maps ``jid`` and the load's ``fun``, ``tgt``, ``tgt_type``,
    ``user`` and keeps the rest in ``_source`` only (a job's arguments mix strings and maps, which
    dynamic mapping refuses: Salt lost the load of every job with keyword arguments). With
    ``index_data`` (default, Salt's behaviour) the server maps every key of
    ``data`` as it first sees it, and a later return of another shape for the same index (a
    string where a map was, a list mixing numbers and booleans) is refused by the server: that
    batch fails with the server's reason. Salt's docs advise index templates for this; or set
    ``index_data: False``, and the indices saline creates keep ``data`` in ``_source`` only (not
    searchable, any shape accepted).

    Example, with ``curl``::

        curl -s 'http://127.0.0.1:9200/salt-test_ping/_search?q=minion:web1'
        curl -s 'http://127.0.0.1:9200/salt-master-job-cache/_doc/20240105123456123456'
    """

    name = "elasticsearch"
    extra = "elasticsearch"
    summary = "Elasticsearch / OpenSearch: Salt's documents in salt-<fun> indices, loads and events, via _bulk"
    options = (
        Option("hosts", list, default=["127.0.0.1:9200"], doc="servers: host:port or URLs"),
        Option("username", doc="user name (HTTP basic authentication)"),
        Option("password", secret=True, doc="password"),
        Option("use_ssl", bool, default=False, doc="HTTPS"),
        Option("verify_certs", bool, default=True, doc="check the server's certificate"),
        Option("ca_certs", doc="CA bundle file"),
        Option("timeout", float, default=30.0, doc="seconds to wait for the server (saline)"),
        Option("debug_returner_payload", bool, default=False, doc="log each document at debug level"),
        Option("doc_type", default="default", doc="accepted, unused (no document types since Elasticsearch 7)"),
        Option("functions_blacklist", list, default=[], doc="functions whose returns are not stored"),
        Option("index_date", bool, default=False, doc="dated indices: <index>-YYYY.MM.DD"),
        Option("master_event_index", default="salt-master-event-cache", doc="index of master events"),
        Option("master_event_doc_type", default="default", doc="accepted, unused"),
        Option("master_job_cache_index", default="salt-master-job-cache", doc="index of job loads"),
        Option("master_job_cache_doc_type", default="default", doc="accepted, unused"),
        Option("number_of_shards", int, default=1, doc="shards of the indices it creates"),
        Option("number_of_replicas", int, default=0, doc="replicas of the indices it creates"),
        Option("states_count", bool, default=False, doc="count succeeded/failed states into counts"),
        Option("states_order_output", bool, default=False, doc="prefix state keys with their run order; -ordered index"),
        Option("states_single_index", bool, default=False, doc="state.apply/sls/highstate share salt-state_apply"),
        Option("index_data", bool, default=True,
               doc="let the server map the keys of data (Salt); False keeps data unindexed, any shape accepted (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self._client: OpenSearch | None = None
        self._known: set[str] = set()
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._secrets = [str(v) for v in [self.opts.get("password")] if v]
        self._jobs_index = index_name(str(self.opts.get("master_job_cache_index") or "salt-master-job-cache"))
        hosts = self.opts.get("hosts") or ["127.0.0.1:9200"]
        self.hosts = [str(h) for h in (hosts if isinstance(hosts, list) else [hosts])]

    # -- connection --------------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"Elasticsearch at {', '.join(self.hosts)}"

    def _line(self, text: str) -> str:
        return scrub(f"returner {self.name}: {' '.join(str(text).split())}", self._secrets)

    def _connect(self) -> OpenSearch:
        auth = (str(self.opts["username"]), str(self.opts.get("password") or "")) if self.opts.get("username") else None
        return OpenSearch(hosts=self.hosts, http_auth=auth, use_ssl=bool(self.opts.get("use_ssl")),
                          verify_certs=bool(self.opts.get("verify_certs")), ca_certs=self.opts.get("ca_certs"),
                          timeout=float(self.opts.get("timeout") or 30.0), max_retries=1, retry_on_timeout=False,
                          ssl_show_warn=False)

    def _run(self, work: Callable[[OpenSearch], T]) -> T:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client, self._pid = self._connect(), os.getpid()
                self._known = set()
            client = self._client
        try:
            return work(client)
        except (oserr.ConnectionError, oserr.ConnectionTimeout) as exc:
            raise BackendUnavailable(self._line(f"cannot reach {self.where}: {_describe(exc)}")) from None
        except oserr.TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else 0
            if status in (401, 403):
                raise ReturnerError(self._line(f"{self.where} refused the credentials: {_describe(exc)}")) from None
            if status >= 500 or status == 429:
                raise BackendUnavailable(self._line(f"{self.where} cannot serve now: {_describe(exc)}")) from None
            raise ReturnerError(self._line(f"{self.where}: {_describe(exc)}")) from None

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._known = set()
            if client is not None and self._pid == os.getpid():
                client.close()

    # -- indices ---------------------------------------------------------------------------------------------
    def _ensure_index(self, client: OpenSearch, index: str, mappings: dict[str, Any] | None = None) -> None:
        """Salt's ``_ensure_index``: ``<index>-v1`` with the shard settings, and the alias ``<index>``."""
        if index in self._known:
            return
        if not client.indices.exists(index=index):
            body: dict[str, Any] = {"settings": {"number_of_shards": int(self.opts.get("number_of_shards") or 1),
                                                 "number_of_replicas": int(self.opts.get("number_of_replicas") or 0)}}
            if mappings is not None:
                body["mappings"] = mappings
            elif not self.opts.get("index_data"):
                body["mappings"] = {"properties": {"data": {"type": "object", "enabled": False}}}
            try:
                client.indices.create(index=f"{index}-v1", body=body)
            except oserr.RequestError as exc:
                if "already_exists" not in str(exc):  # created meanwhile by another writer
                    raise
            client.indices.put_alias(index=f"{index}-v1", name=index)
        self._known.add(index)

    def _dated(self, index: str) -> str:
        if self.opts.get("index_date"):
            return f"{index}-{dt.date.today().strftime('%Y.%m.%d')}"
        return index

    def _bulk(self, actions: list[tuple[dict[str, Any], dict[str, Any]]], conflicts_ok: bool = False) -> None:
        """One ``_bulk`` request; fails (one line, the server's reason) if any document was refused."""
        if not actions:
            return

        def work(client: OpenSearch) -> None:
            for index in sorted({meta[next(iter(meta))]["_index"] for meta, _doc in actions}):
                self._ensure_index(client, index, _JOBS_MAPPING if index == self._jobs_index else None)
            body: list[dict[str, Any]] = []
            for meta, doc in actions:
                body += [meta, doc]
            answer = client.bulk(body=body)
            if not answer.get("errors"):
                return
            failed = [item for entry in answer.get("items", []) for item in entry.values()
                      if item.get("error") and not (conflicts_ok and item.get("status") == 409)]
            if failed:
                error = failed[0]["error"]
                reason = error.get("reason") if isinstance(error, dict) else error
                status = failed[0].get("status") or 0
                text = (f"{self.where} refused {len(failed)} of {len(actions)} document(s), e.g. in "
                        f"{failed[0].get('_index')}: {reason}")
                raise (BackendUnavailable if status >= 500 or status == 429 else ReturnerError)(self._line(text))

        self._run(work)

    # -- write side ------------------------------------------------------------------------------------------
    def _document(self, ret: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        fun = _json.text(ret.get("fun"))
        if fun in (self.opts.get("functions_blacklist") or []) or ret.get("return") is None:
            return None  # as Salt: blacklisted functions and None returns are not stored
        retcode = ret.get("retcode", 1)
        if self.opts.get("states_single_index") and fun in STATE_FUNCTIONS:
            index = f"salt-{STATE_FUNCTIONS[fun]}"
        else:
            index = f"salt-{fun.replace('.', '_')}"
        index = self._dated(index)
        value = safe(ret.get("return"))
        counts: dict[str, int] = {}
        if fun in STATE_FUNCTIONS:
            if self.opts.get("states_count"):
                counts = {"suceeded": 0, "failed": 0}  # Salt's spelling, which dashboards use
            if self.opts.get("states_order_output") and isinstance(value, dict):
                index = f"{index}-ordered"
                width = len(str(len(value)))
                ordered = {}
                for uid, state in value.items():
                    if isinstance(state, dict) and not uid[:1].isdigit():
                        parts = uid.split("_|-")
                        state = {**state, "_func": f"{parts[0]}.{parts[-1]}"}
                        uid = f"{str(state.get('__run_num__', '')).zfill(width)}_|-{uid}"
                    ordered[uid] = state
                value = ordered
            elif not isinstance(value, dict):
                value = {"return": value}
            if self.opts.get("states_count"):
                for state in value.values():
                    if isinstance(state, dict) and state.get("result") is False:
                        counts["failed"] += 1
                    else:
                        counts["suceeded"] += 1
        doc = {"@timestamp": dt.datetime.now(dt.timezone.utc).isoformat(), "success": not retcode,
               "retcode": retcode, "minion": _json.text(ret.get("id")), "fun": fun,
               "jid": _json.text(ret.get("jid")), "counts": counts, "data": convert_keys(value)}
        if self.opts.get("debug_returner_payload"):
            log.debug("elasticsearch payload: %s", doc)
        return index_name(index), doc

    def returns(self, rets: list[dict[str, Any]]) -> None:
        rets = prepare_returns(self, rets)
        actions = []
        for ret in rets:
            built = self._document(ret)
            if built is not None:
                index, doc = built
                actions.append(({"index": {"_index": index, "_id": return_id(doc["jid"], doc["minion"])}}, doc))
        self._bulk(actions)

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        index = self._jobs_index
        seen: set[str] = set()
        actions = []
        for jid, load, _minions in loads:
            jid = _json.text(jid)
            if jid not in seen:
                seen.add(jid)
                # create: the first load of a jid stays (a later one conflicts, and is dropped)
                actions.append(({"create": {"_index": index, "_id": jid}}, {"jid": jid, "load": safe(load)}))
        self._bulk(actions, conflicts_ok=True)

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        index = index_name(self._dated(str(self.opts.get("master_event_index") or "salt-master-event-cache")))
        self._bulk([({"index": {"_index": index, "_id": str(uuid.uuid4())}},
                     {"tag": _json.text(ev.get("tag", "")), "data": safe(ev.get("data", ""))}) for ev in events])

    # -- read side -------------------------------------------------------------------------------------------
    def get_load(self, jid: str) -> dict[str, Any]:
        index = self._jobs_index

        def read(client: OpenSearch) -> dict[str, Any]:
            try:
                found = client.get(index=index, id=jid)
            except oserr.NotFoundError:
                return {}
            load = (found.get("_source") or {}).get("load")
            return load if isinstance(load, dict) else {}

        return self._run(read)

    def _search(self, index: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        def read(client: OpenSearch) -> list[dict[str, Any]]:
            try:
                client.indices.refresh(index=index)  # what was just written is searchable
                found = client.search(index=index, body={"query": query, "size": _PAGE})
            except oserr.NotFoundError:
                return []
            return [hit["_source"] for hit in found.get("hits", {}).get("hits", [])]

        return self._run(read)

    def get_jid(self, jid: str) -> dict[str, Any]:
        """``{minion: return}`` of a job, from the ``salt-*`` return indices (a Salt-shaped return
        rebuilt from each document: ``return`` is its ``data``)."""
        hits = self._search("salt-*", {"bool": {"filter": [{"match": {"jid": jid}}, {"exists": {"field": "minion"}}]}})
        out = {}
        for doc in hits:
            if doc.get("jid") == jid and isinstance(doc.get("minion"), str):
                out[doc["minion"]] = {"id": doc["minion"], "jid": jid, "fun": doc.get("fun"),
                                      "return": doc.get("data"), "retcode": doc.get("retcode"),
                                      "success": doc.get("success")}
        return dict(sorted(out.items()))

    def get_jids(self) -> dict[str, Any]:
        index = self._jobs_index
        rows = [(doc["jid"], doc.get("load") or {}) for doc in self._search(index, {"match_all": {}})
                if isinstance(doc.get("jid"), str)]
        return jids_listing(sorted(rows))

    def init_schema(self) -> None:
        """Create the load and event indices (``<index>-v1`` with its alias); return indices are
        created as functions first return."""
        def work(client: OpenSearch) -> None:
            self._ensure_index(client, self._jobs_index, _JOBS_MAPPING)
            self._ensure_index(client, index_name(self._dated(str(self.opts.get("master_event_index")))))

        self._run(work)

    def check(self) -> None:
        self._run(lambda c: c.info())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, oserr.TransportError):
        info = exc.info if isinstance(exc.info, dict) else {}
        error = info.get("error")
        reason = error.get("reason") if isinstance(error, dict) else error
        text = f"HTTP {exc.status_code} {reason or exc.error}"
        if isinstance(exc, oserr.ConnectionError):
            low = str(exc).lower()
            text = "connection refused" if "refused" in low else "timed out" if "timed out" in low else str(exc.error)
        return " ".join(str(text).split())
    return " ".join(str(exc).split()) or type(exc).__name__
