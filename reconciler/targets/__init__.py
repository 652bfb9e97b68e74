"""Where workloads run: a Kubernetes cluster, local processes, or YAML files on disk."""
