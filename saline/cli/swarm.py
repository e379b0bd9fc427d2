"""``saline-swarm N``: N minions in one process, on the real transport, for load tests.

Each minion has its own id (``<prefix><number>``), CURVE key pair and grains; they share one
ZeroMQ context, one job thread pool and one spool file. With ``--accept-into MASTER_PKI_DIR``
their keys are written straight into the master's accepted folder (the master must be on this
machine), so a swarm of thousands needs no ``saline-key`` round; give it once per master when
``master:`` lists several (each minion then connects to every master, or to one at a time with
``master_type: failover``, as ``saline-minion`` does). The master's public key is the configured
one, or fetched once for the whole swarm from the first master that serves it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import sys
from pathlib import Path
from typing import Any

from saline.cli.common import Parser, add_config_args, fail, load_opts, raise_open_files, setup_logging


def trusted_master_key(opts: dict[str, Any]) -> str:
    """The master key every minion of the swarm trusts: the configured one, or the one the first
    master serves (checked against ``master_finger``, kept in the swarm config's pki_dir)."""
    import asyncio
    import logging

    from saline.minion.daemon import MinionError
    from saline.minion.link import MasterListError, fetch_first_key, master_addresses
    from saline.minion.master_key import MasterKeyError, check_finger, configured_key, keep
    from saline.transport.bootstrap import BootstrapError
    from saline.transport.keys import fingerprint

    try:
        key, _source = configured_key(opts)
        if key is not None:
            return key
        key, address = asyncio.run(fetch_first_key(master_addresses(opts)))
        check_finger(opts, key, f"served on {address.host}:{address.pub_port}")
    except (MasterKeyError, MasterListError) as exc:
        raise MinionError(str(exc)) from None
    except BootstrapError as exc:
        raise MinionError(f"cannot fetch the master's public key: {exc}") from None
    path = keep(opts, key)
    logging.getLogger(__name__).warning("trusting the master's public key on first use: fingerprint %s, kept in %s",
                                        fingerprint(key), path)
    return key


def links_per_minion(opts: dict[str, Any]) -> int:
    """How many masters each minion connects to at once."""
    master = opts.get("master")
    count = len(master) if isinstance(master, list) else 1
    return 1 if opts.get("master_type") == "failover" else max(1, count)


def build(opts: dict[str, Any], count: int, prefix: str, root: Path, accept_into: list[str] | None) -> list[Any]:
    import zmq.asyncio

    from saline.minion.daemon import Minion
    from saline.minion.spool import Spool
    from saline.modules.grains import core_grains
    from saline.modules.loader import load_functions
    from saline.transport.keys import ACCEPTED, KeyStore, ensure_keypair

    master_key = trusted_master_key(opts)
    ctx = zmq.asyncio.Context()
    ctx.max_sockets = max(4 * count * links_per_minion(opts) + 64, 1024)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(64, 4 + count), thread_name_prefix="job")
    spool = Spool(root / "spool.db")
    base_grains = core_grains(opts)
    functions = load_functions(opts)
    stores = [KeyStore(folder) for folder in accept_into or []]
    minions = []
    for n in range(count):
        mid = f"{prefix}{n:05d}"
        pki = root / mid
        public, _ = ensure_keypair(pki, "minion")
        (pki / "minion_master.pub").write_text(master_key)
        for store in stores:
            if store.accepted_key(mid) != public:
                store.add(ACCEPTED, mid, public, refresh=False)
        minion_opts = {**opts, "id": mid, "pki_dir": str(pki)}
        grains = {**base_grains, "id": mid, "swarm_index": n}
        minions.append(Minion(minion_opts, ctx=ctx, spool=spool, grains=grains, functions=functions, pool=pool))
    for store in stores:
        store.refresh(force=True)
    return minions


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="saline-swarm", description="Run N minions in one process (load tests and benchmarks).")
    add_config_args(parser)
    parser.add_argument("count", type=int, help="how many minions")
    parser.add_argument("--prefix", default="swarm-", help="their ids are PREFIX00000, PREFIX00001, ... (default swarm-)")
    parser.add_argument("--root", default=None, help="folder for the swarm's keys and spool (default: cachedir/swarm)")
    parser.add_argument("--accept-into", action="append", default=None, metavar="MASTER_PKI_DIR",
                        help="a master's pki_dir: accept the swarm's keys there (once per master)")
    args = parser.parse_args(argv)
    if args.count < 1:
        fail("the swarm needs at least one minion")
    opts = load_opts("minion", args)
    setup_logging(opts, args.log_level, args.log_file)
    # per minion and master: two TCP sockets, their mailboxes and a monitor pair
    wanted = 8 * args.count * links_per_minion(opts) + 256
    if raise_open_files(wanted) < wanted:
        print(f"WARNING: the open-files limit is below {wanted}: some of the {args.count} minions may not connect",
              file=sys.stderr)
    root = Path(args.root or Path(opts["cachedir"]) / "swarm")
    root.mkdir(parents=True, exist_ok=True)

    from saline.minion.daemon import MinionError

    try:
        minions = build(opts, args.count, args.prefix, root, args.accept_into)
    except MinionError as exc:
        fail(str(exc))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks = [asyncio.create_task(m.run()) for m in minions]
        print(f"swarm of {len(minions)} minions running", file=sys.stderr, flush=True)
        await stop.wait()
        for m in minions:
            m.request_stop()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())


if __name__ == "__main__":
    main()
