"""The ``nats`` returner: a saline cluster's job cache read from its JetStream records stream, and
returns and events published as JSON on NATS subjects for other consumers."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Awaitable, Mapping, TypeVar

import nats.errors  # nats-py: the registry turns its absence into "pip install 'saline[nats]'"
import nats.js.errors
from nats.js import api

from saline import recordlog
from saline.cluster.bridge import NatsBridge, shared
from saline.cluster.config import MAX_RECORD, ClusterConfig, ClusterError, escape_token, from_opts, unescape_token
from saline.cluster.streamread import read_stream
from saline.config import ConfigError
from saline.jid import is_jid
from saline.returners import _json
from saline.returners._notify import Sent, ret_key
from saline.returners._sql import jids_filter_listing, jids_listing, prepare_returns
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError
from saline.returners.options import scrub

T = TypeVar("T")
log = logging.getLogger(__name__)

#: the JetStream API prefix (nats-py's default; saline uses no JetStream domain)
API = "$JS.API"
#: a job with at most this many returns is read by one "last message of this subject" request per
#: minion, all in flight at once; a larger one through one pull consumer (which costs a consumer's
#: creation, and then streams: measured here, the two cross between 100 and 1,000 returns)
PARALLEL_GETS = 256
#: JetStream publishes in flight at once (nats-py's own limit, ``publish_async_max_pending``)
ACK_GROUP = 4000
#: messages read at once when the read side looks at returns one by one (get_fun, get_jids_filter)
GET_GROUP = 256
#: subject tokens a template may not produce (wildcards have no place in a published subject)
_BAD_TOKEN = re.compile(r"[\s*>]")
_FIELDS = {"subject": ("jid", "id", "fun"), "event_subject": ("tag",)}
_URL = re.compile(r"^(nats|tls)://[^/\s]+$")
_USERINFO = re.compile(r"//[^@/]*@")


class NatsReturner(Returner):
    """The ``nats`` returner (Salt has none): a cluster's job cache, and JSON on NATS subjects.

    **The job cache of a cluster** (``master_job_cache: nats``, the default when the master has
    ``nats_servers``). Every master of a cluster stores each return, job load and event once, as a
    message of the JetStream stream ``SALINE_<cluster_id>`` (its outbox, replicated,
    ``keep_jobs`` as its age limit); this returner reads that stream, so ``jobs.lookup_jid``,
    ``jobs.list_jobs`` and friends give the same answers on every master. Subjects and bodies::

        record  subject                                        body (MessagePack)
        return  saline.<cluster_id>.rec.ret.<jid>.<minion id>  the whole return
        load    saline.<cluster_id>.rec.load.<jid>             {"jid", "load", "minions"}
        event   saline.<cluster_id>.rec.event                  {"tag", "data"}

    Subject tokens are escaped: ``.``, ``*``, ``>``, ``%`` and white space become ``%XX``
    (``web1.example.com`` is ``web1%2Eexample%2Ecom``). Headers: ``Saline-Fun`` (the function of a
    return), ``Saline-Origin`` (the master that stored it), ``Saline-Route``, ``Nats-Msg-Id``.
    How it reads: ``get_jid`` asks the stream which minions' subjects exist for the job (per-subject
    counts, no message read), then reads the newest message of each (one request per minion, all
    in flight at once; for a large job one pull consumer, which counts them first), one return per
    minion even when the master stored it twice (two routes); ``get_load`` is the job's first load
    message, with ``Minions`` from it; ``get_jids`` reads every load once; ``get_jids_filter`` only
    the newest; ``get_minions`` is the per-subject counts of every return; ``get_fun`` finds each minion's
    newest job of the function from the loads and reads only those returns (a return without a
    load, from a minion's own schedule say, is read to learn its function). Bytes a minion returned
    read back as text. ``clean_old_jobs`` has nothing to do: the stream drops what is older than
    ``keep_jobs`` by itself (its ``max_age``). ``update_endtime``/``get_endtime`` are not kept.
    Outside a cluster (no ``nats_servers`` on the master) the read side refuses with one line.

    When the master's JetStream outbox serves this job cache, the records are kept where they
    are and nothing is delivered to this returner. Called as a returner anyway (a test, or a
    master whose outbox does not serve it), it writes the same messages, with the same
    ``Nats-Msg-Id`` (a return written twice within the stream's duplicate window is stored once).

    **JSON on subjects, for other consumers** (``--return nats``, ``return: nats``,
    ``event_return: nats`` when the job cache is something else, or on a single master): each
    return is published on ``subject`` (default ``salt.job.{jid}.ret.{id}``: ``{jid}``, ``{id}``
    and ``{fun}`` are filled in, each as one escaped token) and each event on ``event_subject``
    (default ``salt.event.{tag}``: each ``/``-separated part of the tag becomes one token, so
    ``salt/job/<jid>/ret/web1`` is ``salt.event.salt.job.<jid>.ret.web1`` and subscribers can
    filter on ``salt.event.salt.job.*.ret.>``). Bodies are JSON, as Salt's returners write it
    (the whole return; events as ``{"tag", "data"}``), UTF-8, so consumers in any language read
    them. Without ``stream``, a batch is published with core NATS and flushed once (the server has
    it; subscribers connected at that moment get it, nobody else: at most once). With ``stream``
    (a JetStream stream that captures those subjects; ``saline-run returners.init nats`` creates
    it, ``keep_jobs`` as its age limit) the batch is published asynchronously and every message's
    acknowledgement is awaited once per batch, so what was delivered is stored, replicated as
    the stream says; each message carries a ``Nats-Msg-Id`` (``ret/<jid>/<id>``, or a hash of an
    event), so a batch retried after a cut is stored once. A message larger than the server's
    ``max_payload`` (1 MiB by default; raise it, 8 MB is the usual ceiling) fails alone, with
    one line naming it; the rest of its batch is delivered (and not sent again when the outbox
    retries what failed).

    Connection: one per returner instance, reconnecting by itself; the job cache uses the master's
    own (the process's cluster connection) when its options are the master's. ``servers`` and
    the credentials and TLS files default to the master's ``nats_*`` options only when
    ``servers`` is not set or names the master's servers: the cluster's password is never sent to
    another server. An unreachable server fails fast (``BackendUnavailable``, one line); a refused
    login or TLS file is a ``ReturnerError``; a publish the server's permissions refuse is
    reported with the subject. What a NATS user needs: publish on the subjects (and, with
    ``stream``, ``$JS.API.STREAM.INFO.<stream>`` and subscribe on its ``inbox_prefix.>`` for the
    acknowledgements); the job cache's permissions are the cluster's (docs/scale-out.md).

    Example, watching the returns of every job as they come (the ``nats`` command-line tool)::

        nats sub 'salt.job.*.ret.>' --server tls://n1:4222 --tlsca ca.pem
        nats stream view SALT_RETURNS                 # with nats.stream: SALT_RETURNS
    """

    name = "nats"
    extra = "nats"
    summary = ("NATS: a cluster's job cache read from its JetStream stream; returns and events as JSON "
               "on subjects (core NATS, or a JetStream stream with acknowledgements)")
    options = (
        Option("servers", list, doc="nats:// or tls:// URLs to connect to (default: the master's nats_servers)"),
        Option("user", doc="user name (default: the master's nats_user, with the master's servers)"),
        Option("password", secret=True, doc="password (default: the master's nats_password, with its servers)"),
        Option("nkey_seed", doc="NKey seed file (default: the master's nats_nkey_seed, with its servers)"),
        Option("creds", doc="credentials file of decentralised auth, .creds (default: the master's nats_creds)"),
        Option("tls_ca", doc="CA file to verify the servers (default: the master's nats_tls_ca)"),
        Option("tls_cert", doc="client certificate file (default: the master's nats_tls_cert)"),
        Option("tls_key", doc="client key file (default: the master's nats_tls_key)"),
        Option("subject", default="salt.job.{jid}.ret.{id}",
               doc="subject of each return; {jid}, {id} and {fun} are filled in (each one escaped token)"),
        Option("event_subject", default="salt.event.{tag}",
               doc="subject of each event; {tag} becomes one token per /-separated part of the tag"),
        Option("stream", doc="publish through this JetStream stream and wait for its acknowledgements "
                             "(default: core NATS, no stream)"),
        Option("replicas", int, doc="replicas of the stream returners.init creates (default: 3 with three or "
                                    "more servers listed, else 1)"),
        Option("inbox_prefix", doc="prefix of the replies (acknowledgements) (default: _INBOX, or the cluster's "
                                   "own with the master's servers)"),
        Option("timeout", float, default=10.0, doc="seconds to wait for the server (connecting, flushing, "
                                                   "acknowledgements, reads)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        try:
            self.cluster = from_opts(self.master_opts)
        except ClusterError as exc:
            raise ConfigError(f"returner nats: {exc}") from None
        cache = self.master_opts.get("master_job_cache") or ("nats" if self.cluster else "saline_cache")
        #: this returner is the cluster's job cache: it writes records where its read side reads them
        self.is_cache = self.cluster is not None and cache == self.name
        self.timeout = float(self.opts.get("timeout") or 10.0)
        if self.timeout <= 0:
            raise ConfigError(f"returner nats: timeout must be more than 0, got {self.opts.get('timeout')}")
        self.subject = _template("subject", self.opts.get("subject") or "salt.job.{jid}.ret.{id}")
        self.event_subject = _template("event_subject", self.opts.get("event_subject") or "salt.event.{tag}")
        self.stream = self.opts.get("stream") or None
        self.target, self.master_connection = self._target()
        self.where = "NATS at " + ", ".join(_USERINFO.sub("//", s) for s in self.target.servers)
        self._secrets = [s for s in (self.target.password,) if s]
        self._lock = threading.Lock()
        self._bridge: _Bridge | None = None
        self._pid = os.getpid()
        self._sent = Sent()

    # -- options -----------------------------------------------------------------------------------
    def _target(self) -> tuple[ClusterConfig, bool]:
        """The connection this instance uses, and whether it is the master's cluster connection."""
        opts, cluster = self.opts, self.cluster
        servers = opts.get("servers")
        if servers:
            servers = [str(s).strip() for s in servers if str(s).strip()]
            for url in servers:
                if not _URL.match(url):
                    raise ConfigError(f"returner nats: servers: {_USERINFO.sub('//', url)!r} is not a "
                                      "nats://host:port or tls://host:port URL")
        master_servers = list(cluster.servers) if cluster else _master_servers(self.master_opts)
        if not servers:
            if not master_servers:
                raise ConfigError("returner nats: option nats.servers is not set (and the master has no nats_servers)")
            servers = master_servers
        # the master's credentials go only to the master's servers
        inherit = servers == master_servers
        mo = self.master_opts

        def pick(name: str) -> str | None:
            value = opts.get(name)
            if value is None and inherit:
                value = mo.get(f"nats_{name}")
            return str(value) if value else None

        values = {n: pick(n) for n in ("user", "password", "nkey_seed", "creds", "tls_ca", "tls_cert", "tls_key")}
        for name in ("nkey_seed", "creds", "tls_ca", "tls_cert", "tls_key"):
            if values[name] and not Path(values[name]).is_file():
                raise ConfigError(f"returner nats: {name}: {values[name]} is not a readable file")
        if bool(values["tls_cert"]) != bool(values["tls_key"]):
            raise ConfigError("returner nats: tls_cert and tls_key go together")
        same = cluster is not None and inherit and all(
            values[n] == getattr(cluster, n) for n in ("user", "password", "nkey_seed", "creds", "tls_ca",
                                                       "tls_cert", "tls_key"))
        inbox = opts.get("inbox_prefix") or (cluster.inbox_prefix if cluster is not None and inherit else "_INBOX")
        target = _Target(cluster_id=cluster.cluster_id if cluster else "nats", servers=tuple(servers),
                         replicas=cluster.replicas if cluster else 1,
                         connect_timeout=min(self.timeout, 5.0), name="saline nats returner", inbox=str(inbox),
                         **values)
        return target, same and not opts.get("inbox_prefix")

    # -- the connection --------------------------------------------------------------------------------
    def _line(self, text: str) -> str:
        return scrub(f"returner {self.name}: {' '.join(str(text).split())}", self._secrets)

    def _connection(self, own: bool = False) -> NatsBridge:
        """The bridge to use: the master's cluster connection for the job cache when the options are
        the master's, else this instance's own (connected on first use, again after ``close``)."""
        if not own and self.master_connection and self.cluster is not None:
            try:
                bridge = shared(self.cluster)
            except ClusterError as exc:
                raise self._connect_error(str(exc)) from None
        else:
            with self._lock:
                if self._bridge is not None and self._pid != os.getpid():
                    self._bridge = None  # inherited through fork(): its loop thread is the parent's
                if self._bridge is None:
                    fresh = _Bridge(self.target)
                    try:
                        fresh.connect()
                    except ClusterError as exc:
                        fresh.close()
                        raise self._connect_error(str(exc)) from None
                    self._bridge, self._pid = fresh, os.getpid()
                bridge = self._bridge
        if not bridge.connected.is_set():
            raise BackendUnavailable(self._line(f"not connected to {self.where} (reconnecting)"))
        return bridge

    def _connect_error(self, text: str) -> ReturnerError:
        low = text.lower()
        if "authorization" in low or "authentication" in low or "tls files" in low or "certificate" in low:
            return ReturnerError(self._line(text))
        return BackendUnavailable(self._line(text))

    def _call(self, bridge: NatsBridge, coro: Awaitable[T], doing: str, timeout: float | None = None) -> T:
        """Run ``coro`` on the bridge's loop; NATS' failures as one line (unavailable or not)."""
        try:
            return bridge.call(coro, timeout=timeout or self.timeout + 5)
        except ReturnerError:
            raise
        except Exception as exc:
            raise self._error(exc, doing) from None

    def _error(self, exc: BaseException, doing: str) -> ReturnerError:
        text = _one_line(exc)
        if isinstance(exc, nats.js.errors.NoStreamResponseError):
            return BackendUnavailable(self._line(f"{doing}: no stream answered on {self.where} (none takes the "
                                                 "subject, or it is electing a leader)"))
        if isinstance(exc, nats.js.errors.ServiceUnavailableError):
            return BackendUnavailable(self._line(f"{doing}: JetStream unavailable on {self.where}: {text}"))
        if isinstance(exc, nats.js.errors.APIError):
            return ReturnerError(self._line(f"{doing}: {self.where}: {text}"))
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError,
                            nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
                            nats.errors.OutboundBufferLimitError, nats.errors.StaleConnectionError, OSError)):
            return BackendUnavailable(self._line(f"{doing}: {self.where}: {text}"))
        return ReturnerError(self._line(f"{doing}: {self.where}: {text}"))

    def close(self) -> None:
        with self._lock:
            bridge, self._bridge = self._bridge, None
        if bridge is not None and self._pid == os.getpid():
            bridge.close()

    def check(self) -> None:
        """The server answers; the stream written to (the records stream, or ``stream``) exists."""
        if self.is_cache:
            self._stream_state(self._connection(), self.records)
            return
        bridge = self._connection(own=True)
        if self.stream:
            self._stream_state(bridge, self.stream)
        else:
            self._call(bridge, _flush(bridge.nc, self.timeout), "flush")

    def _stream_state(self, bridge: NatsBridge, stream: str) -> dict[str, Any]:
        data = self._call(bridge, _api(bridge, f"STREAM.INFO.{stream}", {}, self.timeout), "stream info")
        info = self._api_answer(data, f"stream {stream}")
        return info.get("state") or {}

    def _api_answer(self, data: bytes, what: str) -> dict[str, Any]:
        try:
            answer = json.loads(data)
        except ValueError:
            raise ReturnerError(self._line(f"{what}: not a JetStream answer: {data[:80]!r}")) from None
        error = answer.get("error") if isinstance(answer, dict) else None
        if error:
            if error.get("err_code") == 10059:
                hint = ("no master of cluster " + self.target.cluster_id + " has started there"
                        if what.endswith(self.records) else "saline-run returners.init nats creates it")
                raise ReturnerError(self._line(f"{what} does not exist on {self.where} ({hint})"))
            if error.get("code") == 503:
                raise BackendUnavailable(self._line(f"{what}: {error.get('description')} on {self.where}"))
            raise ReturnerError(self._line(f"{what}: {error.get('description')} (error {error.get('err_code')})"))
        return answer

    def init_schema(self) -> None:
        """Create the stream this instance writes to when it does not exist: the records stream of
        the job cache (as the masters' outbox makes it), or ``stream`` capturing the subjects."""
        if self.is_cache:
            params: dict[str, Any] = self.target.records_stream(self.keep_jobs_seconds)
            bridge = self._connection()
        elif self.stream:
            filters = list(dict.fromkeys([_wildcard(self.subject), _wildcard(self.event_subject)]))
            # a stream's subjects may not overlap: one that another covers is left out
            subjects = [f for f in filters if not any(o != f and _covers(o, f) for o in filters)]
            replicas = self.opts.get("replicas") or (3 if len(self.target.servers) >= 3 else 1)
            params = dict(name=self.stream, subjects=subjects, num_replicas=int(replicas),
                          storage=api.StorageType.FILE, max_msg_size=MAX_RECORD)
            bridge = self._connection(own=True)
        else:
            log.info("returner nats: core NATS subjects need nothing created (set nats.stream for a JetStream stream)")
            return
        if self.keep_jobs_seconds > 0 and not self.is_cache:
            params["max_age"] = float(self.keep_jobs_seconds)
        name = params["name"]
        data = self._call(bridge, _api(bridge, f"STREAM.INFO.{name}", {}, self.timeout), "stream info")
        if (json.loads(data).get("error") or {}).get("err_code") != 10059:
            self._api_answer(data, f"stream {name}")
            return  # there already: its settings are its owner's

        async def create() -> None:
            await bridge.js.add_stream(**params)
            await _wait_leader(bridge.js, name, self.timeout)

        self._call(bridge, create(), f"creating stream {name}", timeout=self.timeout * 2 + 5)
        log.info("returner nats: created stream %s (%s)", name, ", ".join(params["subjects"]))

    # -- write side ----------------------------------------------------------------------------------
    def returns(self, rets: list[dict[str, Any]]) -> None:
        if self.is_cache:
            rets = prepare_returns(self, rets)
            self._store([self._ret_record(r) for r in rets], "returns")
            return
        todo = self._sent.fresh(rets)
        if not todo:
            return
        messages = []
        for ret in todo:
            fields = {"jid": _token(ret.get("jid")), "id": _token(ret.get("id")), "fun": _token(ret.get("fun"))}
            key = ret_key(ret)
            body = _json.dumps(ret).encode("utf-8")
            msg_id = f"ret/{key[0]}/{key[1]}"
            messages.append(_Message(self.subject.format_map(fields), body, msg_id, key,
                                     f"the return of {key[1]} for job {key[0]}"))
        self._publish(messages)

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        """The job cache keeps each job's load (the first one stored); publishing JSON, loads are
        not sent (Salt's returners that publish send returns and events only)."""
        if not self.is_cache:
            return
        records = []
        for jid, load, minions in loads:
            if minions is None and isinstance(load.get("minions"), list):
                minions = load["minions"]
            records.append((f"{self.names}.rec.load.{escape_token(str(jid))}",
                            {"jid": str(jid), "load": load, "minions": minions},
                            {"Nats-Msg-Id": f"load/{jid}/"}, f"the load of job {jid}"))
        self._store(records, "loads")

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        if self.is_cache:
            self._store([(f"{self.names}.rec.event", {"tag": e.get("tag"), "data": e.get("data")}, {},
                          f"event {_json.text(e.get('tag'))}") for e in events], "events")
            return
        messages = []
        for event in events:
            tag = _json.text(event.get("tag"))
            subject = self.event_subject.format_map({"tag": ".".join(_token(p) for p in tag.split("/"))})
            body = _json.dumps({"tag": event.get("tag"), "data": event.get("data")}).encode("utf-8")
            digest = hashlib.sha256(subject.encode() + b"\n" + body).hexdigest()[:32]
            if ("event", digest) not in self._sent:  # not again when the outbox retries a batch
                messages.append(_Message(subject, body, f"event/{digest}", ("event", digest), f"event {tag}"))
        self._publish(messages)

    # ... the job cache's records (the same messages the masters' JetStream outbox keeps)
    @property
    def names(self) -> str:
        """The subjects' prefix of the cluster's records, ``saline.<cluster_id>``."""
        return f"saline.{self.target.cluster_id}"

    @property
    def records(self) -> str:
        return f"SALINE_{self.target.cluster_id}"

    def _ret_record(self, ret: dict[str, Any]) -> tuple[str, Any, dict[str, str], str]:
        jid, mid, fun = _json.text(ret.get("jid")), _json.text(ret.get("id")), ret.get("fun")
        headers = {"Nats-Msg-Id": f"ret/{jid}/{mid}/"}
        if isinstance(fun, str):
            headers["Saline-Fun"] = fun
        return (f"{self.names}.rec.ret.{escape_token(jid)}.{escape_token(mid)}", ret, headers,
                f"the return of {mid} for job {jid}")

    def _store(self, records: list[tuple[str, Any, dict[str, str], str]], what: str) -> None:
        """Publish records into the records stream and wait for every acknowledgement."""
        if not records:
            return
        messages = []
        for subject, payload, headers, name in records:
            try:
                body = recordlog.pack(payload)
            except Exception as exc:  # msgpack refuses it (the outbox splits the batch to find which)
                raise ReturnerError(self._line(f"cannot encode {name}: {_one_line(exc)}")) from None
            messages.append(_Message(subject, body, headers.get("Nats-Msg-Id"), None, name,
                                     {"Saline-Route": "", "Saline-Origin": self.master_id, **headers}))
        bridge = self._connection()
        failures = self._call(bridge, _publish_js(bridge, messages, self.records, self.timeout), f"storing {what}",
                              timeout=self.timeout * 2 + 5)
        self._raise_failures(failures, messages, bridge)

    def _publish(self, messages: list[_Message]) -> None:
        if not messages:
            return
        bridge = self._connection(own=True)
        if self.stream:
            failures = self._call(bridge, _publish_js(bridge, messages, self.stream, self.timeout), "publishing",
                                  timeout=self.timeout * 2 + 5)
        else:
            failures = self._call(bridge, _publish_core(bridge, messages, self.timeout), "publishing",
                                  timeout=self.timeout * 2 + 5)
        self._sent.add(m.key for i, m in enumerate(messages) if m.key is not None and i not in failures)
        self._raise_failures(failures, messages, bridge)

    def _raise_failures(self, failures: dict[int, BaseException | str], messages: list[_Message],
                        bridge: NatsBridge) -> None:
        """Nothing, or one line for what was not delivered (naming the first), unavailable when
        every failure is the server's being away."""
        if not failures:
            return
        index, first = next(iter(failures.items()))
        unavailable = all(not isinstance(e, str) and not isinstance(e, nats.errors.MaxPayloadError)
                          and isinstance(self._error(e, ""), BackendUnavailable) for e in failures.values())
        if isinstance(first, nats.errors.MaxPayloadError):
            limit = getattr(bridge.nc, "max_payload", 0) or 0
            why = (f"{len(messages[index].body) / 1048576:.1f} MiB, larger than the server's max_payload "
                   f"({limit / 1048576:g} MiB)")
        else:
            why = first if isinstance(first, str) else _one_line(first)
        line = self._line(f"{self.where}: {len(failures)} of {len(messages)} message(s) not delivered; "
                          f"{messages[index].name}: {why}")
        raise (BackendUnavailable if unavailable else ReturnerError)(line)

    # -- read side -----------------------------------------------------------------------------------
    def _reader(self) -> NatsBridge:
        if self.cluster is None:
            raise ConfigError("returner nats: the job cache (master_job_cache: nats) needs the master in a cluster: "
                              "set cluster_id and nats_servers")
        return self._connection()

    def _subject_counts(self, bridge: NatsBridge, subjects_filter: str) -> dict[str, int]:
        """Per-subject message counts of the records stream under a filter, every page of them (the
        server answers at most 100,000 subjects at a time); no message is read."""
        out: dict[str, int] = {}
        while True:
            request = {"subjects_filter": subjects_filter}
            if out:
                request["offset"] = len(out)
            data = self._call(bridge, _api(bridge, f"STREAM.INFO.{self.records}", request, self.timeout),
                              "reading the job cache")
            answer = self._api_answer(data, f"stream {self.records}")
            page = (answer.get("state") or {}).get("subjects") or {}
            out.update(page)
            if not page or len(out) >= int(answer.get("total") or 0):
                return out

    def _last_messages(self, bridge: NatsBridge, subjects: list[str]) -> dict[str, tuple[dict[str, str], bytes]]:
        """The newest message of each subject: {subject: (headers, body)} (gone ones left out)."""
        out: dict[str, tuple[dict[str, str], bytes]] = {}
        for start in range(0, len(subjects), GET_GROUP):
            group = subjects[start:start + GET_GROUP]
            answers = self._call(bridge, _gets(bridge, self.records, [{"last_by_subj": s} for s in group], self.timeout),
                                 "reading the job cache")
            for data in answers:
                found = self._message(data)
                if found is not None:
                    out[found[0]] = found[1:]
        return out

    def _message(self, data: bytes) -> tuple[str, dict[str, str], bytes] | None:
        answer = json.loads(data)
        error = answer.get("error")
        if error:
            if error.get("err_code") == 10037 or error.get("code") == 404 and error.get("err_code") != 10059:
                return None  # no such message (any more)
            self._api_answer(data, f"stream {self.records}")
        msg = answer["message"]
        headers = _headers(base64.b64decode(msg["hdrs"])) if msg.get("hdrs") else {}
        return msg["subject"], headers, base64.b64decode(msg.get("data") or b"")

    def _first_message(self, bridge: NatsBridge, subjects: list[str]) -> dict[str, tuple[dict[str, str], bytes]]:
        """The oldest message of each subject (a job's first load)."""
        out: dict[str, tuple[dict[str, str], bytes]] = {}
        for start in range(0, len(subjects), GET_GROUP):
            group = subjects[start:start + GET_GROUP]
            answers = self._call(bridge, _gets(bridge, self.records, [{"seq": 0, "next_by_subj": s} for s in group],
                                               self.timeout), "reading the job cache")
            for data in answers:
                found = self._message(data)
                if found is not None:
                    out[found[0]] = found[1:]
        return out

    def _all_messages(self, bridge: NatsBridge, subject: str) -> list[tuple[str, dict[str, str], bytes]]:
        return self._call(bridge, _read_all(bridge, self.records, subject), "reading the job cache",
                          timeout=max(self.timeout, 60.0) * 10)

    def get_jid(self, jid: str) -> dict[str, Any]:
        bridge = self._reader()
        subjects = list(self._subject_counts(bridge, f"{self.names}.rec.ret.{escape_token(str(jid))}.*"))
        if not subjects:
            return {}
        if len(subjects) <= PARALLEL_GETS:
            found = self._last_messages(bridge, subjects)
            messages = [(s, h, b) for s, (h, b) in found.items()]
        else:
            messages = self._all_messages(bridge, f"{self.names}.rec.ret.{escape_token(str(jid))}.*")
        out: dict[str, Any] = {}
        for subject, _headers, body in messages:  # oldest first: a minion's newest return wins
            out[unescape_token(subject.rsplit(".", 1)[-1])] = body
        return {mid: _json.decode(recordlog.unpack(body)) for mid, body in out.items()}

    def _load_of(self, body: bytes, minions: bool = True) -> tuple[str | None, dict[str, Any]]:
        """(jid, load) of a load record; with ``minions``, the load has ``Minions`` (the job's
        expected minions), as the job cache gives it."""
        payload = recordlog.unpack(body)
        if not isinstance(payload, dict):
            return None, {}
        load = dict(payload["load"]) if isinstance(payload.get("load"), dict) else {}
        if minions and payload.get("minions") is not None:
            load["Minions"] = sorted(set(map(str, payload["minions"])))
        return (str(payload["jid"]) if payload.get("jid") is not None else None), load

    def get_load(self, jid: str) -> dict[str, Any]:
        bridge = self._reader()
        subject = f"{self.names}.rec.load.{escape_token(str(jid))}"
        found = self._first_message(bridge, [subject]).get(subject)
        return _json.decode(self._load_of(found[1])[1]) if found else {}

    def get_jids(self) -> dict[str, Any]:
        return jids_listing((jid, _json.decode(load)) for jid, load in self._all_loads().items())

    def _all_loads(self) -> dict[str, dict[str, Any]]:
        """Every job's (first) load, by jid (without ``Minions``)."""
        bridge = self._reader()
        if not self._subject_counts(bridge, f"{self.names}.rec.load.*"):
            return {}
        loads: dict[str, dict[str, Any]] = {}
        for _subject, _headers, body in self._all_messages(bridge, f"{self.names}.rec.load.*"):
            jid, load = self._load_of(body, minions=False)
            if jid is not None and jid not in loads:
                loads[jid] = load
        return loads

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        if count <= 0:
            return []
        bridge = self._reader()
        by_jid = {}
        for subject in self._subject_counts(bridge, f"{self.names}.rec.load.*"):
            jid = unescape_token(subject.rsplit(".", 1)[-1])
            if is_jid(jid):
                by_jid[jid] = subject
        newest = sorted(by_jid, reverse=True)
        found: list[tuple[str, dict[str, Any]]] = []
        start = 0
        while len(found) < count and start < len(newest):
            group = newest[start:start + max(count - len(found), 16)]
            start += len(group)
            loads = self._first_message(bridge, [by_jid[j] for j in group])
            for jid in group:
                got = loads.get(by_jid[jid])
                if got is None:
                    continue
                load = self._load_of(got[1], minions=False)[1]
                if filter_find_job and load.get("fun") == "saltutil.find_job":
                    continue
                found.append((jid, _json.decode(load)))
                if len(found) >= count:
                    break
        return jids_filter_listing(found)

    def get_minions(self) -> list[str]:
        bridge = self._reader()
        counts = self._subject_counts(bridge, f"{self.names}.rec.ret.*.*")
        return sorted({unescape_token(s.rsplit(".", 1)[-1]) for s in counts})

    def get_fun(self, fun: str) -> dict[str, Any]:
        """For each minion, its return of ``fun`` in the newest job that ran it.

        Which jobs ran ``fun`` comes from their loads (one read of every load); each minion's
        candidate jobs are then looked at newest first, and only the returns that answer are read
        (a return whose job has no load, or a function list, is read to see its function)."""
        bridge = self._reader()
        returned: dict[str, list[tuple[str, str]]] = {}
        for subject in self._subject_counts(bridge, f"{self.names}.rec.ret.*.*"):
            _, jid_token, mid_token = subject.rsplit(".", 2)
            returned.setdefault(unescape_token(mid_token), []).append((unescape_token(jid_token), subject))
        if not returned:
            return {}
        funs = {jid: load.get("fun") for jid, load in self._all_loads().items()}
        # each minion's jobs, newest first, without those whose load says they ran something else
        # (a multi-function job's returns never match a single function)
        queues = {mid: [(jid, s) for jid, s in sorted(jobs, reverse=True)
                        if funs.get(jid) is None or funs.get(jid) == fun]
                  for mid, jobs in returned.items()}
        out: dict[str, Any] = {}
        while True:
            wanted = {queues[mid].pop(0)[1]: mid for mid in queues if queues[mid]}
            if not wanted:
                return out
            found = self._last_messages(bridge, list(wanted))
            for subject, mid in wanted.items():
                got = found.get(subject)
                ret = recordlog.unpack(got[1]) if got else None
                if isinstance(ret, dict) and ret.get("fun") == fun:
                    out[mid] = _json.decode(ret)
                    del queues[mid]


# -- helpers ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Target(ClusterConfig):
    """A connection's options; its replies come on ``inbox`` (``_INBOX``, or a cluster's own)."""

    inbox: str = "_INBOX"

    @property
    def inbox_prefix(self) -> str:  # type: ignore[override]
        return self.inbox


class _Bridge(NatsBridge):
    """A returner's own connection, which also remembers the publishes the server refused (a
    permissions violation is only told to the error callback: the publish itself succeeds)."""

    def __init__(self, config: ClusterConfig) -> None:
        super().__init__(config)
        self.refused: list[str] = []

    async def _error(self, exc: Exception) -> None:
        text = str(exc)
        if "permissions violation for publish" in text.lower():
            self.refused.append(text)
            del self.refused[:-100]
        await super()._error(exc)


@dataclasses.dataclass
class _Message:
    subject: str
    body: bytes
    msg_id: str | None
    key: Any  # what the returner remembers as delivered (a return's key), or None
    name: str  # how an error names it
    headers: dict[str, str] | None = None


def _template(option: str, text: str) -> str:
    """A subject template checked once: known fields only, and a valid subject once filled in."""
    fields = _FIELDS[option]
    try:
        sample = text.format_map({f: "x" for f in fields})
    except (KeyError, IndexError, ValueError) as exc:
        known = ", ".join("{" + f + "}" for f in fields)
        what = f"unknown field {{{exc.args[0]}}}" if isinstance(exc, KeyError) else _one_line(exc)
        raise ConfigError(f"returner nats: {option} {text!r}: {what} (it may use {known})") from None
    tokens = sample.split(".")
    if any(not t or _BAD_TOKEN.search(t) for t in tokens):
        raise ConfigError(f"returner nats: {option} {text!r} is not a valid NATS subject (empty tokens, white "
                          "space and the wildcards * and > are not allowed)")
    return text


def _wildcard(template: str) -> str:
    """The subject filter that captures every subject ``template`` makes (for a stream)."""
    tokens = template.split(".")
    out = []
    for i, token in enumerate(tokens):
        if "{tag}" in token:
            if token != "{tag}" or i != len(tokens) - 1:
                raise ConfigError(f"returner nats: event_subject {template!r}: a stream can capture {{tag}} only as "
                                  "the whole last token")
            out.append(">")
        elif "{" in token:
            out.append("*")
        else:
            out.append(token)
    return ".".join(out)


def _covers(wide: str, narrow: str) -> bool:
    """Whether every subject the filter ``narrow`` matches is matched by the filter ``wide``."""
    w, n = wide.split("."), narrow.split(".")
    for i, token in enumerate(w):
        if token == ">":
            return len(n) > i
        if i >= len(n) or n[i] == ">" or token != "*" and token != n[i]:
            return False
    return len(w) == len(n)


def _token(value: Any) -> str:
    return escape_token(_json.text(value))


def _master_servers(master_opts: Mapping[str, Any]) -> list[str]:
    servers = master_opts.get("nats_servers")
    if isinstance(servers, str):
        return [s.strip() for s in servers.split(",") if s.strip()]
    return [str(s) for s in servers or []]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {text}" if text and not text.startswith(name) else text or name


def _headers(raw: bytes) -> dict[str, str]:
    """``NATS/1.0`` header block as a dict (the first value of each name)."""
    out: dict[str, str] = {}
    for line in raw.decode("utf-8", errors="replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip() and name.strip() not in out:
            out[name.strip()] = value.strip()
    return out


async def _api(bridge: NatsBridge, what: str, request: dict[str, Any], timeout: float) -> bytes:
    """One JetStream API request, its raw JSON answer (parsed by the caller, off the bridge's loop)."""
    answer = await bridge.nc.request(f"{API}.{what}", json.dumps(request).encode() if request else b"",
                                     timeout=timeout)
    return answer.data


async def _gets(bridge: NatsBridge, stream: str, requests: list[dict[str, Any]], timeout: float) -> list[bytes]:
    """Message GET requests, all in flight at once; the raw answers in order."""
    return list(await asyncio.gather(*(_api(bridge, f"STREAM.MSG.GET.{stream}", r, timeout) for r in requests)))


async def _read_all(bridge: NatsBridge, stream: str, subject: str) -> list[tuple[str, dict[str, str], bytes]]:
    """Every message of ``stream`` under ``subject``, oldest first (the bodies are decoded by
    the caller); raises when the stream cannot be read completely now."""
    out: list[tuple[str, dict[str, str], bytes]] = []
    await read_stream(bridge.js, stream, subject,
                      lambda msg: out.append((msg.subject, dict(msg.headers or {}), msg.data)))
    return out


async def _publish_js(bridge: NatsBridge, messages: list[_Message], stream: str,
                      timeout: float) -> dict[int, BaseException | str]:
    """Publish through JetStream and wait once for every acknowledgement (once per group of
    ``ACK_GROUP``: nats-py holds that many in flight); {index: why} of the failed."""
    js = bridge.js
    failures: dict[int, BaseException | str] = {}
    mark = len(getattr(bridge, "refused", ()))
    # One message per id: the server answers a second one in flight with the same id with an
    # error (10158, "duplicate message id is in process") that nats-py never hands to its future.
    first_of: dict[str, int] = {}
    copies: dict[int, int] = {}
    for i, m in enumerate(messages):
        if m.msg_id:
            copies[i] = first_of.setdefault(m.msg_id, i)
    for start in range(0, len(messages), ACK_GROUP):
        futures: dict[asyncio.Future, int] = {}
        try:
            for i in range(start, min(start + ACK_GROUP, len(messages))):
                if copies.get(i, i) != i:
                    continue  # the same message as an earlier one: its outcome is that one's
                m = messages[i]
                headers = dict(m.headers or {})
                if m.msg_id:
                    headers["Nats-Msg-Id"] = m.msg_id
                try:
                    # no wait_stall: with it nats-py starts a task per message (25 times slower here)
                    fut = await js.publish_async(m.subject, m.body, headers=headers, stream=stream)
                except Exception as exc:  # too large: this one alone
                    failures[i] = exc
                    continue
                futures[fut] = i
            if futures:
                done, pending = await asyncio.wait(list(futures), timeout=timeout)
                for fut in pending:
                    failures[futures[fut]] = TimeoutError(f"no acknowledgement within {timeout:g} s")
                for fut in done:
                    if fut.exception() is not None:
                        failures[futures[fut]] = fut.exception()  # type: ignore[assignment]
        finally:
            for fut in futures:
                if not fut.done():
                    fut.cancel()  # frees its slot; a retry with the same Nats-Msg-Id is stored once
    for i, first in copies.items():
        if first != i and first in failures:
            failures[i] = failures[first]
    refused = getattr(bridge, "refused", [])[mark:]
    if refused and failures:
        for i in failures:
            failures[i] = refused[0]  # the reason the server gave, rather than a silent timeout
    return dict(sorted(failures.items()))


async def _publish_core(bridge: NatsBridge, messages: list[_Message], timeout: float) -> dict[int, BaseException | str]:
    """Publish with core NATS, flush once; {index: why} of the failed (too large, or refused)."""
    nc = bridge.nc
    failures: dict[int, BaseException | str] = {}
    mark = len(getattr(bridge, "refused", ()))
    for i, m in enumerate(messages):
        try:
            await nc.publish(m.subject, m.body)
        except nats.errors.MaxPayloadError as exc:  # this one alone
            failures[i] = exc
    await _flush(nc, timeout)
    refused = getattr(bridge, "refused", [])[mark:]
    if refused:
        subjects = {m.group(1) for m in (re.search(r'publish to "([^"]*)"', r) for r in refused) if m}
        for i, m in enumerate(messages):
            if m.subject.lower() in subjects or not subjects:
                failures[i] = refused[0]
    return dict(sorted(failures.items()))


async def _flush(nc: Any, timeout: float) -> None:
    """Until the server has read everything published so far (and refused what it refuses).

    nats-py's ``flush`` writes its PING straight to the socket, ahead of the publishes still
    queued for its flusher task: its PONG can come back before the server has seen them. So wait
    until the queue is written first; the PING then follows the publishes on the wire."""
    deadline = asyncio.get_running_loop().time() + timeout
    while nc.pending_data_size > 0:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"publishes not written within {timeout:g} s")
        await asyncio.sleep(0.001)
    await nc.flush(timeout)


async def _wait_leader(js: Any, stream: str, timeout: float) -> None:
    """Until a stream just created has a leader (it answers nobody before). Not a probe publish:
    subscribers of the subjects would see it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        info = await js.stream_info(stream)
        if info.cluster is None or info.cluster.leader:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"stream {stream} has no leader after {timeout:g} s")
        await asyncio.sleep(0.05)
