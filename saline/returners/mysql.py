"""Salt's ``mysql`` returner (MySQL, MariaDB) over mysqlclient or PyMySQL: Salt's tables, values
and options."""

from __future__ import annotations

import importlib
import logging
import os
import re
import socket
import ssl
import threading
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

from saline.config import ConfigError
from saline.returners import _json
from saline.returners._sql import FIND_JOB_LIKE, cutoff_jid, jids_filter_listing, jids_listing, one_line, prepare_returns
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError
from saline.returners.options import scrub, secret_values

T = TypeVar("T")
log = logging.getLogger(__name__)

TABLES = ("jids", "salt_returns", "salt_events")

# Salt's DDL, with one change: utf8mb4 instead of utf8 (MariaDB's 3-byte utf8mb3), so emoji and
# other characters beyond the BMP are stored as they are. Columns, types and keys are Salt's.
DDL = {
    "jids": """CREATE TABLE IF NOT EXISTS `jids` (
  `jid` varchar(255) NOT NULL,
  `load` mediumtext NOT NULL,
  UNIQUE KEY `jid` (`jid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    "salt_returns": """CREATE TABLE IF NOT EXISTS `salt_returns` (
  `fun` varchar(50) NOT NULL,
  `jid` varchar(255) NOT NULL,
  `return` mediumtext NOT NULL,
  `id` varchar(255) NOT NULL,
  `success` varchar(10) NOT NULL,
  `full_ret` mediumtext NOT NULL,
  `alter_time` TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
  KEY `id` (`id`),
  KEY `jid` (`jid`),
  KEY `fun` (`fun`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    "salt_events": """CREATE TABLE IF NOT EXISTS `salt_events` (
  `id` BIGINT NOT NULL AUTO_INCREMENT,
  `tag` varchar(255) NOT NULL,
  `data` mediumtext NOT NULL,
  `alter_time` TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
  `master_id` varchar(255) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `tag` (`tag`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
}

# the heads (and tail) of the multi-row INSERTs; the rows go between, escaped by the driver
_INSERT_RETURN = "INSERT INTO `salt_returns` (`fun`, `jid`, `return`, `id`, `success`, `full_ret`) VALUES "
# a jid already stored keeps its first load (Salt ignores the duplicate-key error); unlike
# INSERT IGNORE this still fails loudly on anything else (a value too long, a missing column)
_INSERT_LOAD = "INSERT INTO `jids` (`jid`, `load`) VALUES "
_INSERT_LOAD_TAIL = " ON DUPLICATE KEY UPDATE `jid` = `jid`"
_INSERT_EVENT = "INSERT INTO `salt_events` (`tag`, `data`, `master_id`) VALUES "
_GET_FUN = ("SELECT s.`id`, s.`full_ret` FROM `salt_returns` s JOIN "
            "(SELECT `id`, MAX(`jid`) AS `jid` FROM `salt_returns` WHERE `fun` = %s GROUP BY `id`) latest "
            "ON s.`id` = latest.`id` AND s.`jid` = latest.`jid` WHERE s.`fun` = %s")
_GET_JIDS_FILTER = ("SELECT * FROM (SELECT DISTINCT `jid`, `load` FROM `jids` {where} "
                    "ORDER BY `jid` DESC LIMIT %s) `tmp` ORDER BY `jid`")

# MySQL/MariaDB error numbers (server ER_*, client CR_*)
_ACCESS_DENIED, _DB_ACCESS_DENIED, _BAD_DB, _NO_TABLE = 1045, 1044, 1049, 1146
_TABLE_DENIED, _BAD_FIELD, _DATA_TOO_LONG, _BAD_STRING, _PACKET_TOO_BIG = 1142, 1054, 1406, 1366, 1153
_SSL_ERROR = 2026
# the connection is gone: reconnect and try once more
_DISCONNECTED = {0, 2006, 2013, 2014, 2055, 1053, 1927, 4031}
# the server cannot take the work now but will later: the framework retries
_TRANSIENT = _DISCONNECTED | {2002, 2003, 2005, 1040, 1203, 1205, 1213, 1226, 1290, 1836}
_MEDIUMTEXT = 16 * 1024 * 1024 - 1
_WIDTHS = {"fun": 50, "id": 255, "tag": 255, "master_id": 255}

_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")


def _escape_astral(json_text: str) -> str:
    """JSON-escape characters beyond the BMP (``\\ud83d\\ude00``): the same JSON, storable in a
    3-byte ``utf8`` column. Such characters only occur inside JSON strings, so this is exact."""

    def pair(match: re.Match[str]) -> str:
        code = ord(match.group()) - 0x10000
        return "\\u%04x\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))

    return _ASTRAL.sub(pair, json_text)


def _unseen(rows: Iterable[tuple[str, ...]], seen: set[tuple[Any, ...]]) -> Iterator[tuple[str, ...]]:
    """The return rows whose (jid, id, fun) is not in ``seen`` (the first of copies in ``rows``)."""
    for row in rows:
        key = (row[1], row[3], row[0])
        if key not in seen:
            seen.add(key)
            yield row


# -- the drivers -------------------------------------------------------------------------------------
# A batch is sent as multi-row ``INSERT … VALUES (…),(…)`` statements of at most this many bytes
# (characters with PyMySQL, whose statements are text; a single row larger than that goes alone),
# far below any server's max_allowed_packet. Measured: the size of the statements barely matters
# (see docs/performance.md); what costs is one statement per row, or many small ones, and a client
# that waits while the server works (mysqlclient builds the next statement meanwhile).
_STATEMENT_SIZE = 1024 * 1024


class _Driver(ABC):
    """One DB-API driver: how to connect, its exceptions, and its escaping of values into SQL."""

    name = ""  # the value of mysql.driver
    module_name = ""  # what to import
    package = ""  # what pip installs
    extra = ""  # the saline extra that installs it
    #: the size of a batch's first statement, each next one twice the last up to the limit
    #: (None: every statement up to the limit)
    first_statement: int | None = None

    def __init__(self, module: Any) -> None:
        self.module = module
        self.error: type[Exception] = module.MySQLError
        self.interface_error: type[Exception] = module.InterfaceError

    @abstractmethod
    def connect_args(self, base: dict[str, Any], tls: dict[str, str]) -> dict[str, Any]:
        """The driver's keyword arguments to connect with, from saline's ``base`` and ``tls``."""

    @abstractmethod
    def row_literal(self, conn: Any) -> Callable[[tuple[str, ...]], Any]:
        """``("a", "b")`` -> ``('a','b')``: a row of text, each value escaped by the driver for
        this connection."""

    def sql(self, text: str) -> Any:
        """Statement text in the form the driver's statements are built in."""
        return text

    def statement_size(self, max_packet: int) -> int:
        return max(4096, min(_STATEMENT_SIZE, max_packet - 65536))

    def execute_all(self, cur: Any, statements: Iterator[Any]) -> None:
        """Run the statements in turn, in the transaction of ``cur``."""
        for statement in statements:
            cur.execute(statement)  # no arguments: the driver does no %-formatting of the text

    def statements(self, conn: Any, head: str, rows: Iterable[tuple[str, ...]], limit: int, tail: str = "") -> Iterator[Any]:
        """``head (…),(…) tail`` statements of the rows, each under ``limit``; no value reaches
        the SQL text without the driver's own escaping (which knows the session's charset and
        ``NO_BACKSLASH_ESCAPES``)."""
        literal = self.row_literal(conn)
        start, end, comma = self.sql(head), self.sql(tail), self.sql(",")
        parts: list[Any] = []
        size = 0
        cut = min(limit, self.first_statement or limit)
        for row in rows:
            value = literal(row)
            if parts and size + len(value) > cut:
                yield start + comma.join(parts) + end
                parts, size = [], 0
                cut = min(limit, 2 * cut)
            parts.append(value)
            size += len(value) + 1
        if parts:
            yield start + comma.join(parts) + end


class _MysqlClient(_Driver):
    """mysqlclient (``MySQLdb``), the C extension over libmariadb/libmysqlclient; statements in bytes."""

    name, module_name, package, extra = "mysqlclient", "MySQLdb", "mysqlclient", "mysql-c"
    # small first, so the server starts early and the next, larger, statement is built while it
    # works; doubling keeps the statements of a large batch few
    first_statement = 64 * 1024

    def connect_args(self, base: dict[str, Any], tls: dict[str, str]) -> dict[str, Any]:
        args = dict(base)
        if args["host"] == "localhost":
            # the C library takes "localhost" for its Unix socket (ignoring the port); PyMySQL,
            # and so saline until now, for TCP to this machine
            args["host"] = "127.0.0.1"
        if tls:
            args["ssl"] = tls
            # MariaDB's Connector/C refuses a server without TLS only when it verifies the
            # server's certificate, which needs a CA; without one, _open checks the session
            args["ssl_mode"] = "VERIFY_IDENTITY" if "ca" in tls else "REQUIRED"
        else:
            args["ssl_mode"] = "DISABLED"
        args["multi_statements"] = False  # one statement per call, as with PyMySQL
        return args

    def row_literal(self, conn: Any) -> Callable[[tuple[str, ...]], Any]:
        # string_literal is the C library's mysql_real_escape_string, quoted: half the time of
        # conn.literal(row), which dispatches on each value's type in Python
        quote, encoding = conn.string_literal, conn.encoding
        return lambda row: b"(" + b",".join([quote(v.encode(encoding)) for v in row]) + b")"

    def sql(self, text: str) -> Any:
        return text.encode()

    def execute_all(self, cur: Any, statements: Iterator[Any]) -> None:
        # The next statement is built while the server runs the one sent: the server's work and
        # the escaping overlap instead of taking turns (the protocol allows one statement in flight)
        conn = cur.connection
        sent = False
        try:
            for statement in statements:
                if sent:
                    sent = False
                    conn.read_query_result()
                conn.send_query(statement)
                sent = True
        finally:
            if sent:  # also when building the next one failed: the connection stays usable
                conn.read_query_result()


class _PyMySQL(_Driver):
    """PyMySQL, pure Python; statements in text."""

    name, module_name, package, extra = "pymysql", "pymysql", "PyMySQL", "mysql"

    def connect_args(self, base: dict[str, Any], tls: dict[str, str]) -> dict[str, Any]:
        args = dict(base)
        if tls:
            args["ssl"] = tls
        else:
            args["ssl_disabled"] = True
        return args

    def row_literal(self, conn: Any) -> Callable[[tuple[str, ...]], Any]:
        escape = conn.escape  # per value: the connection's escaping (NO_BACKSLASH_ESCAPES aware)
        return lambda row: "(" + ",".join([escape(v) for v in row]) + ")"

    def statement_size(self, max_packet: int) -> int:
        # characters: up to 4 bytes each once encoded
        return max(4096, min(_STATEMENT_SIZE, (max_packet - 65536) // 4))


#: ``mysql.driver: auto`` takes the first of these that can be imported
DRIVERS: tuple[type[_Driver], ...] = (_MysqlClient, _PyMySQL)


def load_driver(choice: Any) -> _Driver:
    """The driver ``mysql.driver`` names (auto: mysqlclient when installed, else PyMySQL)."""
    wanted = str(choice or "auto").strip().lower()
    names = [d.name for d in DRIVERS]
    if wanted not in ("auto", *names):
        raise ConfigError(f"returner mysql: option 'driver' must be auto, {' or '.join(names)}, got {choice!r}")
    for driver in DRIVERS:
        if wanted not in ("auto", driver.name):
            continue
        try:
            return driver(importlib.import_module(driver.module_name))
        except ImportError as exc:
            if wanted == "auto":
                continue
            why = "is not installed" if isinstance(exc, ModuleNotFoundError) else f"cannot be loaded ({one_line(exc)})"
            raise ConfigError(f"returner mysql: mysql.driver is {driver.name}, but the Python package "
                              f"'{driver.package}' {why}: pip install 'saline[{driver.extra}]'") from None
    raise ConfigError("returner mysql needs the Python package 'mysqlclient' or 'PyMySQL': pip install 'saline[mysql]'")


class MysqlReturner(Returner):
    """Salt's ``mysql`` returner: job returns, loads and events in MySQL or MariaDB, Salt's tables.

    Tables (Salt's DDL; ``saline-run returners.init mysql`` creates them, and the database when
    it is missing; tables a user made from Salt's documentation work as they are)::

        jids(jid varchar(255) UNIQUE, load mediumtext)
        salt_returns(fun varchar(50), jid varchar(255), return mediumtext, id varchar(255),
                     success varchar(10), full_ret mediumtext,
                     alter_time TIMESTAMP DEFAULT CURRENT_TIMESTAMP; KEY id, KEY jid, KEY fun)
        salt_events(id BIGINT AUTO_INCREMENT PRIMARY KEY, tag varchar(255), data mediumtext,
                    alter_time TIMESTAMP DEFAULT CURRENT_TIMESTAMP, master_id varchar(255); KEY tag)

    Values, as Salt writes them: ``salt_returns.return`` is the JSON of the return value
    (``true`` for ``test.ping``), ``full_ret`` the JSON of the whole return load (``id``,
    ``jid``, ``fun``, ``fun_args``, ``return``, ``retcode``, ``success``, ``_stamp`` …),
    ``success`` the text ``1`` or ``0``; ``jids.load`` the JSON of the job's load (a jid already
    there keeps its first load); ``salt_events.data`` the JSON of the event data and
    ``master_id`` the master's id. JSON is Salt's (``ensure_ascii=False``, default spacing);
    bytes are stored as text and values JSON has no form for (sets, objects) as lists or their
    ``repr``, so an odd return never fails a batch.

    Differences from Salt: ``returners.init`` creates the tables with ``utf8mb4`` (Salt's DDL
    says ``utf8``, MariaDB's 3-byte charset, which cannot hold emoji); on tables created with
    ``utf8``, characters beyond the BMP are written as JSON escapes (``\\ud83d\\ude00``) in the
    JSON columns, which read back as the same text, and replaced by U+FFFD in ``id``/``fun``/
    ``tag``. ``fun`` is cut to its 50 characters and ``id``/``tag`` to 255 rather than failing the
    batch (``full_ret`` keeps the whole). A return delivered twice (a retried batch) is stored
    once: before inserting, a batch that may have been sent before (a retry, or what a killed
    delivery process had taken) looks up the rows it would duplicate (same ``jid``, ``id`` and
    ``fun``) through the ``jid`` index in the same transaction; a batch sent for the first time
    skips the lookup (``returns_first``), a fifth of the server's work a row. ``salt_returns``
    has no unique key in Salt's DDL, so two masters delivering the very same return at the very
    same moment could still both insert it. ``clean_old_jobs`` deletes a ``jids`` row only when
    every return of the job is older than ``keep_jobs_seconds`` (a job without returns: when its
    jid is); with ``archive_jobs`` the rows are first copied into ``jids_archive``,
    ``salt_returns_archive`` and ``salt_events_archive``.

    The driver: mysqlclient (the C extension; ``pip install 'saline[mysql-c]'``, which builds
    against ``libmariadb-dev`` and ``pkg-config``) when it is installed, else PyMySQL
    (``saline[mysql]``), as Salt prefers ``MySQLdb`` too; ``mysql.driver`` forces one. Both write
    the same rows, take the same options and fail with the same one-line messages; mysqlclient
    spends less CPU per row (docs/performance.md). ``localhost`` means TCP to this machine with
    either (the C library alone would take its Unix socket and ignore the port).

    One connection per returner, opened on first use, kept, and opened again (once, at once)
    when the server went away; a batch is one transaction: the duplicate check (if any), then
    multi-row ``INSERT … VALUES (…),(…)`` statements of up to 1 MB, every value escaped by the
    driver. With mysqlclient the first statement of a batch is small (64 kB) and each next one
    twice the last: the driver builds the next statement while the server stores the last one.
    With ``ssl_ca``/``ssl_cert``/``ssl_key`` set, TLS is required (a server without TLS
    is an error, not a silent plain-text connection; with mysqlclient and no ``ssl_ca`` it is
    found right after the handshake, before anything is written); with ``ssl_ca`` the server's
    certificate and host name are verified. With none set, TLS is not used.

    Example query::

        SELECT id, `return`, alter_time FROM salt_returns
        WHERE fun = 'test.ping' AND success = '0' ORDER BY alter_time DESC LIMIT 20;
    """

    name = "mysql"
    extra = "mysql"
    summary = "Salt's mysql returner: returns, loads and events in MySQL/MariaDB (Salt's tables)"
    options = (
        Option("host", str, "salt", doc="server host name or address"),
        Option("user", str, "salt", doc="user name"),
        Option("pass", str, "salt", secret=True, doc="password"),
        Option("db", str, "salt", doc="database holding Salt's tables"),
        Option("port", int, 3306, doc="server port"),
        Option("ssl_ca", str, None, doc="CA certificate file; setting any ssl_* option requires TLS"),
        Option("ssl_cert", str, None, doc="client certificate file"),
        Option("ssl_key", str, None, doc="client private key file"),
        Option("create_schema", bool, False, doc="create the database and tables, when missing, on first connect (saline)"),
        Option("connect_timeout", int, 5, doc="seconds to wait when connecting (saline)"),
        Option("driver", str, "auto", doc="auto (mysqlclient when installed, else PyMySQL), mysqlclient or pymysql (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self._driver = load_driver(self.opts.get("driver"))
        self._conn: Any = None
        self._pid = 0
        self._lock = threading.RLock()
        self._secrets = secret_values(type(self), self.opts)
        self._narrow = False  # tables in 3-byte utf8: escape characters beyond the BMP
        self._max_packet = 16 * 1024 * 1024
        self._where = f"{self.opts.get('host')}:{self.opts.get('port')}"

    # -- connection -----------------------------------------------------------------------------
    @property
    def driver(self) -> str:
        """The driver in use: ``mysqlclient`` or ``pymysql``."""
        return self._driver.name

    def ssl_options(self) -> dict[str, str]:
        """The ``ssl=`` dict given to the driver (Salt's): ``ca``, ``cert``, ``key`` when set."""
        pairs = (("ca", "ssl_ca"), ("cert", "ssl_cert"), ("key", "ssl_key"))
        return {key: str(self.opts[opt]) for key, opt in pairs if self.opts.get(opt)}

    def connect_args(self, database: bool = True) -> dict[str, Any]:
        """The keyword arguments of the driver's ``connect``."""
        args: dict[str, Any] = {
            "host": self.opts.get("host") or "salt",
            "port": int(self.opts.get("port") or 3306),
            "user": self.opts.get("user") or "",
            "password": self.opts.get("pass") or "",
            "charset": "utf8mb4",
            "autocommit": False,
            "connect_timeout": int(self.opts.get("connect_timeout") or 5),
        }
        if database:
            args["database"] = self.opts.get("db") or "salt"
        return self._driver.connect_args(args, self.ssl_options())

    def _open(self, database: bool = True) -> Any:
        tls = self.ssl_options()
        try:
            if tls:
                # the files are read here for both drivers, so a missing or malformed one is the
                # same one line whichever reads them next (PyMySQL through ssl, the C library)
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                if tls.get("ca"):
                    context.load_verify_locations(cafile=tls["ca"])
                if tls.get("cert"):
                    context.load_cert_chain(tls["cert"], tls.get("key"))
            conn = self._driver.module.connect(**self.connect_args(database))
        except self._driver.error as exc:
            raise self._error(exc, connecting=True) from None
        except (OSError, ssl.SSLError, ValueError) as exc:
            # reading ssl_ca/ssl_cert/ssl_key failed, or a socket error outside the driver's net
            if tls and not isinstance(exc, (ConnectionError, TimeoutError)):
                raise ReturnerError(self._line(f"cannot set up TLS from ssl_ca/ssl_cert/ssl_key: {one_line(exc)}")) from None
            raise BackendUnavailable(self._line(f"cannot connect to {self._where}: {one_line(exc)}")) from None
        if tls:
            try:
                with conn.cursor() as cur:
                    cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                    row = cur.fetchone()
            except self._driver.error as exc:
                self._close(conn)
                raise self._error(exc) from None
            if not row or not row[1]:
                self._close(conn)
                raise ReturnerError(self._line(f"TLS failed with {self._where}: SSL is required, but the server "
                                               f"does not support it (mysql.ssl_ca/ssl_cert/ssl_key)"))
        log.debug("returner mysql: connected to %s with %s", self._where, self._driver.name)
        return conn

    def _close(self, conn: Any) -> None:
        try:
            conn.close()
        except (self._driver.error, OSError):  # already broken: nothing more to release
            pass

    def _connection(self) -> Any:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self._conn = None  # a connection inherited through fork() belongs to the parent
        try:
            conn = self._open()
        except ReturnerError as exc:
            if getattr(exc, "code", 0) != _BAD_DB or not self.opts.get("create_schema"):
                raise
            self._create_database()
            conn = self._open()
        try:
            with conn.cursor() as cur:
                # the batches' statements are cut to fit it, measured once per connection
                cur.execute("SELECT @@max_allowed_packet")
                self._max_packet = int(cur.fetchone()[0])
                if self.opts.get("create_schema"):
                    for ddl in DDL.values():
                        cur.execute(ddl)
                self._probe_charset(cur)
            conn.commit()
        except self._driver.error as exc:
            self._close(conn)
            raise self._error(exc) from None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _probe_charset(self, cur: Any) -> None:
        cur.execute("SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                    "AND TABLE_NAME IN ('jids', 'salt_returns', 'salt_events') "
                    "AND CHARACTER_SET_NAME IS NOT NULL AND CHARACTER_SET_NAME <> 'utf8mb4'")
        self._narrow = bool(cur.fetchone()[0])

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            self._close(conn)

    def _run(self, work: Callable[[Any], T]) -> T:
        """Run ``work(cursor)`` in one transaction; reconnect and retry once if the server went away."""
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    with conn.cursor() as cur:
                        result = work(cur)
                    conn.commit()
                    return result
                except self._driver.error as exc:
                    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
                    if code in _DISCONNECTED or isinstance(exc, self._driver.interface_error):
                        self._drop()
                        if attempt == 1:
                            continue
                    else:
                        try:
                            conn.rollback()
                        except self._driver.error:
                            self._drop()
                    raise self._error(exc) from None
                except BaseException:
                    try:  # e.g. a return too large to send: leave no transaction open
                        conn.rollback()
                    except self._driver.error:
                        self._drop()
                    raise
            raise AssertionError("unreachable")  # the loop returns or raises

    # -- errors ---------------------------------------------------------------------------------
    def _line(self, text: str) -> str:
        return scrub(f"returner mysql: {one_line(text)}", self._secrets)

    def _error(self, exc: BaseException, connecting: bool = False) -> ReturnerError:
        error = self._describe(exc, connecting)
        error.code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0  # type: ignore[attr-defined]
        return error

    def _describe(self, exc: BaseException, connecting: bool) -> ReturnerError:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        text = one_line(exc.args[1] if len(exc.args) > 1 else exc)
        db = self.opts.get("db") or "salt"
        if code == _ACCESS_DENIED:
            found = re.search(r"for user ('[^']*'@'[^']*')", text)
            who = found.group(1) if found else repr(self.opts.get("user"))
            return ReturnerError(self._line(f"access denied for user {who} (check mysql.user and mysql.pass)"))
        if code == _BAD_DB:
            return ReturnerError(self._line(f"database '{db}' does not exist on {self._where} "
                                            f"(run: saline-run returners.init mysql)"))
        if code == _NO_TABLE:
            found = re.search(r"Table '([^']+)' doesn't exist", text)
            table = found.group(1) if found else "?"
            return ReturnerError(self._line(f"table {table} does not exist (run: saline-run returners.init mysql)"))
        if code in (_DB_ACCESS_DENIED, _TABLE_DENIED):
            return ReturnerError(self._line(f"{text[:1].lower()}{text[1:]} (grant SELECT, INSERT, DELETE on `{db}`)"))
        if code == _BAD_FIELD:
            return ReturnerError(self._line(f"a table does not have Salt's columns: {text} "
                                            f"(see docs/returners/mysql.md)"))
        if code == _SSL_ERROR:
            return ReturnerError(self._line(f"TLS failed with {self._where}: {text} (mysql.ssl_ca/ssl_cert/ssl_key)"))
        if code in _TRANSIENT or isinstance(exc, self._driver.interface_error):
            detail = text or "connection lost"
            if connecting or code in (2002, 2003, 2005):
                return BackendUnavailable(self._line(f"cannot connect to {self._where} ({self._reason(detail)})"))
            return BackendUnavailable(self._line(f"{detail} ({self._where})"))
        return ReturnerError(self._line(f"{text} (error {code})" if code else text))

    def _reason(self, detail: str) -> str:
        """Why connecting failed, from the driver's message: PyMySQL's "Can't connect to MySQL
        server on 'h' ([Errno 111] Connection refused)", or the C library's "Can't connect to
        server on 'h' (115)" and "…, system error: 110", which give an errno only."""
        found = re.search(r"\((?:\[Errno -?\d+\] )?([^()]*)\)\s*$", detail)
        if not found:
            return re.sub(r"system error: (\d+)", lambda m: f"system error: {os.strerror(int(m.group(1))).lower()}", detail)
        reason = found.group(1).strip()
        if re.fullmatch(r"-?\d+", reason):
            # after a connect with a timeout the C library reports the errno of the connect
            # call (115, in progress), not the refusal: ask the network directly
            reason = self._tcp_reason() or ("unknown host" if reason.startswith("-") else os.strerror(int(reason)))
        return reason.lower()

    def _tcp_reason(self) -> str | None:
        """Why a plain TCP connection to the server fails now; None when it does not."""
        args = self.connect_args(database=False)
        try:
            socket.create_connection((args["host"], args["port"]), timeout=min(args["connect_timeout"], 3)).close()
        except OSError as exc:
            return exc.strerror or one_line(exc) or type(exc).__name__
        return None

    def _fits(self, *texts: str) -> bool:
        """Whether ``texts`` fit a column and a statement even at 4 bytes a character (the usual
        case, told without encoding them)."""
        return sum(map(len, texts)) * 4 < min(self._max_packet, _MEDIUMTEXT) - 65536

    def _check_size(self, what: str, *texts: str) -> None:
        if self._fits(*texts):
            return
        sizes = [len(t.encode("utf-8", errors="replace")) for t in texts]
        if max(sizes) > _MEDIUMTEXT:
            raise ReturnerError(self._line(f"{what} is {max(sizes)} bytes of JSON, more than a mediumtext "
                                           f"column holds ({_MEDIUMTEXT})"))
        if sum(sizes) + 65536 > self._max_packet:
            raise ReturnerError(self._line(f"{what} needs {sum(sizes)} bytes, more than the server's "
                                           f"max_allowed_packet ({self._max_packet}): raise it"))

    # -- write side -----------------------------------------------------------------------------
    def _return_rows(self, rets: Iterable[dict[str, Any]]) -> Iterator[tuple[str, ...]]:
        """The rows of ``rets``, made as they are asked for (while the server stores the last ones)."""
        for ret in rets:
            full, value = _json.dumps_ret(ret)
            if not self._fits(full, value):  # the message is made only for what may not fit
                self._check_size(f"the return of {ret.get('id')} for job {ret.get('jid')}", full, value)
            fun, jid, minion = _json.text(ret.get("fun")), _json.text(ret.get("jid")), _json.text(ret.get("id"))
            if self._narrow:
                full, value = _escape_astral(full), _escape_astral(value)
                fun, jid, minion = (_ASTRAL.sub("\ufffd", t) for t in (fun, jid, minion))
            yield (fun[:_WIDTHS["fun"]], jid, value, minion[:_WIDTHS["id"]], "1" if ret.get("success") else "0", full)

    def _insert(self, cur: Any, head: str, rows: Iterable[tuple[str, ...]], tail: str = "") -> None:
        """The rows as multi-row INSERT statements, cut to stay far below max_allowed_packet."""
        limit = self._driver.statement_size(self._max_packet)
        self._driver.execute_all(cur, self._driver.statements(cur.connection, head, rows, limit, tail))

    def returns(self, rets: list[dict[str, Any]], check: bool = True) -> None:
        """``check``: first look up the rows of the batch already stored (it may have been sent
        before) and leave them out; copies inside the batch are left out either way."""
        rets = prepare_returns(self, rets)
        if not rets:
            return

        def work(cur: Any) -> None:
            rows: Iterable[tuple[str, ...]] = self._return_rows(rets)  # after connecting: the charset is known
            seen: set[tuple[Any, ...]] = set()
            if check:
                rows = list(rows)
                jids, ids = sorted({r[1] for r in rows}), sorted({r[3] for r in rows})
                cur.execute("SELECT `jid`, `id`, `fun` FROM `salt_returns` WHERE `jid` IN ({}) AND `id` IN ({})".format(
                    ", ".join(["%s"] * len(jids)), ", ".join(["%s"] * len(ids))), [*jids, *ids])
                seen = {tuple(r) for r in cur.fetchall()}
            self._insert(cur, _INSERT_RETURN, _unseen(rows, seen))

        self._run(work)

    def returns_first(self, rets: list[dict[str, Any]]) -> None:
        self.returns(rets, check=False)

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        if not loads:
            return

        def work(cur: Any) -> None:
            rows = []
            for jid, load, _ in loads:
                text = _json.dumps(load)
                self._check_size(f"the load of job {jid}", text)
                rows.append((_json.text(jid), _escape_astral(text) if self._narrow else text))
            self._insert(cur, _INSERT_LOAD, rows, _INSERT_LOAD_TAIL)

        self._run(work)

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        master = _json.text(self.master_id)[:_WIDTHS["master_id"]]

        def work(cur: Any) -> None:
            rows = []
            for event in events:
                tag, data = _json.text(event.get("tag")), _json.dumps(event.get("data"))
                self._check_size(f"the data of event {tag}", data)
                if self._narrow:
                    tag, data = _ASTRAL.sub("\ufffd", tag), _escape_astral(data)
                rows.append((tag[:_WIDTHS["tag"]], data, master))
            self._insert(cur, _INSERT_EVENT, rows)

        self._run(work)

    # -- read side ------------------------------------------------------------------------------
    def _fetch(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        def work(cur: Any) -> list[tuple[Any, ...]]:
            cur.execute(sql, args)
            return list(cur.fetchall())

        return self._run(work)

    def get_load(self, jid: str) -> dict[str, Any]:
        rows = self._fetch("SELECT `load` FROM `jids` WHERE `jid` = %s", (jid,))
        load = _json.loads(rows[0][0], {}) if rows else {}
        return load if isinstance(load, dict) else {}

    def get_jid(self, jid: str) -> dict[str, Any]:
        rows = self._fetch("SELECT `id`, `full_ret` FROM `salt_returns` WHERE `jid` = %s", (jid,))
        return {minion: _json.loads(full) for minion, full in rows}

    def get_fun(self, fun: str) -> dict[str, Any]:
        """For each minion, the whole return of its newest job that ran ``fun``."""
        return {minion: _json.loads(full) for minion, full in self._fetch(_GET_FUN, (fun, fun))}

    def get_jids(self) -> dict[str, Any]:
        return jids_listing(self._fetch("SELECT DISTINCT `jid`, `load` FROM `jids`"))

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        where = "WHERE `load` NOT LIKE %s" if filter_find_job else ""
        args = (FIND_JOB_LIKE, int(count)) if filter_find_job else (int(count),)
        return jids_filter_listing(self._fetch(_GET_JIDS_FILTER.format(where=where), args))

    def get_minions(self) -> list[str]:
        return sorted(r[0] for r in self._fetch("SELECT DISTINCT `id` FROM `salt_returns`"))

    # -- housekeeping ---------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        """Delete (or archive, then delete) what is older than ``keep_jobs_seconds``."""
        keep = self.keep_jobs_seconds
        if keep <= 0:
            return
        archive = bool(self.master_opts.get("archive_jobs"))
        old_jid = cutoff_jid(keep)
        # a job goes when none of its returns is recent, and it has old returns or an old jid
        old_jobs = ("NOT EXISTS (SELECT 1 FROM `salt_returns` r WHERE r.`jid` = `jids`.`jid` AND r.`alter_time` >= @cutoff) "
                    "AND (`jids`.`jid` < %s OR EXISTS (SELECT 1 FROM `salt_returns` r WHERE r.`jid` = `jids`.`jid`))")

        def work(cur: Any) -> None:
            if archive:
                # CREATE TABLE commits implicitly: done before the transaction's first write
                for table in TABLES:
                    cur.execute(f"CREATE TABLE IF NOT EXISTS `{table}_archive` LIKE `{table}`")
            cur.execute("SET @cutoff = NOW() - INTERVAL %s SECOND", (int(keep),))
            if archive:
                cur.execute(f"INSERT IGNORE INTO `jids_archive` SELECT * FROM `jids` WHERE {old_jobs}", (old_jid,))
                cur.execute("INSERT INTO `salt_returns_archive` SELECT * FROM `salt_returns` WHERE `alter_time` < @cutoff")
                cur.execute("INSERT IGNORE INTO `salt_events_archive` SELECT * FROM `salt_events` WHERE `alter_time` < @cutoff")
            cur.execute(f"DELETE FROM `jids` WHERE {old_jobs}", (old_jid,))
            cur.execute("DELETE FROM `salt_returns` WHERE `alter_time` < @cutoff")
            cur.execute("DELETE FROM `salt_events` WHERE `alter_time` < @cutoff")

        self._run(work)

    def _create_database(self) -> None:
        conn = self._open(database=False)
        try:
            with conn.cursor() as cur:
                db = str(self.opts.get("db") or "salt").replace("`", "``")
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{db}` DEFAULT CHARACTER SET utf8mb4")
        except self._driver.error as exc:
            raise self._error(exc) from None
        finally:
            self._close(conn)

    def init_schema(self) -> None:
        """Create the database (when missing and the user may) and Salt's three tables."""
        with self._lock:
            try:
                self._connection()
            except ReturnerError as exc:
                if getattr(exc, "code", 0) != _BAD_DB:
                    raise
                self._create_database()

            def work(cur: Any) -> None:
                for ddl in DDL.values():
                    cur.execute(ddl)
                self._probe_charset(cur)

            self._run(work)

    def check(self) -> None:
        """The server answers and Salt's three tables are there."""
        self._fetch("SELECT (SELECT 1 FROM `jids` LIMIT 0), (SELECT 1 FROM `salt_returns` LIMIT 0), "
                    "(SELECT 1 FROM `salt_events` LIMIT 0)")

    def close(self) -> None:
        with self._lock:
            self._drop()
