"""`python -m mesh.cni`: the istio-cni node agent (see mesh.cni.agent)."""

import sys

from mesh.cni.agent import main

sys.exit(main())
