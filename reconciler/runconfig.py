"""Settings of `kaito-gitops run`: flags, then environment, then a config file, then defaults.

Every option can be written three ways: `--webhook-listen :8080`, `KAITO_GITOPS_WEBHOOK_LISTEN=:8080`
or `webhook-listen: ":8080"` in the file given by `--config`. Secrets never have a value
option: only `*-file` paths (or, for the webhook secret, an environment variable), so they
do not show in `ps` or shell history.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from .render.common import DEFAULT_INFERENCE_IMAGE, DEFAULT_TUNING_IMAGE

ENV_PREFIX = "KAITO_GITOPS_"


def duration(text: str | float | int) -> float:
    """'90s', '5m', '1h30m', '250ms' or a number of seconds -> seconds."""
    if isinstance(text, int | float):
        return float(text)
    s = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h)", s):
        if m.start() != pos:
            raise ValueError(f"cannot read duration {text!r} (use 30s, 5m, 1h)")
        total += float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"cannot read duration {text!r} (use 30s, 5m, 1h)")
    return total


@dataclass
class RunConfig:
    repo: str = ""
    branch: str = "main"
    path: list[str] = field(default_factory=list)
    target: str = "kubernetes"
    out: str = ""
    once: bool = False
    interval: float = 60.0
    namespace: str = "default"
    cache_dir: str = ".kaito-gitops/cache"
    workers: int = 8
    allow_empty_prune: bool = False
    provisioner: str = ""  # default: aks when AKS settings are given, else none
    kubeconfig: str = ""
    context: str = ""
    listen: str = ""  # the ops port: health, metrics, webhook ("" = off); default by target below
    webhook_secret_file: str = ""
    git_token_file: str = ""
    git_ssh_key_file: str = ""
    git_known_hosts_file: str = ""
    leader_election: bool = False
    lease_namespace: str = ""
    lease_name: str = "kaito-gitops-leader"
    log_format: str = "json"
    log_level: str = "info"
    inference_image: str = DEFAULT_INFERENCE_IMAGE
    tuning_image: str = DEFAULT_TUNING_IMAGE
    image_pull_secret: list[str] = field(default_factory=list)
    # the other objects in the watched folders (kinds.py): what may be applied, and where
    allow_kind: list[str] = field(default_factory=list)
    managed_namespace: list[str] = field(default_factory=list)
    # AKS node provisioning
    aks_subscription: str = ""
    aks_resource_group: str = ""
    aks_cluster: str = ""
    arm_endpoint: str = "https://management.azure.com"
    arm_audience: str = ""  # token audience when arm-endpoint is not a known cloud's
    authority_host: str = ""
    # status written back to git
    status: str = "branch"  # branch | tree | off
    status_branch: str = "kaito-status"
    status_dir: str = ".kaito/status"
    # GitHub pull-request review
    github_repo: str = ""  # owner/name
    github_api_url: str = "https://api.github.com"
    github_token_file: str = ""
    github_app_id: str = ""
    github_app_key_file: str = ""
    github_installation_id: str = ""
    review_interval: float = 300.0
    # eval suites (docs/evals.md): previews of pull requests, and the deployed endpoints after merge
    preview_target: str = "off"  # off | local | kubernetes
    preview_timeout: float = 600.0
    preview_queue: int = 4
    preview_max_tokens: int = 50_000  # what a pull request's suite may make one preview write, per workspace
    # cluster previews (--preview-target kubernetes): a pr-<number> namespace each
    preview_ttl: float = 3600.0  # after the pull request's last push
    preview_max: int = 2  # preview namespaces at once
    preview_max_price: float = 10.0  # $/hour of every preview's node pools together
    preview_reach: str = "service"  # service (cluster DNS) | proxy (the API server's service proxy)
    eval_deployed: str = "cases"  # off | cases | all (cases and the load section)
    local_state_dir: str = ".kaito-gitops/local"
    # InferenceSets with scaling bounds (docs/inferenceset.md); off: the set runs spec.replicas
    # members and something else (KEDA) may scale them
    no_autoscale: bool = False

    @property
    def webhook_secret(self) -> bytes:
        if self.webhook_secret_file:
            return Path(self.webhook_secret_file).read_bytes().strip()
        return os.environ.get(ENV_PREFIX + "WEBHOOK_SECRET", "").encode()


_BOOLS = {f.name for f in fields(RunConfig) if f.type in ("bool", bool)}
_LISTS = {f.name for f in fields(RunConfig) if str(f.type).startswith("list")}
_FLOATS = {"interval", "review_interval", "preview_timeout", "preview_ttl"}
_INTS = {"workers", "preview_queue", "preview_max", "preview_max_tokens"}
_MONEY = {"preview_max_price"}


def _coerce(name: str, value: Any) -> Any:
    if name in _BOOLS:
        return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
    if name in _LISTS:
        if isinstance(value, list):
            return [str(v) for v in value]
        return [v for v in re.split(r"[,\s]+", str(value)) if v]
    if name in _FLOATS:
        return duration(value)
    if name in _INTS:
        return int(value)
    if name in _MONEY:
        return float(str(value).lstrip("$"))
    return str(value)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags for every RunConfig field; defaults are None so we can tell 'not given'."""
    p.add_argument("--config", help="YAML file with the same settings (flag names without dashes)")
    help_text = {
        "repo": "git URL or local path of the repository to watch (required)",
        "branch": "branch to watch",
        "path": "folder in the repository to read workspaces from (repeatable; default: the whole repository)",
        "target": "where workloads run: kubernetes | local | render",
        "out": "folder the render target writes to",
        "once": "run one pass and exit (exit code 1 when a workspace failed)",
        "interval": "how often to check git and observe every workspace (30s, 5m); webhooks act at once",
        "namespace": "namespace for workspaces that do not set metadata.namespace",
        "cache_dir": "where remote repositories are fetched to",
        "workers": "workspaces reconciled in parallel",
        "allow_empty_prune": "remove every workspace even when nothing in git says their files were deleted",
        "provisioner": "GPU nodes: none (bring your own) | aks (default: aks when --aks-cluster is set)",
        "kubeconfig": "kubeconfig file (default: in-cluster, then ~/.kube/config)",
        "context": "kubeconfig context",
        "listen": "host:port for /healthz, /readyz, /metrics and /webhook ('' = off; default 127.0.0.1:8080 "
        "for the local target, :8080 otherwise)",
        "webhook_secret_file": "file with the GitHub webhook secret (or KAITO_GITOPS_WEBHOOK_SECRET); "
        "without one /webhook answers 404",
        "git_token_file": "file with an HTTPS token for the repository",
        "git_ssh_key_file": "SSH private key for the repository",
        "git_known_hosts_file": "known_hosts for SSH (turns on strict host key checking)",
        "leader_election": "take a Lease before reconciling (several replicas)",
        "lease_namespace": "namespace of the Lease (default: the pod's)",
        "lease_name": "name of the Lease",
        "log_format": "json | text",
        "log_level": "debug | info | warning | error",
        "inference_image": "image of inference pods",
        "tuning_image": "image of tuning Jobs",
        "image_pull_secret": "pull secret for the kaito-gitops images (repeatable)",
        "allow_kind": "also apply this kind from the watched folders, e.g. Role or Namespace or "
        "Certificate.cert-manager.io (repeatable; cluster-scoped kinds and RBAC need it)",
        "managed_namespace": "namespaces the daemon may apply to (repeatable; default: all but kube-system, "
        "kube-public and kube-node-lease)",
        "aks_subscription": "Azure subscription of the AKS cluster",
        "aks_resource_group": "resource group of the AKS cluster",
        "aks_cluster": "AKS cluster whose agent pools the daemon manages",
        "arm_endpoint": "Azure Resource Manager endpoint",
        "arm_audience": "token audience when --arm-endpoint is not a known cloud's",
        "authority_host": "Entra ID authority host",
        "status": "where status goes: branch | tree | off",
        "status_branch": "branch status commits go to (--status branch)",
        "status_dir": "folder on the watched branch for status files (--status tree)",
        "github_repo": "owner/name: review pull requests there",
        "github_api_url": "GitHub API address (GitHub Enterprise: https://HOST/api/v3)",
        "github_token_file": "file with a GitHub token for reviews",
        "github_app_id": "GitHub App id (instead of a token)",
        "github_app_key_file": "GitHub App private key file",
        "github_installation_id": "GitHub App installation id",
        "review_interval": "how often open pull requests are checked without a webhook",
        "preview_target": "run the eval suites a pull request touches, base and head, and put the "
        "results in its comment and the kaito-gitops/eval status: off | local (on this machine) | "
        "kubernetes (the head in a pr-<number> namespace, against the deployed workspaces)",
        "preview_timeout": "how long a previewed workspace may take to serve (10m; 30m with --preview-target "
        "kubernetes, where nodes come first)",
        "preview_max_tokens": "a suite that may ask for more tokens per workspace (cases' and load's "
        "max_tokens) is not previewed: pull requests cannot make previews run for hours",
        "preview_ttl": "a cluster preview is torn down this long after the pull request's last push",
        "preview_max": "cluster previews at once; beyond it a preview is refused until one ends",
        "preview_max_price": "$/hour that every cluster preview's node pools may cost together",
        "preview_reach": "how the daemon reaches a cluster preview, and InferenceSet members' /metrics: "
        "service (cluster DNS, the daemon runs in the cluster) | proxy (through the API server's service proxy)",
        "preview_queue": "pull requests whose previews may wait; beyond it a preview is refused",
        "eval_deployed": "after a merge, run the suites against the deployed endpoints and put the "
        "figures in status: off | cases | all (with the load section)",
        "local_state_dir": "where the local target keeps logs, data and endpoints",
        "no_autoscale": "do not scale InferenceSets between their scaling.kaito-gitops.io bounds: each runs "
        "spec.replicas members (for KEDA or an HPA instead, docs/inferenceset.md)",
    }
    defaults = RunConfig()
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        shown = "" if default in ("", [], False) else f"; default {default!r}"
        help_line = f"{help_text[f.name]}{shown}; env {ENV_PREFIX}{f.name.upper()}".replace("%", "%%")
        if f.name in _BOOLS:
            p.add_argument(flag, action="store_const", const=True, default=None, help=help_line)
        elif f.name in _LISTS:
            p.add_argument(flag, action="append", default=None, help=help_line)
        else:
            p.add_argument(flag, default=None, help=help_line)


