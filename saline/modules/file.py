"""The ``file`` module: read, write, hash, inspect and find files on the minion (Salt's ``file.*``).

Paths must be absolute (``~`` is expanded), as Salt requires. ``find`` takes the options of
Salt's ``file.find`` (GNU find's tests in ``key=value`` form) and walks the tree itself.
"""

from __future__ import annotations

import fnmatch
import grp
import os
import pwd
import re
import stat
import time
from typing import Any, Callable

from saline.modules.errors import CommandExecutionError

_TYPES = {"b": stat.S_ISBLK, "c": stat.S_ISCHR, "d": stat.S_ISDIR, "p": stat.S_ISFIFO,
          "f": stat.S_ISREG, "l": stat.S_ISLNK, "s": stat.S_ISSOCK}
_TYPE_NAMES = {"b": "block", "c": "char", "d": "dir", "p": "pipe", "f": "file", "l": "link", "s": "socket"}
_SIZE_UNITS = {"b": 512, "c": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4, "w": 2}
_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PRINT_FIELDS = ("path", "name", "size", "type", "user", "group", "mode", "mtime", "md5")


def _path(path: Any) -> str:
    text = os.path.expanduser(str(path)) if path not in (None, "") else ""
    if not text:
        raise CommandExecutionError("a path is required")
    if not os.path.isabs(text):
        raise CommandExecutionError(f"Path must be absolute: {path}")
    return text


def file_exists(path: Any) -> bool:
    """Return True when ``path`` is an existing regular file (not a folder).

    CLI Example::

        saline '*' file.file_exists /etc/passwd
    """
    return os.path.isfile(_path(path))


def _type_name(mode: int) -> str:
    for letter, test in _TYPES.items():
        if test(mode):
            return _TYPE_NAMES[letter]
    return "unknown"


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _digest(path: str, form: str, chunk_size: int = 65536) -> str:
    import hashlib  # here, not at the top: it loads OpenSSL, which an idle minion does without

    try:
        hasher = hashlib.new(form)
    except (ValueError, TypeError):
        raise CommandExecutionError(f"Invalid hash type {form!r} (e.g. md5, sha1, sha256, sha512)") from None
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(chunk_size):
                hasher.update(chunk)
    except FileNotFoundError:
        raise CommandExecutionError(f"File not found: {path}") from None
    except IsADirectoryError:
        raise CommandExecutionError(f"Not a file: {path}") from None
    except OSError as exc:
        raise CommandExecutionError(f"Cannot read {path}: {exc.strerror}") from None
    return hasher.hexdigest()


def stats(path: Any, hash_type: Any = None, follow_symlinks: bool = True) -> dict[str, Any]:
    """Return the stats of a file or folder: inode, uid, gid, user, group, atime, mtime, ctime,
    size, mode (octal text), type (file, dir, link, ...), target (the real path), and ``sum``
    when ``hash_type`` is given.

    CLI Example::

        saline '*' file.stats /etc/passwd
        saline '*' file.stats /etc/passwd hash_type=sha256
    """
    name = _path(path)
    try:
        st = os.stat(name) if follow_symlinks else os.lstat(name)
    except FileNotFoundError:
        raise CommandExecutionError(f"Path not found: {name}") from None
    except OSError as exc:
        raise CommandExecutionError(f"Cannot stat {name}: {exc.strerror}") from None
    ret = {"inode": st.st_ino, "uid": st.st_uid, "gid": st.st_gid, "group": _group(st.st_gid),
           "user": _owner(st.st_uid), "atime": st.st_atime, "mtime": st.st_mtime, "ctime": st.st_ctime,
           "size": st.st_size, "mode": f"0{stat.S_IMODE(st.st_mode):o}", "type": _type_name(st.st_mode),
           "target": os.path.realpath(name)}
    if hash_type not in (None, ""):
        ret["sum"] = _digest(name, str(hash_type))
    return ret


def read(path: Any, binary: bool = False) -> str | bytes:
    """Return the contents of a file as text (or bytes with ``binary=True``).

    CLI Example::

        saline '*' file.read /etc/hostname
    """
    name = _path(path)
    try:
        with open(name, "rb" if binary else "r", **({} if binary else {"encoding": "utf-8", "errors": "replace"})) as fh:
            return fh.read()
    except FileNotFoundError:
        raise CommandExecutionError(f"File not found: {name}") from None
    except IsADirectoryError:
        raise CommandExecutionError(f"Not a file: {name}") from None
    except OSError as exc:
        raise CommandExecutionError(f"Cannot read {name}: {exc.strerror}") from None


