"""Throughput of one HBONE stream over loopback TCP, without TLS.

    python -m mesh.hbone._bench [--mb 500] [--chunk 262144] [--rounds 3] [--download] [--split]

Each round opens a connection and moves `--mb` MB through one CONNECT stream: from the
client to the server (which answers with the count it saw), or with `--download` from
the server to the client. The time covers delivery of the last byte. By default both
ends share this process (one core: the worst case for Python); `--split` puts the server
in a child process, as two ztunnels on two cores would be.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import time

import trio

from .client import open_hbone_connection
from .headers import hbone_headers
from .server import serve_hbone

DOWNLOAD = "x-bench-download"  # "<total bytes>/<chunk bytes>" asks the server to send


async def _bench_handler(request, respond, stream) -> None:
    await respond(200)
    if download := request.get(DOWNLOAD):
        total, chunk_size = map(int, download.split("/"))
        chunk = b"\x5a" * chunk_size
        for _ in range(total // chunk_size):
            await stream.send_all(chunk)
        await stream.send_eof()
        await stream.receive_some()  # the client's EOF
        return
    received = 0
    while data := await stream.receive_some():
        received += len(data)
    await stream.send_all(str(received).encode())
    await stream.send_eof()


async def _serve(listener: trio.SocketListener, rounds: int) -> None:
    async with listener:
        for _ in range(rounds):
            await serve_hbone(await listener.accept(), _bench_handler)


async def _round(port: int, total: int, chunk_size: int, download: bool) -> float:
    headers = hbone_headers(source="127.0.0.1:1")
    if download:
        headers.append((DOWNLOAD, f"{total}/{chunk_size}"))
    transport = await trio.open_tcp_stream("127.0.0.1", port)
    async with open_hbone_connection(transport) as conn:
        started = time.perf_counter()
        stream = await conn.open_stream("127.0.0.1:9", headers)
        if download:
            received = 0
            while data := await stream.receive_some():
                received += len(data)
            elapsed = time.perf_counter() - started
            await stream.send_eof()
        else:
            chunk = b"\xa5" * chunk_size
            for _ in range(total // chunk_size):
                await stream.send_all(chunk)
            await stream.send_eof()
            reply = b""
            while data := await stream.receive_some():
                reply += data
            elapsed = time.perf_counter() - started
            received = int(reply)
        await stream.aclose()
    if received != total:
        raise SystemExit(f"{received} bytes arrived, {total} were sent")
    return elapsed


async def _main(args: argparse.Namespace) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    if args.serve:
        print(port, flush=True)
        await _serve(listener, args.rounds)
        return
    total = args.mb * 1_000_000 // args.chunk * args.chunk
    rates = []
    async with trio.open_nursery() as nursery:
        if args.split:
            await listener.aclose()
            command = [sys.executable, "-m", "mesh.hbone._bench", "--serve", "--rounds", str(args.rounds)]
            child = await nursery.start(functools.partial(trio.run_process, command, stdout=subprocess.PIPE))
            line = b""
            while not line.endswith(b"\n"):
                line += await child.stdout.receive_some()
            port = int(line)
        else:
            nursery.start_soon(_serve, listener, args.rounds)
        for _ in range(args.rounds):
            rates.append(total / await _round(port, total, args.chunk, args.download) / 1e6)
    direction = "server → client" if args.download else "client → server"
    where = "server in a child process" if args.split else "client and server in one process"
    print(
        f"{statistics.median(rates):.0f} MB/s median, {max(rates):.0f} best "
        f"({', '.join(f'{r:.0f}' for r in rates)}): {total / 1e6:.0f} MB {direction} through one HBONE stream, "
        f"{where}, loopback TCP, no TLS"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="megabytes per round (default 500)")
    parser.add_argument("--chunk", type=int, default=256 * 1024, help="bytes per send_all (default 256 KiB)")
    parser.add_argument("--rounds", type=int, default=3, help="connections to time (default 3)")
    parser.add_argument("--download", action="store_true", help="send from the server to the client")
    parser.add_argument("--split", action="store_true", help="run the server in a child process")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    trio.run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
