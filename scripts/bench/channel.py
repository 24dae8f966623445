"""Bulk throughput of the encrypted TCP channel against its own cipher work, in the same run.

* **channel** = a dialler and a listener in this process, connected over 127.0.0.1 by the
  Noise channel on the TCP frame transport (as owners and hosts are); the dialler sends TOTAL
  bytes as 1 MiB messages (the fragment chunk size) and the listener receives them all. One
  event loop does both ends, so this is the single-core cost of moving bytes through a channel.
* **baseline** = the AES-256-GCM work the channel cannot avoid on the same bytes: seal and open
  every 64 KiB frame into reused buffers, in a plain loop.

``ratio`` = channel MB/s over baseline MB/s: the share of time left to the AEAD once framing,
sockets and the event loop take theirs. Each figure is the best of ``--repeat`` rounds.

Usage: ``python scripts/bench/channel.py [--json] [--size-mib N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _report import emit
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chain.core.keys import KeyPair
from chain.net.channel import SecureChannel, StreamTransport
from chain.net.channel.noise import FRAME_PLAINTEXT, TAG_SIZE

CHAIN = b"BLKR"
MESSAGE = 1 << 20


async def channel_seconds(data: memoryview, repeat: int) -> float:
    accepted: asyncio.Future[SecureChannel] = asyncio.get_running_loop().create_future()

    async def accept(transport: StreamTransport) -> None:
        accepted.set_result(await SecureChannel.accept(transport, KeyPair.development(1), CHAIN))

    tasks = set()
    server = await StreamTransport.serve(lambda t: tasks.add(asyncio.ensure_future(accept(t))),
                                         "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await SecureChannel.initiate(await StreamTransport.connect("127.0.0.1", port),
                                          KeyPair.development(2), CHAIN)
    listener = await accepted

    async def send() -> None:
        for start in range(0, data.nbytes, MESSAGE):
            await client.send(data[start : start + MESSAGE])

    async def receive() -> None:
        got = 0
        while got < data.nbytes:
            got += len(await listener.recv())

    best = float("inf")
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            await asyncio.gather(send(), receive())
            best = min(best, time.perf_counter() - start)
    finally:
        await asyncio.gather(client.close(), listener.close())
        server.close()
        await server.wait_closed()
    return best


def aead_seconds(data: memoryview, repeat: int) -> float:
    aead = AESGCM(os.urandom(32))
    sealed = bytearray(FRAME_PLAINTEXT + TAG_SIZE)
    opened = bytearray(FRAME_PLAINTEXT)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for n, offset in enumerate(range(0, data.nbytes, FRAME_PLAINTEXT)):
            piece = data[offset : offset + FRAME_PLAINTEXT]
            nonce = n.to_bytes(12, "big")
            out = memoryview(sealed)[: piece.nbytes + TAG_SIZE]
            aead.encrypt_into(nonce, piece, None, out)
            aead.decrypt_into(nonce, out, None, memoryview(opened)[: piece.nbytes])
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--size-mib", type=int, default=112,
                        help="bytes sent (default 112: a 64 MiB put's five fragments)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (best is kept)")
    args = parser.parse_args()
    data = memoryview(os.urandom(args.size_mib << 20))
    repeat = max(1, args.repeat)
    t_channel = asyncio.run(channel_seconds(data, repeat))
    t_aead = aead_seconds(data, repeat)
    mb = data.nbytes / 1e6
    result = {
        "bench": "channel",
        "size_bytes": data.nbytes,
        "message_bytes": MESSAGE,
        "method": f"best of {repeat}; one process, one event loop, loopback TCP + Noise",
        "channel_seconds": round(t_channel, 4),
        "channel_mb_s": round(mb / t_channel, 1),
        "aead_seal_open_mb_s": round(mb / t_aead, 1),
        "ratio": round(t_aead / t_channel, 3),
        "cpus": os.cpu_count(),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
