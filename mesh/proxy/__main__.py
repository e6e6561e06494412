"""`python -m mesh.proxy proxy waypoint`: the L7 proxy image's entry point, as pilot-agent's
`proxy <type>` (the waypoint Deployment istiod makes passes `args: [proxy, waypoint]`)."""
from __future__ import annotations

import logging
import os
import sys

import trio

PLACEMENTS = ("waypoint",)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "proxy" or argv[1] not in PLACEMENTS:
        print(f"usage: python -m mesh.proxy proxy {{{'|'.join(PLACEMENTS)}}}", file=sys.stderr)
        return 2
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mesh.waypoint.app import amain
    trio.run(amain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
