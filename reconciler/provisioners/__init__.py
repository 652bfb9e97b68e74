"""Who provides GPU nodes: `aks` (agent pools through Resource Manager) or `none` (bring your own)."""
