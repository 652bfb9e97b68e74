"""How the daemon reaches a Service in the cluster: by its cluster DNS name (in the cluster), or
through the API server's service proxy (a daemon outside it, with its user's credentials)."""

from __future__ import annotations

import ssl

from kubernetes import client

from .kubernetes import endpoint


def http_options(api_client: client.ApiClient) -> dict:
    """httpx.Client options that authenticate as the kubernetes client does (token, CA, client cert)."""
    cfg = api_client.configuration
    if cfg.refresh_api_key_hook is not None:  # exec plugins (kubelogin) renew short-lived tokens
        cfg.refresh_api_key_hook(cfg)
    headers = {
        s["key"]: s["value"] for s in cfg.auth_settings().values() if s["in"] == "header" and s["value"]
    }
    if not cfg.verify_ssl:
        return {"headers": headers, "verify": False}
    context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    return {"headers": headers, "verify": context}


def service_url(api_client: client.ApiClient, svc: dict, reach: str) -> str:
    if reach != "proxy":
        return endpoint(svc)
    md = svc["metadata"]
    port = ((svc.get("spec") or {}).get("ports") or [{}])[0].get("port", 80)
    host = api_client.configuration.host.rstrip("/")
    return f"{host}/api/v1/namespaces/{md['namespace']}/services/{md['name']}:{port}/proxy"
