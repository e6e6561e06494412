"""Reference relays for `make bench`: what a bare userspace proxy pair costs on this machine.

`make bench` runs a pair of these in the ztunnels' places on the direct path (one in the client
pod, one in the server pod) and measures them in the same run as the ambient path. They do only
what any proxy pair must do: accept, connect, and copy bytes both ways with half-close. No TLS,
no HTTP/2, no policy, no logs. So they show how much of the ambient path's cost is the pair of
extra hops and their event loop, and how much is ztunnel's own work.

- `trio`: one task per direction with the very `splice` ztunnel uses: the floor of our design.
- `threads`: blocking sockets and a thread per direction: Python with no event loop.

    python -m bench.relay --mode trio|threads LISTEN_IP:PORT DEST_IP:PORT
"""

from __future__ import annotations

import argparse
import socket
import threading

import trio

from mesh.hbone.splice import splice


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _trio_relay(listen: tuple[str, int], dest: tuple[str, int]) -> None:
    async def handle(client: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream(*dest)
        except OSError:
            return
        try:
            await splice(client, upstream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            upstream.socket.close()
            client.socket.close()

    await trio.serve_tcp(handle, listen[1], host=listen[0])


class _Pair:
    """Two sockets relayed both ways; whichever direction ends last closes them."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.socks = (client, upstream)
        self._lock = threading.Lock()
        self._running = 2

    def pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(262144):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self._lock:
            self._running -= 1
            last = not self._running
        if last:
            for sock in self.socks:
                sock.close()


def _threads_relay(listen: tuple[str, int], dest: tuple[str, int]) -> None:
    server = socket.create_server(listen, backlog=128)
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection(dest)
        except OSError:
            client.close()
            continue
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(client, upstream)
        threading.Thread(target=pair.pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pair.pump, args=(upstream, client), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("trio", "threads"), required=True)
    parser.add_argument("listen", type=_address)
    parser.add_argument("dest", type=_address)
    args = parser.parse_args()
    if args.mode == "trio":
        trio.run(_trio_relay, args.listen, args.dest)
    else:
        _threads_relay(args.listen, args.dest)


if __name__ == "__main__":
    main()
