"""The article's suites written against the Kubernetes API (real kubectl and the official Python
client), so they run on a lab or on any cluster with Istio ambient (`pytest --kubeconfig FILE
--context CTX`). Nothing here imports the lab or the mesh (tests/unit/test_layout.py checks it)."""
