"""The cluster DNS server (kube-dns/CoreDNS's role): `python -m lab.dns.server [--port 53]`.

A thin trio shell around `lab.dns.records.ClusterZone`: one task keeps the zone current from
the lab API's watch stream, one answers UDP, and a listener answers TCP (2-byte length
prefixed messages, RFC 1035 §4.2.2, several per connection).

Readiness is "TCP port accepts", so the sockets are bound only after the first SYNCED: a pod
that is Ready can answer every name. After a disconnect the watch reconnects with backoff
(10 ms doubling to 2 s) and fills a fresh zone from the new initial list; the old zone keeps
answering until the new one is synced, then is swapped out whole, so a half-listed zone is
never served and deletions missed while disconnected do not linger.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from contextlib import aclosing
from functools import partial

import trio
from dnslib import RCODE

from lab.client import AsyncLabClient, LabError
from lab.client.backoff import Backoff
from lab.client.contract import ENV_API_SOCKET
from lab.client.process import serve_main
from lab.client.protocol import ProtocolError
from lab.dns.records import KINDS, ClusterZone, error_reply

log = logging.getLogger("lab.dns")

TCP_IDLE_TIMEOUT = 10.0  # seconds a TCP client may stay silent (RFC 7766 suggests ~10 s)
MAX_MESSAGE = 65535


class TcpFramer:
    """Splits a TCP byte stream into DNS messages (sans-IO)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        messages = []
        while len(self._buf) >= 2:
            size = int.from_bytes(self._buf[:2], "big")
            if len(self._buf) < 2 + size:
                break
            messages.append(bytes(self._buf[2 : 2 + size]))
            del self._buf[: 2 + size]
        return messages


def frame(message: bytes) -> bytes:
    return len(message).to_bytes(2, "big") + message


class ZoneRef:
    """The zone being served; the watcher swaps in a new one after each (re)sync."""

    def __init__(self, zone: ClusterZone):
        self.zone = zone

    def respond(self, wire: bytes, *, udp: bool) -> bytes | None:
        """The zone's reply, or SERVFAIL if answering hit a bug: one query must not stop the server."""
        try:
            return self.zone.respond(wire, udp=udp)
        except Exception:
            log.exception("error answering a query")
            return error_reply(wire, RCODE.SERVFAIL)


async def keep_zone_current(
    client: AsyncLabClient, ref: ZoneRef, synced: trio.Event, backoff: Backoff | None = None
) -> None:
    """Follows the watch stream forever; sets `synced` after the first complete list.

    A failure that repeats the previous one is not logged again, so a lab API that is gone
    for long costs one line, not one per retry.
    """
    backoff = backoff or Backoff()
    last_reason = None
    while True:
        fresh = ClusterZone(ref.zone.domain, ref.zone.ttl)
        try:
            async with aclosing(client.watch(list(KINDS))) as events:
                async for event in events:
                    event_type = event.get("type")
                    if event_type == "SYNCED":
                        if ref.zone is not fresh:
                            ref.zone = fresh
                            counts = ", ".join(f"{n} {k}" for k, n in fresh.counts().items())
                            log.info(
                                "%s: %s (resourceVersion %s)",
                                "re-synced" if synced.is_set() else "synced",
                                counts,
                                event.get("resourceVersion"),
                            )
                            synced.set()
                            backoff.reset()
                            last_reason = None
                    else:
                        fresh.apply_event(event_type, event.get("object"))
            reason = "the lab API closed the watch"
        except (OSError, LabError, ProtocolError, trio.BrokenResourceError) as e:
            reason = f"watch failed: {e}"
        delay = backoff.next()
        if reason != last_reason:
            log.warning("%s; retrying (backoff up to %.0fs)", reason, backoff.maximum)
            last_reason = reason
        await trio.sleep(delay)


async def serve_udp(sock: trio.socket.SocketType, ref: ZoneRef) -> None:
    with sock:
        while True:
            try:
                wire, peer = await sock.recvfrom(MAX_MESSAGE)
                reply = ref.respond(wire, udp=True)
                if reply is not None:
                    await sock.sendto(reply, peer)
            except OSError as e:  # e.g. ICMP errors reported on the socket; keep serving
                log.warning("udp: %s", e)


async def serve_tcp_connection(stream: trio.SocketStream, ref: ZoneRef) -> None:
    """Answers the queries of one TCP connection until the client goes quiet or away."""
    framer = TcpFramer()
    try:
        while True:
            data = b""
            with trio.move_on_after(TCP_IDLE_TIMEOUT):
                data = await stream.receive_some(MAX_MESSAGE)
            if not data:  # EOF or idle timeout
                return
            for wire in framer.feed(data):
                reply = ref.respond(wire, udp=False)
                if reply is None:
                    return  # something that is not a query: hang up
                await stream.send_all(frame(reply))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return


async def _bind(host: str, port: int) -> tuple[trio.socket.SocketType, trio.SocketListener]:
    """UDP and TCP sockets on the same port; with port 0, retries until one port fits both."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(20):
        udp = trio.socket.socket(family, socket.SOCK_DGRAM)
        tcp = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            await udp.bind((host, port))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await tcp.bind((host, udp.getsockname()[1]))
            tcp.listen(128)
            return udp, trio.SocketListener(tcp)
        except OSError:
            udp.close()
            tcp.close()
            if port != 0:
                raise
    raise OSError(f"no free port on {host} for both UDP and TCP")


async def serve(
    api_socket: str,
    host: str = "0.0.0.0",
    port: int = 53,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Runs the DNS server until cancelled; reports the bound port once it can answer."""
    ref = ZoneRef(ClusterZone())
    synced = trio.Event()
    log.info("starting: watching %s at %s", ", ".join(KINDS), api_socket)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_zone_current, AsyncLabClient(api_socket), ref, synced)
        await synced.wait()
        udp, listener = await _bind(host, port)
        bound = udp.getsockname()[1]
        nursery.start_soon(serve_udp, udp, ref)
        await nursery.start(trio.serve_listeners, partial(serve_tcp_connection, ref=ref), [listener])
        log.info("serving DNS on %s:%d (udp, tcp)", host, bound)
        task_status.started(bound)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.dns.server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument(
        "--api-socket", default=os.environ.get(ENV_API_SOCKET), help=f"the lab API socket (default: ${ENV_API_SOCKET})"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s dns %(levelname)s %(message)s")
    if not args.api_socket:
        log.error("no lab API socket: set %s or pass --api-socket", ENV_API_SOCKET)
        return 2
    # Only binding can fail with an OSError; the watcher retries its errors.
    return serve_main(partial(serve, args.api_socket, args.host, args.port), log, f"{args.host}:{args.port}")


if __name__ == "__main__":
    sys.exit(main())
