"""The ``couchdb`` returner: Salt's CouchDB documents and views, written with ``_bulk_docs``."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Mapping
from urllib.parse import quote, urlsplit

import httpx

from saline.returners import _json
from saline.returners._docjson import safe
from saline.returners._sql import cutoff_jid, jids_listing, newest_jobs, prepare_returns
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError
from saline.returners.options import scrub

DESIGN = "_design/salt"
# Salt's two views (its reduce of ``minions`` called an undefined ``key``: ``_count`` here) and
# saline's two; a return is a document whose ``_id`` is not its jid (a job's load is one that is)
VIEWS = {
    "minions": {"map": "function (doc) { if (doc.id && doc._id !== doc.jid) { emit(doc.id, null); } }",
                "reduce": "_count"},
    "by-minion-fun-timestamp": {
        "map": "function (doc) { if (doc.id && doc._id !== doc.jid) { emit([doc.id, doc.fun, doc.timestamp], doc); } }"},
    "by-fun-minion-jid": {
        "map": "function (doc) { if (doc.id && doc._id !== doc.jid) { emit([doc.fun, doc.id, doc.jid], null); } }"},
    "jobs": {"map": "function (doc) { if (doc._id === doc.jid) { emit(doc.jid, null); } }"},
}


def doc_id(jid: str, minion: str) -> str:
    """A return's document id: ``<jid>-<minion>`` (Salt used the jid alone, see the class doc)."""
    return f"{jid}-{minion}"


