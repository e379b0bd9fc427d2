"""Which saline the processes of a benchmark run: this working tree, or a commit of its own.

``bench/run.py --baseline COMMIT`` measures the same benchmarks with two codes back to back: the
commit, checked out into a temporary ``git worktree`` (the main working tree, its index and its
branch are never touched), and the current tree. Only the processes that make up saline change
sides (``saline-master`` and its delivery processes, minions, swarms, the CLI): the load
generator, the floors and the measuring code are always this tree's ``bench/``.

How a process is made to import a given tree: saline is installed in editable mode, through a
``__editable__`` finder that setuptools appends to ``sys.meta_path``, so any folder on
``sys.path`` that holds a ``saline`` package wins over it. A ``CodeTree``'s environment puts the
tree first on ``PYTHONPATH`` and sets ``PYTHONSAFEPATH`` (the working directory of ``python -m``
would otherwise come first, and it may be this checkout). Both go down to every child the master
starts (its delivery processes are ``python -m saline.master.returner_process``). In front of
the tree sits ``bench/codeshim/sitecustomize.py``, which checks in each process where saline came
from, refuses to run if it is not the tree, and records it; ``CodeTree.verify`` reads those
records after each run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SHIM = BENCH / "codeshim"


class CodeTreeError(Exception):
    """A commit that cannot be checked out, or a process that ran other code than it should."""


def _git(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise CodeTreeError(f"git {' '.join(args)}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return proc.stdout.strip()


@dataclass
class CodeTree:
    """A folder holding a ``saline`` package, and where its processes record themselves."""

    label: str  #: "baseline" or "current"
    commit: str  #: the full hash of the commit (for the working tree: of HEAD)
    root: Path  #: the folder that holds ``saline/``
    log: Path  #: the records of ``codeshim/sitecustomize.py``
    dirty: bool = False  #: the working tree, with uncommitted changes under saline/

    @property
    def package(self) -> Path:
        return self.root / "saline"

    @property
    def short(self) -> str:
        return self.commit[:7]

    def describe(self) -> str:
        if self.root == ROOT:
            return f"the working tree at {self.short}" + (" with uncommitted changes in saline/" if self.dirty else "")
        return f"commit {self.short}"

    def env(self) -> dict[str, str]:
        """What a process's environment needs to run this tree's saline (and be checked)."""
        path = [str(SHIM), str(self.root)]
        if os.environ.get("PYTHONPATH"):
            path.append(os.environ["PYTHONPATH"])
        return {"PYTHONPATH": os.pathsep.join(path), "PYTHONSAFEPATH": "1",
                "SALINE_BENCH_CODE": str(self.package), "SALINE_BENCH_CODE_LOG": str(self.log)}

    def reset(self) -> None:
        """Forget the processes recorded so far (before each run)."""
        self.log.unlink(missing_ok=True)

    def records(self) -> list[tuple[int, str, str]]:
        """(pid, the folder saline came from, command line) of each process started since ``reset``."""
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            pid, folder, argv = line.split("\t", 2)
            out.append((int(pid), folder, argv))
        return out

    def verify(self, need: tuple[str, ...] = ("saline.cli.master",)) -> dict[str, int]:
        """How many processes of each kind ran this tree's code since ``reset``; raises
        CodeTreeError if one ran other code (the guard already stops those) or if a kind in
        ``need`` never started under this tree (its processes were started some other way)."""
        want = os.path.realpath(self.package)
        kinds: Counter[str] = Counter()
        for pid, folder, argv in self.records():
            if folder != want:
                raise CodeTreeError(f"process {pid} ({argv}) ran saline from {folder}, not {want}")
            kinds[process_kind(argv)] += 1
        missing = [k for k in need if not kinds[k]]
        if missing:
            raise CodeTreeError(f"no {', '.join(missing)} process recorded itself under {self.describe()} "
                                f"(recorded: {dict(kinds) or 'none'})")
        return dict(sorted(kinds.items()))

    def summary(self, kinds: dict[str, int]) -> dict[str, Any]:
        return {"commit": self.commit, "short": self.short, "describe": self.describe(),
                "saline": str(self.package), "processes": kinds}


def process_kind(argv: str) -> str:
    """``saline.cli.master`` for ``python -m saline.cli.master -c ...``, ``saline`` for the
    console script ``.../bin/saline ...``."""
    words = argv.split()
    if "-m" in words[1:-1]:
        return words[words.index("-m") + 1]
    return Path(words[1]).name if len(words) > 1 else Path(words[0]).name


def current_tree(scratch: Path) -> CodeTree:
    """This working tree, as it is now (uncommitted changes included)."""
    dirty = bool(_git("status", "--porcelain", "--", "saline", check=False))
    return CodeTree("current", _git("rev-parse", "HEAD"), ROOT, scratch / "current-imports.log", dirty)


def resolve(commit: str) -> str:
    full = _git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}", check=False)
    if not full:
        raise CodeTreeError(f"{commit!r} is not a commit of {ROOT}")
    return full


@contextmanager
def commit_tree(commit: str, label: str = "baseline") -> Iterator[CodeTree]:
    """``commit`` checked out (detached) into a temporary git worktree, removed on exit."""
    full = resolve(commit)
    scratch = Path(tempfile.mkdtemp(prefix=f"saline-bench-{label}-"))
    path = scratch / "tree"
    try:
        _git("worktree", "add", "--detach", str(path), full)
        if not (path / "saline" / "__init__.py").exists():
            raise CodeTreeError(f"commit {full[:7]} has no saline/ package")
        # cached bytecode, as the installed tree has: the first master must not compile it all
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(path / "saline")], check=False,
                       stdout=subprocess.DEVNULL)
        yield CodeTree(label, full, path, scratch / "imports.log")
    finally:
        removed = not path.exists() or subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT,
                                                      capture_output=True).returncode == 0
        shutil.rmtree(scratch, ignore_errors=True)
        if not removed:
            _git("worktree", "prune", check=False)  # drops only the entries whose folder is gone
