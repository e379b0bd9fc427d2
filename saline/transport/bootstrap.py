"""Trust on first use: the master serves its public key, and nothing else, on a port of its own.

CURVE needs the server's public key before the handshake, so a minion that does not have it yet
cannot open its encrypted sockets. Salt's minions take the master's key on first contact; saline
does the same through this tiny service: a plain TCP listener (``master_pub_port``, 4507 by
default, ``serve_master_pub: False`` turns it off) that writes one line,
``SALINE-MASTER-PUB 1 <40 Z85 characters>``, and closes. It reads nothing from the peer, so there
is nothing to parse and nothing to exploit; what it sends is public.

What this does not protect against is an attacker who answers in the master's place the very
first time (the key is not authenticated): ``master_finger`` (Salt's option, the SHA-256
fingerprint ``saline-key -F master`` prints) closes that gap, and so does copying ``master.pub``
by hand or setting ``master_pub``. After the first contact the minion keeps the key and refuses a
master whose key changes.
"""

from __future__ import annotations

import asyncio
import re

MAGIC = b"SALINE-MASTER-PUB 1 "
_LINE = re.compile(rb"^SALINE-MASTER-PUB 1 ([0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40})\n$")


class BootstrapError(Exception):
    """The master's key could not be fetched; the message is one line."""


async def serve(host: str, port: int, public_key: str) -> asyncio.base_events.Server:
    """Start the listener; every connection gets the key line and is closed."""
    line = MAGIC + public_key.encode() + b"\n"

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(line)
            await asyncio.wait_for(writer.drain(), 5)
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host=host, port=port, reuse_address=True)


async def fetch(host: str, port: int, timeout: float = 5.0) -> str:
    """The master's public key as served on ``host:port``; BootstrapError with one line."""
    where = f"{host}:{port}"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except asyncio.TimeoutError:
        raise BootstrapError(f"no answer from {where} within {timeout:g} s") from None
    except OSError as exc:
        raise BootstrapError(f"cannot connect to {where}: {exc.strerror or exc}") from None
    try:
        data = await asyncio.wait_for(reader.read(128), timeout)
    except (asyncio.TimeoutError, OSError) as exc:
        raise BootstrapError(f"{where} did not send a key: {type(exc).__name__}") from None
    finally:
        writer.close()
    found = _LINE.match(data)
    if found is None:
        raise BootstrapError(f"{where} did not answer with a saline master key")
    return found.group(1).decode()
