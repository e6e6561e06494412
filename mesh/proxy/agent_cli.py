"""`pilot-agent wait`: block until the sidecar proxy in this pod is ready (docs/sidecars.md).

The injector puts it in the proxy container's `postStart` hook when holdApplicationUntilProxyStarts
is on; the kubelet starts the app containers only after the hook returns. It polls the proxy's
readiness endpoint on localhost and exits 0 on the first 200, or 1 after the timeout. The flags are
pilot-agent's (`--timeoutSeconds`, `--periodMillis`, `--requestTimeoutMillis`, `--url`), plus
`--timeout` as another name for `--timeoutSeconds`.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request

from mesh.contract import READINESS_PORT

READY_URL = f"http://127.0.0.1:{READINESS_PORT}/healthz/ready"
PERIOD_MS = 100  # pilot-agent's default is 500 ms; the lab's proxies start in well under that
REQUEST_TIMEOUT_MS = 500


def wait(
    timeout: float,
    url: str = READY_URL,
    period: float = PERIOD_MS / 1000,
    request_timeout: float = REQUEST_TIMEOUT_MS / 1000,
) -> bool:
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP proxy
    while True:
        try:
            with opener.open(url, timeout=request_timeout) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(period)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pilot-agent")
    sub = parser.add_subparsers(dest="command", required=True)
    waiting = sub.add_parser("wait", help="wait until the proxy is ready")
    waiting.add_argument(
        "--timeoutSeconds", "--timeout", dest="timeout", type=float, default=60.0, help="seconds to wait (default 60)"
    )
    waiting.add_argument("--periodMillis", type=int, default=PERIOD_MS, help="milliseconds between attempts")
    waiting.add_argument(
        "--requestTimeoutMillis", type=int, default=REQUEST_TIMEOUT_MS, help="milliseconds to wait for each answer"
    )
    waiting.add_argument("--url", default=READY_URL, help="URL to poll")
    args = parser.parse_args(argv)
    print(f"Waiting for Envoy proxy to be ready (timeout: {args.timeout:g} seconds)...", flush=True)
    if wait(args.timeout, args.url, args.periodMillis / 1000, args.requestTimeoutMillis / 1000):
        print("Envoy is ready!", flush=True)
        return 0
    print(
        f"timeout waiting for Envoy proxy to become ready. Last error: not ready after {args.timeout:g}s",
        file=sys.stderr,
        flush=True,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
