"""`python -m mesh.ztunnel`: the node's ztunnel (DaemonSet `ztunnel`, hostNetwork)."""

from mesh.ztunnel.app import main

main()
