"""`python -m mesh.proxy`: the proxyv2 image's entry point, as pilot-agent.

- `proxy waypoint`: a waypoint (the Deployment istiod makes passes `args: [proxy, waypoint]`);
- `proxy sidecar`: a sidecar proxy (`mesh.sidecar.app`; the injector passes `proxy sidecar` and
  pilot-agent's usual flags, see docs/sidecars.md);
- `istio-iptables <flags>`: the `istio-init` init container (`mesh.sidecar.init`).
"""

from __future__ import annotations

import logging
import os
import sys

import trio

PLACEMENTS = ("waypoint", "sidecar")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["istio-iptables"]:
        from mesh.sidecar import init

        return init.main(argv[1:])
    placement = argv[1] if len(argv) >= 2 and argv[0] == "proxy" else None
    if placement not in PLACEMENTS or (placement == "waypoint" and len(argv) != 2):
        print(f"usage: python -m mesh.proxy proxy {{{'|'.join(PLACEMENTS)}}} | istio-iptables <flags>", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if argv[1] == "sidecar":
        # The injector's flags (--domain, log levels) are accepted; the sidecar reads its pod's env.
        from mesh.sidecar.app import amain as sidecar_main

        trio.run(sidecar_main)
        return 0
    from mesh.waypoint.app import amain

    trio.run(amain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
