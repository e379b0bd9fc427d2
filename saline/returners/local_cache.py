"""Salt's default job cache, ``local_cache``: Salt's on-disk layout under ``<cachedir>/jobs``."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import quote, unquote

import msgpack

from saline.jid import format_jid_instance, format_jid_instance_ext
from saline.returners._json import decode, text
from saline.returners._sql import one_line, prepare_returns
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError

log = logging.getLogger(__name__)

LOAD_P = ".load.p"
MINIONS_P = ".minions.p"
RETURN_P = "return.p"
OUT_P = "out.p"
ENDTIME = "endtime"
NOCACHE = "nocache"
_DATETIME_EXT = 78  # Salt's msgpack ExtType for datetimes


def _encode_default(obj: Any) -> Any:
    """What Salt's payload serialiser does with what msgpack has no form for."""
    if isinstance(obj, int):  # beyond 64 bits
        return str(obj)
    if isinstance(obj, (dt.datetime, dt.date)):
        return msgpack.ExtType(_DATETIME_EXT, obj.strftime("%Y%m%dT%H:%M:%S.%f").encode())
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    return repr(obj)


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _DATETIME_EXT:
        return dt.datetime.strptime(data.decode(), "%Y%m%dT%H:%M:%S.%f")
    return msgpack.ExtType(code, data)


def _no_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {_no_surrogates(k): _no_surrogates(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_surrogates(v) for v in value]
    return value


def packb(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True, default=_encode_default)
    except (ValueError, TypeError, RecursionError):  # a reference cycle, or a key msgpack refuses
        return msgpack.packb(_no_surrogates(decode(obj)), use_bin_type=True, default=_encode_default)
    except UnicodeEncodeError:  # a lone surrogate, which UTF-8 cannot hold: U+FFFD instead
        return msgpack.packb(_no_surrogates(obj), use_bin_type=True, default=_encode_default)


def unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook)


def minion_dir_name(minion: str) -> str:
    """The folder of a minion's return. Ids Salt accepts are used as they are; an id that could
    leave the job folder or clash with its files (``/``, a leading dot, NUL) is percent-encoded,
    and so is every id containing ``%``, so the name maps back to exactly one id."""
    if not minion:
        return "%"
    if "/" in minion or "\x00" in minion or "%" in minion or minion.startswith("."):
        name = quote(minion, safe="")
        return "%2E" + name[1:] if name.startswith(".") else name
    return minion


def minion_from_dir(name: str) -> str:
    if name == "%":
        return ""
    return unquote(name) if "%" in name else name