def resolve(args: argparse.Namespace, environ: dict[str, str] | None = None) -> RunConfig:
    environ = os.environ if environ is None else environ
    file_values: dict[str, Any] = {}
    config_path = getattr(args, "config", None) or environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        data = YAML(typ="safe").load(Path(config_path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{config_path}: expected a mapping of settings")
        known = {f.name for f in fields(RunConfig)}
        for k, v in data.items():
            name = str(k).replace("-", "_")
            if name not in known:
                raise ValueError(f"{config_path}: unknown setting {k!r}")
            file_values[name] = v
    cfg = RunConfig()
    for f in fields(RunConfig):
        value = getattr(args, f.name, None)
        if value is None:
            env_value = environ.get(ENV_PREFIX + f.name.upper())
            value = env_value if env_value is not None else file_values.get(f.name)
        if value is not None:
            setattr(cfg, f.name, _coerce(f.name, value))
    if not cfg.repo:
        raise ValueError("--repo is required (a git URL or a local path)")
    if cfg.target not in ("kubernetes", "local", "render"):
        raise ValueError(f"--target must be kubernetes, local or render, not {cfg.target!r}")
    if cfg.target == "render" and not cfg.out:
        raise ValueError("--target render needs --out DIR")
    if cfg.status not in ("branch", "tree", "off"):
        raise ValueError(f"--status must be branch, tree or off, not {cfg.status!r}")
    if cfg.preview_target not in ("off", "local", "kubernetes"):
        raise ValueError(f"--preview-target must be off, local or kubernetes, not {cfg.preview_target!r}")
    if cfg.preview_target == "kubernetes" and cfg.target != "kubernetes":
        raise ValueError("--preview-target kubernetes needs --target kubernetes (the cluster it previews in)")
    if cfg.preview_target == "kubernetes" and not _given(args, environ, file_values, "preview_timeout"):
        cfg.preview_timeout = 1800.0  # GPU nodes, then the model's download, take many minutes
    if cfg.preview_reach not in ("service", "proxy"):
        raise ValueError(f"--preview-reach must be service or proxy, not {cfg.preview_reach!r}")
    if cfg.preview_max < 1 or cfg.preview_max_price < 0 or cfg.preview_ttl <= 0:
        raise ValueError(
            "--preview-max must be at least 1, --preview-max-price at least 0, --preview-ttl above 0"
        )
    if cfg.eval_deployed not in ("off", "cases", "all"):
        raise ValueError(f"--eval-deployed must be off, cases or all, not {cfg.eval_deployed!r}")
    if cfg.preview_queue < 1 or cfg.preview_max_tokens < 1:
        raise ValueError("--preview-queue and --preview-max-tokens must be at least 1")
    if not cfg.listen and not _given(args, environ, file_values, "listen"):
        # a laptop daemon listens on loopback only; a cluster pod must be reachable by its probes
        cfg.listen = "127.0.0.1:8080" if cfg.target == "local" else ":8080"
    if not cfg.provisioner:
        cfg.provisioner = "aks" if (cfg.aks_cluster and cfg.target == "kubernetes") else "none"
    if cfg.provisioner not in ("aks", "none"):
        raise ValueError(f"--provisioner must be aks or none, not {cfg.provisioner!r}")
    return cfg


def _given(args, environ, file_values, name: str) -> bool:
    return (
        getattr(args, name, None) is not None or (ENV_PREFIX + name.upper()) in environ or name in file_values
    )


def listen_address(text: str) -> tuple[str, int] | None:
    if not text:
        return None
    host, _, port = text.rpartition(":")
    return (host or "0.0.0.0", int(port))
