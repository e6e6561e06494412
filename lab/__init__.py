"""ambient-lab's harness: a Kubernetes-like cluster built from network namespaces."""