class CouchdbReturner(Returner):
    """Salt's ``couchdb`` returner: one CouchDB document per return, Salt's fields and views.

    A return's document is the return itself plus ``timestamp`` (seconds since the epoch, when
    it was written), as Salt writes it. Its id is ``<jid>-<minion>``: Salt used the jid alone, so
    the second minion of a job got HTTP 409 and its return was lost (Salt's docs advised one
    database per minion). One document per return, rather than one per job merged with revision
    retries, keeps every field where Salt's views and queries look (``doc.id``, ``doc.fun``,
    ``doc.timestamp``), needs no read-modify-write under concurrency, and lets a batch be one
    ``_bulk_docs`` request. A job's load is the document whose ``_id`` is the jid (the load's
    fields plus ``jid``), so Salt's ``get_jids`` formatting still reads it.

    The design document ``_design/salt`` holds Salt's views ``minions`` (key: minion id; reduce
    ``_count``, where Salt's reduce was broken) and ``by-minion-fun-timestamp`` (key ``[id, fun,
    timestamp]``, value the document), and saline's ``by-fun-minion-jid`` and ``jobs``; views
    skip load documents. The database and the design document are created when missing (once
    per returner, where Salt listed ``_all_dbs`` on every return).

    Differences from Salt beyond the ids: one kept HTTP connection per returner; a document
    already stored (a batch delivered twice) is left as it is; ``save_load``/``get_load`` exist,
    so it can be a ``master_job_cache``; ``get_jid`` gives ``{minion: return}`` for every minion
    (Salt's ``{jid: document}`` of the one that got in); ``get_fun`` gives each minion's latest
    return of the function in one view query; ``get_jids_filter`` and ``clean_old_jobs`` (jobs
    older than the master's ``keep_jobs_seconds``) exist. Fields starting with ``_`` (the
    master's ``_stamp``) are left out: CouchDB reserves them and refused Salt's whole document
    for it. Documents are strict JSON: NaN and infinities are stored as ``"nan"``, ``"inf"``,
    ``"-inf"``, U+0000 as U+FFFD (as in ``pgjsonb``). Credentials may be in the URL
    (``http://user:pass@host:5984/``); they never appear in messages.

    Example, with ``curl``::

        curl -s 'http://127.0.0.1:5984/salt/_all_docs?startkey="20240105123456123456-"&endkey="20240105123456123456-\\ufff0"&include_docs=true'
        curl -s 'http://127.0.0.1:5984/salt/_design/salt/_view/minions?group=true'
    """

    name = "couchdb"
    extra = "couchdb"
    summary = "CouchDB: one document per return with Salt's fields, Salt's design document and views"
    options = (
        Option("url", default="http://salt:5984/", doc="server URL (may hold user:password@)"),
        Option("db", default="salt", doc="database"),
        Option("timeout", float, default=30.0, doc="seconds to wait for the server (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        url = str(self.opts.get("url") or "http://salt:5984/")
        self.url = url if url.endswith("/") else url + "/"
        parts = urlsplit(self.url)
        self._secrets = [v for v in (parts.password, quote(parts.password or "", safe="")) if v]
        self.shown = f"CouchDB at {parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 5984)}"
        self.db = str(self.opts.get("db") or "salt")
        self._client: httpx.Client | None = None
        self._ready = False
        self._lock = threading.RLock()
        self._pid = os.getpid()

    # -- connection ---------------------------------------------------------------------------------
    def _line(self, text: str) -> str:
        return scrub(f"returner {self.name}: {' '.join(str(text).split())}", self._secrets)

    def _http(self, method: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None,
              ok: tuple[int, ...] = ()) -> Any:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = httpx.Client(base_url=self.url, timeout=float(self.opts.get("timeout") or 30.0))
                self._pid = os.getpid()
            client = self._client
        content = None if body is None else json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        query = {k: (json.dumps(v) if not isinstance(v, str) or k in _JSON_PARAMS else v)
                 for k, v in (params or {}).items()}
        for attempt in (0, 1):
            try:
                response = client.request(method, path, content=content, params=query,
                                          headers={"Content-Type": "application/json"} if content else None)
                break
            except httpx.TransportError as exc:
                if attempt == 0 and isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
                    continue  # a kept connection the server closed: once more on a new one
                raise BackendUnavailable(self._line(f"cannot reach {self.shown}: {_describe(exc)}")) from None
        if response.status_code < 300 or response.status_code in ok:
            return _json.loads(response.content, {}) if response.content else {}
        raise self._error(response)

    def _error(self, response: httpx.Response) -> ReturnerError:
        body = _json.loads(response.content, {})
        text = (f"{body.get('error')}: {body.get('reason')}" if isinstance(body, dict) and body.get("error")
                else response.text[:200])
        status = response.status_code
        if status in (401, 403):
            return ReturnerError(self._line(f"{self.shown} refused the credentials: HTTP {status} {text}"))
        if status >= 500 or status == 429:
            return BackendUnavailable(self._line(f"{self.shown} cannot serve now: HTTP {status} {text}"))
        return ReturnerError(self._line(f"{self.shown}: HTTP {status} {text}"))

    def _db(self, rest: str = "") -> str:
        return quote(self.db, safe="") + ("/" + rest if rest else "")

    def _ensure(self) -> None:
        """The database and Salt's design document, created when missing (once per returner)."""
        if self._ready:
            return
        self._http("PUT", self._db(), ok=(412,))
        design = self._http("GET", self._db(DESIGN), ok=(404,))
        if design.get("views") != VIEWS or design.get("language") != "javascript":
            body = {"_id": DESIGN, "language": "javascript", "views": VIEWS}
            if design.get("_rev"):
                body["_rev"] = design["_rev"]
            self._http("PUT", self._db(DESIGN), body, ok=(409,))
        self._ready = True

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._ready = False
            if client is not None and self._pid == os.getpid():
                client.close()

    # -- write side ---------------------------------------------------------------------------------------
    def _bulk(self, docs: list[dict[str, Any]]) -> None:
        if not docs:
            return
        self._ensure()
        answers = self._http("POST", self._db("_bulk_docs"), {"docs": docs})
        # a conflict is a document already there: a batch delivered twice, or a load already saved
        failed = [a for a in answers if isinstance(a, dict) and a.get("error") and a.get("error") != "conflict"]
        if failed:
            first = failed[0]
            raise ReturnerError(self._line(f"{self.shown} refused {len(failed)} document(s), e.g. {first.get('id')!r}: "
                                           f"{first.get('error')}: {first.get('reason')}"))

    def returns(self, rets: list[dict[str, Any]]) -> None:
        rets = prepare_returns(self, rets)
        now = time.time()
        docs = []
        for ret in rets:
            minion, jid = ret.get("id"), ret.get("jid")
            if not minion or not jid:
                raise ReturnerError(self._line(f"a return without '{'id' if not minion else 'jid'}' cannot be stored"))
            # CouchDB reserves top-level fields starting with "_" (Salt's _stamp is refused too)
            doc = {k: v for k, v in safe(ret).items() if not str(k).startswith("_")}
            doc.update({"_id": doc_id(_json.text(jid), _json.text(minion)), "timestamp": now})
            docs.append(doc)
        self._bulk(docs)

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        docs: dict[str, dict[str, Any]] = {}
        for jid, load, _minions in loads:
            jid = _json.text(jid)
            if jid not in docs:
                body = {k: v for k, v in safe(load).items() if not str(k).startswith("_")}
                docs[jid] = {**body, "_id": jid, "jid": jid}
        self._bulk(list(docs.values()))  # the first load of a jid stays (a second one conflicts)

    # -- read side ------------------------------------------------------------------------------------------
    def get_load(self, jid: str) -> dict[str, Any]:
        self._ensure()
        doc = self._http("GET", self._db(quote(jid, safe="")), ok=(404,))
        if not isinstance(doc, dict) or doc.get("_id") != jid or doc.get("jid") != jid:
            return {}
        return {k: v for k, v in doc.items() if k not in ("_id", "_rev")}

    @staticmethod
    def _ret(doc: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in doc.items() if k not in ("_id", "_rev", "timestamp")}

    def get_jid(self, jid: str) -> dict[str, Any]:
        self._ensure()
        found = self._http("GET", self._db("_all_docs"), params={
            "startkey": f"{jid}-", "endkey": f"{jid}-\ufff0", "include_docs": "true"})
        return {row["doc"]["id"]: self._ret(row["doc"]) for row in found.get("rows", [])
                if isinstance(row.get("doc"), dict) and row["doc"].get("jid") == jid and "id" in row["doc"]}

    def get_fun(self, fun: str) -> dict[str, Any]:
        self._ensure()
        found = self._http("GET", self._db(f"{DESIGN}/_view/by-fun-minion-jid"), params={
            "startkey": [fun], "endkey": [fun, {}], "include_docs": "true"})
        latest: dict[str, dict[str, Any]] = {}
        for row in found.get("rows", []):  # sorted by minion, then jid: the last one is the newest
            if isinstance(row.get("doc"), dict):
                latest[row["key"][1]] = self._ret(row["doc"])
        return dict(sorted(latest.items()))

    def _loads(self) -> list[tuple[str, dict[str, Any]]]:
        self._ensure()
        found = self._http("GET", self._db(f"{DESIGN}/_view/jobs"), params={"include_docs": "true"})
        return [(row["key"], self._ret(row["doc"])) for row in found.get("rows", []) if isinstance(row.get("doc"), dict)]

    def get_jids(self) -> dict[str, Any]:
        return jids_listing(self._loads())

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        return newest_jobs(self._loads(), count, filter_find_job)

    def get_minions(self) -> list[str]:
        self._ensure()
        found = self._http("GET", self._db(f"{DESIGN}/_view/minions"), params={"group": "true"})
        return sorted(row["key"] for row in found.get("rows", []) if isinstance(row.get("key"), str))

    # -- housekeeping ------------------------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        """Delete the documents (loads and returns) of jobs older than ``keep_jobs_seconds``:
        ids begin with the jid, so they are one range of ``_all_docs``."""
        keep = self.keep_jobs_seconds
        if keep <= 0:
            return
        self._ensure()
        found = self._http("GET", self._db("_all_docs"), params={"startkey": "0", "endkey": cutoff_jid(keep)})
        doomed = [{"_id": row["id"], "_rev": row["value"]["rev"], "_deleted": True}
                  for row in found.get("rows", []) if row["id"][:1].isdigit()]
        self._bulk(doomed)

    def init_schema(self) -> None:
        """Create the database and the design document ``_design/salt`` with its views."""
        self._ready = False
        self._ensure()

    def check(self) -> None:
        self._http("GET", "")


_JSON_PARAMS = ("startkey", "endkey", "key")


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if "refused" in text.lower():
        return "connection refused"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return text or type(exc).__name__