def write(path: Any, *args: Any, **kwargs: Any) -> str:
    """Write each argument as one line to a file, replacing what it held.

    Also takes ``args=[...]`` (Salt's keyword form).

    CLI Example::

        saline '*' file.write /etc/motd "With all thine offerings thou shalt offer salt."
    """
    name = _path(path)
    lines = list(args)
    extra = kwargs.get("args")
    if extra is not None:
        lines.extend(extra if isinstance(extra, list) else [extra])
    unknown = sorted(k for k in kwargs if k != "args" and not k.startswith("__"))
    if unknown:
        raise CommandExecutionError(f"Invalid keyword arguments for file.write: {', '.join(unknown)}")
    text = "".join(f"{line}\n" for line in lines)
    try:
        with open(name, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise CommandExecutionError(f"Cannot write {name}: {exc.strerror}") from None
    return f'Wrote {len(lines)} lines to "{name}"'


def get_hash(path: Any, form: str = "sha256", chunk_size: Any = 65536) -> str:
    """Return the hash of a file (``form``: md5, sha1, sha224, sha256, sha384, sha512, ...).

    CLI Example::

        saline '*' file.get_hash /etc/shadow
        saline '*' file.get_hash /etc/shadow form=md5
    """
    try:
        size = int(chunk_size)
        if size <= 0:
            raise ValueError
    except (TypeError, ValueError):
        raise CommandExecutionError(f"chunk_size must be a positive number, got {chunk_size!r}") from None
    return _digest(_path(path), str(form), size)


# -- find ------------------------------------------------------------------------------------------

def _size_test(spec: str) -> Callable[[os.stat_result], bool]:
    match = re.fullmatch(r"([+-]?)(\d+)([bckmgtw]?)", spec.strip())
    if not match:
        raise CommandExecutionError(f"Invalid size {spec!r} (e.g. +10m, -1k, 100)")
    sign, number, unit = match.groups()
    bound = int(number) * _SIZE_UNITS[unit or "b"]
    if sign == "+":
        return lambda st: st.st_size > bound
    if sign == "-":
        return lambda st: st.st_size < bound
    unit_size = _SIZE_UNITS[unit or "b"]
    return lambda st: -(-st.st_size // unit_size) == int(number)  # GNU find rounds up to units


def _mtime_test(spec: str) -> Callable[[os.stat_result], bool]:
    match = re.fullmatch(r"([+-]?)(\d+)([smhdw]?)", spec.strip())
    if not match:
        raise CommandExecutionError(f"Invalid mtime {spec!r} (e.g. +7d, -1h, 30m)")
    sign, number, unit = match.groups()
    seconds = int(number) * _TIME_UNITS[unit or "d"]
    now = time.time()
    if sign == "+":
        return lambda st: now - st.st_mtime > seconds
    if sign == "-":
        return lambda st: now - st.st_mtime < seconds
    step = _TIME_UNITS[unit or "d"]
    return lambda st: int((now - st.st_mtime) // step) == int(number)


def _id_test(value: str, lookup: Callable[[str], int], attr: str) -> Callable[[os.stat_result], bool]:
    wanted: set[int] = set()
    for part in str(value).split(","):
        part = part.strip()
        try:
            wanted.add(int(part) if part.isdigit() else lookup(part))
        except KeyError:
            raise CommandExecutionError(f"Unknown {'user' if attr == 'st_uid' else 'group'}: {part!r}") from None
    return lambda st: getattr(st, attr) in wanted


def _tests(kwargs: dict[str, Any]) -> list[Callable[[str, str, os.stat_result], bool]]:
    tests: list[Callable[[str, str, os.stat_result], bool]] = []
    for key, value in kwargs.items():
        if key in ("maxdepth", "mindepth", "print", "grep"):
            continue
        text = str(value)
        if key == "name":
            tests.append(lambda path, base, st, pat=text: fnmatch.fnmatchcase(base, pat))
        elif key == "iname":
            tests.append(lambda path, base, st, pat=text.lower(): fnmatch.fnmatchcase(base.lower(), pat))
        elif key in ("regex", "iregex"):
            try:
                rx = re.compile(text, re.IGNORECASE if key == "iregex" else 0)
            except re.error as exc:
                raise CommandExecutionError(f"Invalid {key} {text!r}: {exc}") from None
            tests.append(lambda path, base, st, rx=rx: rx.search(path) is not None)
        elif key == "type":
            letters = text.replace(",", "")
            if not letters or any(c not in _TYPES for c in letters):
                raise CommandExecutionError(f"Invalid type {text!r} (letters of bcdpfls)")
            tests.append(lambda path, base, st, ls=letters: any(_TYPES[c](st.st_mode) for c in ls))
        elif key in ("owner", "user"):
            test = _id_test(text, lambda n: pwd.getpwnam(n).pw_uid, "st_uid")
            tests.append(lambda path, base, st, t=test: t(st))
        elif key == "group":
            test = _id_test(text, lambda n: grp.getgrnam(n).gr_gid, "st_gid")
            tests.append(lambda path, base, st, t=test: t(st))
        elif key == "size":
            test = _size_test(text)
            tests.append(lambda path, base, st, t=test: t(st))
        elif key == "mtime":
            test = _mtime_test(text)
            tests.append(lambda path, base, st, t=test: t(st))
        else:
            raise CommandExecutionError(f"Unknown option for file.find: {key!r} (name, iname, regex, iregex, type, "
                                        "owner, group, size, mtime, grep, maxdepth, mindepth, print)")
    return tests


def _depth(kwargs: dict[str, Any], key: str, default: int) -> int:
    if key not in kwargs:
        return default
    try:
        value = int(kwargs[key])
        if value < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise CommandExecutionError(f"{key} must be a number of levels, got {kwargs[key]!r}") from None
    return value


def _field(name: str, path: str, st: os.stat_result) -> Any:
    if name == "path":
        return path
    if name == "name":
        return os.path.basename(path)
    if name == "size":
        return st.st_size
    if name == "type":
        return next((letter for letter, test in _TYPES.items() if test(st.st_mode)), "?")
    if name == "user":
        return _owner(st.st_uid)
    if name == "group":
        return _group(st.st_gid)
    if name == "mode":
        return int(f"{stat.S_IMODE(st.st_mode):o}")
    if name == "mtime":
        return int(st.st_mtime)
    return _digest(path, "md5") if stat.S_ISREG(st.st_mode) else ""


def find(path: Any, **kwargs: Any) -> list[Any]:
    """Find files under ``path`` like GNU find, with Salt's ``key=value`` options.

    Tests: ``name``/``iname`` (globs), ``regex``/``iregex`` (on the whole path), ``type`` (letters
    of ``bcdpfls``), ``owner``/``user``, ``group``, ``size`` (``[+-]N[bckmgtw]``), ``mtime``
    (``[+-]N[smhdw]``), ``grep`` (a regex the file's content must match). ``maxdepth``,
    ``mindepth``. ``print`` chooses what each match shows: ``path`` (default), ``name``,
    ``size``, ``type``, ``user``, ``group``, ``mode``, ``mtime``, ``md5``, or several separated by
    commas (each match is then a list).

    CLI Example::

        saline '*' file.find / type=f name=\\*.bak size=+10m
        saline '*' file.find /var/log name=\\*.[0-9] mtime=+30d print=path,size
    """
    root = _path(path)
    options = {k: v for k, v in kwargs.items() if not k.startswith("__")}
    tests = _tests(options)
    maxdepth = _depth(options, "maxdepth", 1 << 30)
    mindepth = _depth(options, "mindepth", 0)
    fields = [f.strip() for f in str(options.get("print") or "path").split(",") if f.strip()]
    bad = [f for f in fields if f not in _PRINT_FIELDS]
    if bad:
        raise CommandExecutionError(f"Invalid print field(s) {', '.join(bad)} (one of {', '.join(_PRINT_FIELDS)})")
    grep = None
    if options.get("grep") not in (None, ""):
        try:
            grep = re.compile(str(options["grep"]).encode())
        except re.error as exc:
            raise CommandExecutionError(f"Invalid grep {options['grep']!r}: {exc}") from None
    if not os.path.lexists(root):
        raise CommandExecutionError(f"Path not found: {root}")
    found: list[Any] = []

    def visit(item: str, depth: int) -> None:
        try:
            st = os.lstat(item)
        except OSError:
            return
        if depth >= mindepth and all(t(item, os.path.basename(item) or item, st) for t in tests):
            if grep is None or (stat.S_ISREG(st.st_mode) and _contains(item, grep)):
                row = [_field(f, item, st) for f in fields]
                found.append(row[0] if len(row) == 1 else row)
        if stat.S_ISDIR(st.st_mode) and depth < maxdepth:
            try:
                children = sorted(os.listdir(item))
            except OSError:
                return
            for child in children:
                visit(os.path.join(item, child), depth + 1)

    visit(root, 0)
    return found


def _contains(path: str, pattern: re.Pattern[bytes]) -> bool:
    try:
        with open(path, "rb") as fh:
            return pattern.search(fh.read()) is not None
    except OSError:
        return False
