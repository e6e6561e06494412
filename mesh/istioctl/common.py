"""What the istioctl verbs share: their error, the admin-port GET, the plain table.

ztunnel's and the proxies' admin ports listen on 127.0.0.1 inside a node's or pod's network
namespace (as in Istio, where istioctl reaches them through a port-forward), so `admin_get` enters
that namespace for one socket.
"""

from __future__ import annotations

import json
import socket

from lab.client import netns
from mesh.contract import ADMIN_PORT


class IstioctlError(Exception):
    pass


def admin_get(netns_name: str, path: str, what: str, port: int = ADMIN_PORT) -> dict:
    """GET PATH (JSON) from an admin port on 127.0.0.1 of network namespace NETNS_NAME; WHAT names
    the proxy in error messages."""
    try:
        sock = netns.socket_in(netns_name, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as e:
        raise IstioctlError(f"Error: cannot enter the network namespace of {what}: {e}") from None
    sock.settimeout(5)
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    except OSError as e:
        raise IstioctlError(f"Error: cannot reach the admin port of {what}: {e}") from None
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise IstioctlError(f"Error: {what} answered {head.splitlines()[0:1]}")
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    try:
        return json.loads(body)
    except ValueError as e:
        raise IstioctlError(f"Error: {what} sent a config dump that is not JSON: {e}") from None


def _dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2 :]
    return out


def table(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