class LocalCacheReturner(Returner):
    """Salt's default job cache: one folder per job under ``<cachedir>/jobs``, msgpack files.

    The layout is Salt's, byte for byte, so Salt's tools and habits keep working. For a job
    ``jid`` with ``h`` the hex ``hash_type`` digest (sha256) of the jid, in
    ``<cachedir>/jobs/<h[:2]>/<h[2:]>/``:

    - ``jid``: the jid as text; its modification time is the job's age for ``clean_old_jobs``;
    - ``.load.p``: the job's publish load (the first one saved wins);
    - ``.minions.p`` (``.minions.<syndic>.p``): the minions the job expects; ``get_load`` adds
      them, merged and sorted, as ``"Minions"``;
    - ``<minion>/return.p``: ``{"return", "retcode", "success"}`` (those the return had);
    - ``<minion>/out.p``: the outputter name, when the return names one;
    - ``endtime``: ``update_endtime``'s text; ``nocache``: returns for the job are discarded.

    Every file is msgpack (``use_bin_type=True``: bytes stay bytes, datetimes are ExtType 78)
    and written atomically (a temporary file in the same folder, then a rename). A second return
    from the same minion for the same job is ignored, so a retried batch never changes what is
    stored. ``clean_old_jobs`` removes jobs whose ``jid`` file is older than
    ``keep_jobs_seconds`` (``0`` keeps everything). saline adds ``get_fun`` and
    ``get_minions`` (by walking the tree). A minion id that is not a safe folder name (``/``, a
    leading dot) is percent-encoded; Salt refuses such ids anyway.

    Example (where a job's returns are)::

        python3 -c 'import hashlib,sys; h=hashlib.sha256(sys.argv[1].encode()).hexdigest(); print(h[:2]+"/"+h[2:])' \\
          20240105123456123456
        ls /var/cache/saline/master/jobs/<that path>/
    """

    name = "local_cache"
    summary = "Salt's default job cache: msgpack files under <cachedir>/jobs, Salt's exact layout"
    options = (
        Option("cachedir", str, None, doc="the folder holding `jobs/`; default: the master's `cachedir`"),
        Option("hash_type", str, None, doc="digest naming job folders; default: the master's `hash_type`, else sha256"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        cachedir = self.opts.get("cachedir") or self.master_opts.get("cachedir") or "."
        self.job_dir = Path(cachedir) / "jobs"
        self.hash_type = str(self.opts.get("hash_type") or self.master_opts.get("hash_type") or "sha256")
        if self.hash_type not in hashlib.algorithms_available:
            raise ReturnerError(f"returner local_cache: unknown hash_type '{self.hash_type}'")

    # -- paths and files ------------------------------------------------------------------------
    def jid_dir(self, jid: str) -> Path:
        digest = hashlib.new(self.hash_type, str(jid).encode()).hexdigest()
        return self.job_dir / digest[:2] / digest[2:]

    def _fail(self, exc: OSError, path: Path | str) -> ReturnerError:
        reason = exc.strerror or one_line(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                         errno.ENOENT, errno.EIO, errno.ESTALE):
            return BackendUnavailable(f"returner local_cache: cannot write {path}: {reason}")
        return ReturnerError(f"returner local_cache: {path}: {reason}")

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically: readers see the old file or the whole new one."""
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    @staticmethod
    def _read(path: Path) -> Any:
        with open(path, "rb") as fh:
            return unpackb(fh.read())

    def _ensure_job(self, jid: str) -> Path:
        """The job's folder, made with its ``jid`` file when new (Salt's ``prep_jid``)."""
        path = self.jid_dir(jid)
        jid_file = path / "jid"
        if not jid_file.exists():
            path.mkdir(parents=True, exist_ok=True)
            jid_file.write_bytes(str(jid).encode())
        return path

    # -- write side -----------------------------------------------------------------------------
    def prep_jid(self, nocache: bool = False, passed_jid: str | None = None) -> str:
        jid = super().prep_jid(nocache, passed_jid)
        try:
            path = self._ensure_job(jid)
            if nocache:
                (path / NOCACHE).touch()
        except OSError as exc:
            raise self._fail(exc, self.jid_dir(jid)) from None
        return jid

    def returns(self, rets: list[dict[str, Any]]) -> None:
        rets = prepare_returns(self, rets)
        jobs: dict[str, Path | None] = {}
        path: Path = self.job_dir
        try:
            for ret in rets:
                jid = str(ret.get("jid"))
                if jid not in jobs:
                    path = self._ensure_job(jid)
                    jobs[jid] = None if (path / NOCACHE).exists() else path
                job = jobs[jid]
                if job is None:
                    continue
                path = job / minion_dir_name(str(ret.get("id")))
                if (path / RETURN_P).exists():
                    log.debug("local_cache: return of %s for job %s already stored, ignored", ret.get("id"), jid)
                    continue
                path.mkdir(exist_ok=True)
                if "out" in ret:
                    self._write(path / OUT_P, packb(ret["out"]))
                # return.p last: its presence means the minion's return is complete
                self._write(path / RETURN_P, packb({k: ret[k] for k in ("return", "retcode", "success") if k in ret}))
        except OSError as exc:
            raise self._fail(exc, path) from None

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        path: Path = self.job_dir
        try:
            for jid, load, minions in loads:
                path = self._ensure_job(str(jid))
                if not (path / LOAD_P).exists():
                    self._write(path / LOAD_P, packb(load))
                if minions is None and isinstance(load.get("minions"), list):
                    minions = load["minions"]
                if minions is not None:
                    self._save_minions(path, minions, None)
        except OSError as exc:
            raise self._fail(exc, path) from None

    def save_minions(self, jid: str, minions: list[str], syndic_id: str | None = None) -> None:
        try:
            self._save_minions(self._ensure_job(jid), minions, syndic_id)
        except OSError as exc:
            raise self._fail(exc, self.jid_dir(jid)) from None

    def _save_minions(self, path: Path, minions: list[str], syndic_id: str | None) -> None:
        target = path / (f".minions.{syndic_id}.p" if syndic_id else MINIONS_P)
        known: list[str] = []
        if target.exists():
            try:
                known = list(self._read(target) or [])
            except (ValueError, msgpack.UnpackException):
                known = []
        merged = known + [m for m in minions if m not in set(known)]
        if merged != known or not target.exists():
            self._write(target, packb(merged))

    def update_endtime(self, jid: str, time_: str) -> None:
        """Record when a job ended (``job_cache_store_endtime``)."""
        try:
            (self._ensure_job(jid) / ENDTIME).write_text(str(time_))
        except OSError as exc:
            raise self._fail(exc, self.jid_dir(jid)) from None

    def get_endtime(self, jid: str) -> str | bool:
        path = self.jid_dir(jid) / ENDTIME
        try:
            return path.read_text().strip("\n")
        except FileNotFoundError:
            return False

    # -- read side ------------------------------------------------------------------------------
    def get_load(self, jid: str) -> dict[str, Any]:
        path = self.jid_dir(jid)
        load_p = path / LOAD_P
        if not load_p.is_file():
            return {}
        load = self._read_retrying(load_p)
        if not isinstance(load, dict):
            return {}
        everyone: set[str] = set()
        for minions_p in path.glob(".minions*.p"):
            try:
                everyone.update(self._read(minions_p) or [])
            except (OSError, ValueError, msgpack.UnpackException):
                continue
        if everyone:
            load["Minions"] = sorted(everyone)
        return load

    def _read_retrying(self, path: Path) -> Any:
        # Salt retries: a reader on another host (NFS) may see a file mid-copy.
        for attempt in range(5):
            try:
                return self._read(path)
            except (ValueError, msgpack.UnpackException):
                if attempt == 4:
                    raise ReturnerError(f"returner local_cache: {path} is not readable msgpack") from None
                time.sleep(0.25)
        return None

    def get_jid(self, jid: str) -> dict[str, Any]:
        path = self.jid_dir(jid)
        out: dict[str, Any] = {}
        try:
            entries = list(os.scandir(path))
        except FileNotFoundError:
            return {}
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            ret_p = Path(entry.path) / RETURN_P
            try:
                data = self._read(ret_p)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except (ValueError, msgpack.UnpackException):
                log.warning("local_cache: %s is not readable msgpack, skipped", ret_p)
                continue
            item = data if isinstance(data, dict) else {"return": data}
            out_p = Path(entry.path) / OUT_P
            if out_p.exists():
                try:
                    item["out"] = self._read(out_p)
                except (ValueError, msgpack.UnpackException):
                    pass
            out[minion_from_dir(entry.name)] = item
        return out

    def _walk(self) -> Iterator[tuple[str, dict[str, Any], Path]]:
        """``(jid, load, job folder)`` for every job that has a load."""
        try:
            tops = list(os.scandir(self.job_dir))
        except FileNotFoundError:
            return
        for top in tops:
            try:
                finals = list(os.scandir(top.path))
            except (NotADirectoryError, FileNotFoundError):
                continue
            for final in finals:
                load_p = Path(final.path) / LOAD_P
                try:
                    load = self._read(load_p)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except (ValueError, msgpack.UnpackException):
                    log.warning("local_cache: %s is not readable msgpack, skipped", load_p)
                    continue
                if not isinstance(load, dict) or not load:
                    continue
                jid = load.get("jid")
                if not jid:
                    try:
                        jid = (Path(final.path) / "jid").read_text().strip()
                    except OSError:
                        continue
                yield str(jid), load, Path(final.path)

    def get_jids(self) -> dict[str, Any]:
        out = {}
        with_end = bool(self.master_opts.get("job_cache_store_endtime"))
        for jid, load, _ in self._walk():
            out[jid] = format_jid_instance(jid, load)
            if with_end:
                end = self.get_endtime(jid)
                if end:
                    out[jid]["EndTime"] = end
        return out

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        jobs = []
        for jid, load, _ in self._walk():
            job = format_jid_instance_ext(jid, load)
            if filter_find_job and job["Function"] == "saltutil.find_job":
                continue
            jobs.append(job)
        jobs.sort(key=lambda job: job["JID"])
        return jobs[-count:] if count > 0 else []

    def get_fun(self, fun: str) -> dict[str, Any]:
        """For each minion, its return from the newest job that ran ``fun`` (walks every job)."""
        newest: dict[str, tuple[str, Path]] = {}
        for jid, load, path in self._walk():
            if load.get("fun") != fun:
                continue
            for entry in os.scandir(path):
                if entry.is_dir() and not entry.name.startswith(".") and (Path(entry.path) / RETURN_P).exists():
                    minion = minion_from_dir(entry.name)
                    if minion not in newest or newest[minion][0] < jid:
                        newest[minion] = (jid, Path(entry.path))
        out = {}
        for minion, (_, path) in newest.items():
            data = self._read(path / RETURN_P)
            out[minion] = data if isinstance(data, dict) else {"return": data}
        return out

    def get_minions(self) -> list[str]:
        """Every minion that has a return in the cache (walks every job)."""
        seen: set[str] = set()
        try:
            tops = list(os.scandir(self.job_dir))
        except FileNotFoundError:
            return []
        for top in tops:
            if not top.is_dir():
                continue
            for final in os.scandir(top.path):
                if not final.is_dir():
                    continue
                for entry in os.scandir(final.path):
                    if entry.is_dir() and not entry.name.startswith(".") and os.path.exists(os.path.join(entry.path, RETURN_P)):
                        seen.add(minion_from_dir(entry.name))
        return sorted(seen)

    # -- housekeeping ---------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        """Remove jobs whose ``jid`` file is older than ``keep_jobs_seconds``; also folders
        without a ``jid`` file (broken entries) once they are that old, and empty hash folders."""
        keep = self.keep_jobs_seconds
        if keep <= 0 or not self.job_dir.is_dir():
            return
        cutoff = time.time() - keep
        for top in os.scandir(self.job_dir):
            if not top.is_dir():
                continue
            for final in os.scandir(top.path):
                try:
                    stamp = os.stat(os.path.join(final.path, "jid")).st_mtime
                except FileNotFoundError:
                    stamp = final.stat().st_mtime
                except NotADirectoryError:
                    continue
                if stamp < cutoff:
                    shutil.rmtree(final.path, ignore_errors=True)
            try:
                os.rmdir(top.path)  # only succeeds when empty
            except OSError:
                pass

    def init_schema(self) -> None:
        try:
            self.job_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._fail(exc, self.job_dir) from None

    def check(self) -> None:
        """The jobs folder exists (or can be made) and is writable."""
        self.init_schema()
        if not os.access(self.job_dir, os.W_OK | os.X_OK):
            raise BackendUnavailable(f"returner local_cache: cannot write {self.job_dir}: permission denied")
