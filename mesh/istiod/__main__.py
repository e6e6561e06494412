"""`python -m mesh.istiod`: istiod as a process. Reads the lab API socket from LAB_API_SOCKET and
the node accounts allowed to impersonate from CA_TRUSTED_NODE_ACCOUNTS (Istio's variable); exits
promptly on SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from functools import partial

from lab.client.contract import ENV_API_SOCKET
from lab.client.process import open_nursery_until_signalled, run_main
from mesh.identity.node_authz import TRUSTED_NODE_ACCOUNTS, parse_trusted_node_accounts
from mesh.istiod.channel import DEFAULT_PORT
from mesh.istiod.server import serve

log = logging.getLogger("istiod")

_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}


class ScopedFormatter(logging.Formatter):
    """`2024-05-01T10:00:00.123456Z info ca: issued ...`: Istio's log layout, the scope being the
    logger's last name component (istiod.ca → ca)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.created % 1 * 1e6):06d}Z"
        )
        scope = record.name.rsplit(".", 1)[-1]
        line = f"{stamp} {_LEVELS.get(record.levelno, record.levelname.lower())} {scope}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


async def _run(api_socket: str, host: str, port: int, trusted: frozenset[str]) -> None:
    async with open_nursery_until_signalled(lambda sig: log.info("%s: exiting", sig.name)) as nursery:
        nursery.start_soon(partial(serve, api_socket, host, port, trusted_node_accounts=trusted))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.istiod", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--api-socket", default=os.environ.get(ENV_API_SOCKET), help="the lab API socket (default: $LAB_API_SOCKET)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ScopedFormatter())
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    if not args.api_socket:
        log.error("no lab API socket: set LAB_API_SOCKET or pass --api-socket")
        return 2
    try:
        trusted = (
            parse_trusted_node_accounts(os.environ["CA_TRUSTED_NODE_ACCOUNTS"])
            if "CA_TRUSTED_NODE_ACCOUNTS" in os.environ
            else TRUSTED_NODE_ACCOUNTS
        )
    except ValueError as e:
        log.error("CA_TRUSTED_NODE_ACCOUNTS: %s", e)
        return 2
    # OSError: binding 15012; everything else is retried inside.
    return run_main(
        _run,
        args.api_socket,
        args.host,
        args.port,
        trusted,
        on_os_error=lambda e: log.error("cannot serve on %s:%d: %s", args.host, args.port, e),
    )


if __name__ == "__main__":
    sys.exit(main())
