"""``saline-swarm N``: N minions in one process, on the real transport, for load tests.

Each minion has its own id (``<prefix><number>``), CURVE key pair and grains; they share one
ZeroMQ context, one job thread pool and one spool file. With ``--accept-into MASTER_PKI_DIR``
their keys are written straight into the master's accepted folder (the master must be on this
machine), so a swarm of thousands needs no ``saline-key`` round.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import signal
import sys
from pathlib import Path
from typing import Any

from saline.cli.common import Parser, add_config_args, fail, load_opts, raise_open_files, setup_logging


def build(opts: dict[str, Any], count: int, prefix: str, root: Path, accept_into: str | None) -> list[Any]:
    import zmq.asyncio

    from saline.minion.daemon import Minion, master_public_key
    from saline.minion.spool import Spool
    from saline.modules.grains import core_grains
    from saline.modules.loader import load_functions
    from saline.transport.keys import ACCEPTED, KeyStore, ensure_keypair

    ctx = zmq.asyncio.Context()
    ctx.max_sockets = max(4 * count + 64, 1024)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(64, 4 + count), thread_name_prefix="job")
    spool = Spool(root / "spool.db")
    base_grains = core_grains(opts)
    functions = load_functions(opts)
    master_key = master_public_key(opts)
    store = KeyStore(accept_into) if accept_into else None
    minions = []
    for n in range(count):
        mid = f"{prefix}{n:05d}"
        pki = root / mid
        public, _ = ensure_keypair(pki, "minion")
        (pki / "minion_master.pub").write_text(master_key)
        if store is not None and store.accepted_key(mid) != public:
            store.add(ACCEPTED, mid, public, refresh=False)
        minion_opts = {**opts, "id": mid, "pki_dir": str(pki)}
        grains = {**base_grains, "id": mid, "swarm_index": n}
        minions.append(Minion(minion_opts, ctx=ctx, spool=spool, grains=grains, functions=functions, pool=pool))
    if store is not None:
        store.refresh(force=True)
    return minions


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="saline-swarm", description="Run N minions in one process (load tests and benchmarks).")
    add_config_args(parser)
    parser.add_argument("count", type=int, help="how many minions")
    parser.add_argument("--prefix", default="swarm-", help="their ids are PREFIX00000, PREFIX00001, ... (default swarm-)")
    parser.add_argument("--root", default=None, help="folder for the swarm's keys and spool (default: cachedir/swarm)")
    parser.add_argument("--accept-into", default=None, help="the master's pki_dir: accept the swarm's keys there")
    args = parser.parse_args(argv)
    if args.count < 1:
        fail("the swarm needs at least one minion")
    opts = load_opts("minion", args)
    setup_logging(opts, args.log_level, args.log_file)
    wanted = 8 * args.count + 256  # per minion: two TCP sockets, their mailboxes and a monitor pair
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
