"""Throughput of one HBONE stream over loopback TCP, with or without mutual TLS.

    python -m mesh.hbone._bench [--mb 500] [--chunk 262144] [--rounds 3] [--download]
                                [--split] [--tls bulk|trio]

Each round opens a connection and moves `--mb` MB through one CONNECT stream: from the
client to the server (which answers with the count it saw), or with `--download` from
the server to the client. The time covers delivery of the last byte. By default both
ends share this process (one core: the worst case for Python); `--split` puts the server
in a child process, as two ztunnels on two cores would be. `--tls` adds mutual TLS 1.3
with throwaway certificates, over `TlsStream` (bulk) or trio's `SSLStream` (trio).

That throwaway mTLS (`self_signed`, `hbone_context`) is public: the TLS unit tests use it too.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

import trio

from .client import open_hbone_connection
from .headers import ConnectRequest, hbone_headers
from .server import Respond, serve_hbone
from .stream import HboneStream
from .tlsstream import TlsStream

DOWNLOAD = "x-bench-download"  # "<total bytes>/<chunk bytes>" asks the server to send


async def _bench_handler(request: ConnectRequest, respond: Respond, stream: HboneStream) -> None:
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


def self_signed(directory: pathlib.Path, name: str) -> tuple[str, str]:
    """Throwaway mTLS material for one side, made as istiod makes it: a fresh self-signed root and a
    leaf it signs for spiffe://cluster.local/ns/ns1/sa/NAME. Returns the (chain, key) PEM paths; the
    chain file (leaf, then root) is also what the peer trusts."""
    from mesh.identity.ca import RootCA, make_csr
    from mesh.identity.spiffe import Identity

    identity = Identity.parse(f"spiffe://cluster.local/ns/ns1/sa/{name}")
    key_pem, csr_pem = make_csr(identity)
    chain = RootCA.generate().sign_csr(csr_pem, [identity])
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_text("".join(chain))
    key_path.write_text(key_pem)
    return str(cert_path), str(key_path)


def hbone_context(side: str, own: tuple[str, str], trusted: str) -> ssl.SSLContext:
    """ztunnel-like: TLS 1.3 only, ALPN h2, certificates required both ways, no hostname check.

    `side` is "client" or "server"; `own` the (cert, key) paths; `trusted` the peer's cert path.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if side == "server" else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2"])
    context.load_cert_chain(*own)
    context.load_verify_locations(trusted)
    context.check_hostname = False  # HBONE checks SPIFFE URI SANs, not names
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _write_certificates(directory: pathlib.Path) -> None:
    """A certificate chain per side, each trusting the other's."""
    for side in ("client", "server"):
        self_signed(directory, side)


def _wrap(transport: trio.SocketStream, args: argparse.Namespace, *, server_side: bool) -> trio.abc.Stream:
    """`transport` as is, or inside mutual TLS 1.3 with ALPN h2 as ztunnel sets it up."""
    if not args.tls:
        return transport
    own, peer = ("server", "client") if server_side else ("client", "server")
    context = hbone_context(own, (f"{args.certs}/{own}.pem", f"{args.certs}/{own}.key"), f"{args.certs}/{peer}.pem")
    if args.tls == "bulk":
        return TlsStream(transport, context, server_side=server_side)
    return trio.SSLStream(transport, context, server_side=server_side)


async def _serve(listener: trio.SocketListener, args: argparse.Namespace) -> None:
    async with listener:
        for _ in range(args.rounds):
            await serve_hbone(_wrap(await listener.accept(), args, server_side=True), _bench_handler)


async def _round(port: int, total: int, args: argparse.Namespace) -> float:
    chunk_size, download = args.chunk, args.download
    headers = hbone_headers(source="127.0.0.1:1")
    if download:
        headers.append((DOWNLOAD, f"{total}/{chunk_size}"))
    transport = _wrap(await trio.open_tcp_stream("127.0.0.1", port), args, server_side=False)
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
        await _serve(listener, args)
        return
    total = args.mb * 1_000_000 // args.chunk * args.chunk
    rates = []
    async with trio.open_nursery() as nursery:
        if args.split:
            await listener.aclose()
            command = [sys.executable, "-m", "mesh.hbone._bench", "--serve", "--rounds", str(args.rounds)]
            if args.tls:
                command += ["--tls", args.tls, "--certs", args.certs]
            child = await nursery.start(functools.partial(trio.run_process, command, stdout=subprocess.PIPE))
            line = b""
            while not line.endswith(b"\n"):
                line += await child.stdout.receive_some()
            port = int(line)
        else:
            nursery.start_soon(_serve, listener, args)
        for _ in range(args.rounds):
            rates.append(total / await _round(port, total, args) / 1e6)
    direction = "server → client" if args.download else "client → server"
    where = "server in a child process" if args.split else "client and server in one process"
    tls = {None: "no TLS", "bulk": "mTLS 1.3 over TlsStream", "trio": "mTLS 1.3 over trio.SSLStream"}[args.tls]
    print(
        f"{statistics.median(rates):.0f} MB/s median, {max(rates):.0f} best "
        f"({', '.join(f'{r:.0f}' for r in rates)}): {total / 1e6:.0f} MB {direction} through one HBONE stream, "
        f"{where}, loopback TCP, {tls}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="megabytes per round (default 500)")
    parser.add_argument("--chunk", type=int, default=256 * 1024, help="bytes per send_all (default 256 KiB)")
    parser.add_argument("--rounds", type=int, default=3, help="connections to time (default 3)")
    parser.add_argument("--download", action="store_true", help="send from the server to the client")
    parser.add_argument("--split", action="store_true", help="run the server in a child process")
    parser.add_argument("--tls", choices=("bulk", "trio"), help="add mutual TLS over TlsStream or trio.SSLStream")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--certs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tls and not args.certs:
        with tempfile.TemporaryDirectory() as directory:
            _write_certificates(pathlib.Path(directory))
            args.certs = directory
            trio.run(_main, args)
    else:
        trio.run(_main, args)


if __name__ == "__main__":
    main()
