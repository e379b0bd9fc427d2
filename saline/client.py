"""Talking to a running master from Python: publish a job and collect its returns, run a runner.

This is what the ``saline`` and ``saline-run`` commands use, and what tests and scripts can use
(Salt's ``LocalClient`` and ``RunnerClient`` in one small class).
"""

from __future__ import annotations

from typing import Any, Iterator

from saline.transport.local import Client, MasterUnreachable


class JobError(Exception):
    """The master refused the request; one line naming the cause."""


class LocalClient:
    def __init__(self, sock_dir: str) -> None:
        self.sock_dir = sock_dir

    def publish(self, tgt: Any, fun: str, arg: list[Any] | None = None, *, tgt_type: str = "glob",
                ret: str = "", timeout: float | None = None, **extra: Any) -> dict[str, Any]:
        """Publish without waiting: ``{"jid", "minions", "missing", "not_connected"}`` (``missing``:
        ids the target names that are not accepted minions; ``not_connected``: expected minions
        with no connection to the master, which the job cannot reach)."""
        with Client(self.sock_dir, timeout=30) as conn:
            reply = conn.request(self._request(tgt, fun, arg, tgt_type, ret, timeout, extra, wait=False))
        return self._published(reply)

    def cmd_iter(self, tgt: Any, fun: str, arg: list[Any] | None = None, *, tgt_type: str = "glob",
                 ret: str = "", timeout: float | None = None, **extra: Any) -> Iterator[dict[str, Any]]:
        """Publish and yield, in order: ``{"cmd": "published", ...}``, each ``{"cmd": "return", "id",
        "data"}``, then ``{"cmd": "done"|"timeout", "missing": [...]}``."""
        conn = Client(self.sock_dir, timeout=None)
        try:
            conn.send(self._request(tgt, fun, arg, tgt_type, ret, timeout, extra, wait=True))
            first = conn.recv()
            yield {"cmd": "published", **self._published(first)}
            for message in conn.stream():
                yield message
                if message["cmd"] in ("done", "timeout"):
                    return
        finally:
            conn.close()

    def cmd(self, tgt: Any, fun: str, arg: list[Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Publish, wait, and return ``{minion: return}`` (Salt's ``LocalClient.cmd``)."""
        out: dict[str, Any] = {}
        for message in self.cmd_iter(tgt, fun, arg, **kwargs):
            if message["cmd"] == "return":
                out[message["id"]] = message["data"].get("return")
        return out

    def runner(self, fun: str, arg: list[Any] | None = None, kwarg: dict[str, Any] | None = None) -> Any:
        with Client(self.sock_dir, timeout=None) as conn:
            reply = conn.request({"cmd": "runner", "fun": fun, "arg": list(arg or []), "kwarg": dict(kwarg or {})})
        if reply["cmd"] == "error":
            raise JobError(reply.get("message", "runner failed"))
        return reply.get("data")

    def expected(self, tgt: Any, tgt_type: str = "glob") -> list[str]:
        with Client(self.sock_dir, timeout=30) as conn:
            reply = conn.request({"cmd": "expected", "tgt": tgt, "tgt_type": tgt_type})
        if reply["cmd"] == "error":
            raise JobError(reply.get("message", "failed"))
        return list(reply.get("data") or [])

    def events(self, prefix: str = "") -> Iterator[dict[str, Any]]:
        conn = Client(self.sock_dir, timeout=None)
        try:
            conn.send({"cmd": "events", "prefix": prefix})
            for message in conn.stream():
                if message["cmd"] == "event":
                    yield {"tag": message["tag"], "data": message["data"]}
        finally:
            conn.close()

    @staticmethod
    def _request(tgt: Any, fun: str, arg: list[Any] | None, tgt_type: str, ret: str, timeout: float | None,
                 extra: dict[str, Any], wait: bool) -> dict[str, Any]:
        request = {"cmd": "publish", "tgt": tgt, "fun": fun, "arg": list(arg or []), "tgt_type": tgt_type,
                   "ret": ret, "timeout": timeout, "wait": wait}
        request.update({k: v for k, v in extra.items() if v is not None})
        return request

    @staticmethod
    def _published(reply: dict[str, Any]) -> dict[str, Any]:
        if reply.get("cmd") == "error":
            raise JobError(reply.get("message", "publish failed"))
        if reply.get("cmd") != "published":
            raise JobError(f"unexpected answer from the master: {reply.get('cmd')}")
        return {"jid": reply["jid"], "minions": list(reply.get("minions") or []),
                "missing": list(reply.get("missing") or []), "not_connected": list(reply.get("not_connected") or [])}


__all__ = ["LocalClient", "JobError", "MasterUnreachable"]
