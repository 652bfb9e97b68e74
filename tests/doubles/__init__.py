"""Local doubles of the outside services (Kubernetes API, ...) that tests drive through real clients."""
