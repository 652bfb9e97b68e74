"""`kaito-gitops run`: wire source, target, provisioner, reporters and the ops server together."""

from __future__ import annotations

import os
import signal
import socket
import time

import structlog

from .runconfig import RunConfig, add_arguments, listen_address, resolve

log = structlog.get_logger("kaito_gitops.run")


def kube_client(kubeconfig: str = "", context: str = ""):
    """In-cluster credentials, else the kubeconfig (a file or context named wins over both)."""
    from kubernetes import client, config

    if kubeconfig or context:
        return config.new_client_from_config(config_file=kubeconfig or None, context=context or None)
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()


def build_target(cfg: RunConfig, api_client=None):
    if cfg.target == "render":
        from .targets.render import RenderTarget

        return RenderTarget(cfg.out)
    if cfg.target == "local":
        from .targets.local import LocalTarget

        return LocalTarget(cfg.local_state_dir)
    from .targets.kubernetes import KubernetesTarget

    return KubernetesTarget(
        api_client or kube_client(cfg.kubeconfig, cfg.context),
        allowed_kinds=object_policy(cfg).allowed,
        reach=cfg.preview_reach,
    )


def object_policy(cfg: RunConfig):
    from .kinds import ObjectPolicy

    return ObjectPolicy.from_flags(cfg.allow_kind, cfg.managed_namespace)


def build_provisioner(cfg: RunConfig):
    if cfg.provisioner == "aks":
        from .provisioners.aks import AksProvisioner

        return AksProvisioner.from_config(cfg)
    from .provisioners.none import NoneProvisioner

    return NoneProvisioner()


def build_daemon(cfg: RunConfig, api_client=None):
    from .daemon import Daemon, DaemonSettings
    from .render.common import RenderSettings
    from .source.git import GitAuth, GitSource

    source = GitSource(
        cfg.repo,
        cfg.branch,
        cfg.cache_dir,
        GitAuth(
            token_file=cfg.git_token_file or None,
            ssh_key_file=cfg.git_ssh_key_file or None,
            known_hosts_file=cfg.git_known_hosts_file or None,
        ),
    )
    settings = DaemonSettings(
        paths=[p.strip("/") for p in cfg.path] or [""],
        namespace=cfg.namespace,
        interval=cfg.interval,
        workers=cfg.workers,
        allow_empty_prune=cfg.allow_empty_prune,
        target_name=cfg.target,
        policy=object_policy(cfg),
    )
    render = RenderSettings(
        inference_image=cfg.inference_image,
        tuning_image=cfg.tuning_image,
        image_pull_secrets=tuple(cfg.image_pull_secret),
        byo_nodes=cfg.provisioner == "none",
    )
    if cfg.target == "kubernetes" and api_client is None:
        api_client = kube_client(cfg.kubeconfig, cfg.context)
    target = build_target(cfg, api_client)
    provisioner = build_provisioner(cfg)
    return Daemon(source, target, provisioner, settings, render)


def cmd_run(args) -> int:
    from . import logs
    from .cli import EXIT_FINDINGS, EXIT_OK, UsageError
    from .source.git import SourceError

    try:
        cfg = resolve(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    logs.configure(json_lines=cfg.log_format == "json", level=cfg.log_level)
    try:
        daemon = build_daemon(cfg)
    except SourceError as e:
        raise UsageError(str(e)) from None
    extras = attach_reporters(daemon, cfg)
    if not cfg.once and not cfg.no_autoscale and cfg.target != "render":
        from .scaler import Scaler

        extras.append(Scaler(daemon).start())
    if cfg.once:
        try:
            result = daemon.run_pass()
        except SourceError as e:
            log.error("pass failed", error=str(e))
            return EXIT_FINDINGS
        finally:
            for x in extras:
                x.close()
            daemon.close()
        bad = bool(result.errors) or any(daemon.findings.values())
        return EXIT_FINDINGS if bad else EXIT_OK
    return serve(daemon, cfg, extras)


def attach_reporters(daemon, cfg: RunConfig) -> list:
    """Status commits and pull-request reviews, when configured (each has its own module)."""
    out = []
    try:
        from .report import wiring
    except ImportError:
        return out
    out.extend(wiring.attach(daemon, cfg))
    return out


def ops_server(daemon, address: tuple[str, int], *, is_leader=lambda: True, receiver=None, reviewers=()):
    """The ops server as `run` wires it to `daemon` (not started yet).

    /healthz fails once the loop has not turned for max(5 min, 5 intervals); /readyz is the Lease
    holder after its first pass; a push to the daemon's branch (or one without a ref) pokes the
    daemon; pull-request events go to the reviewers.
    """
    from .server import OpsServer

    branch_ref = f"refs/heads/{daemon.source.branch}"

    def on_push(event) -> None:
        if event.ref in ("", branch_ref):
            daemon.poke()

    def on_pr(event) -> None:
        for r in reviewers:
            r.on_pull_request(event)

    stall = max(300.0, 5 * daemon.settings.interval)
    return OpsServer(
        host=address[0],
        port=address[1],
        metrics_text=daemon.metrics.text,
        healthy=lambda: time.monotonic() - daemon.heartbeat < stall,
        ready=lambda: is_leader() and daemon.synced.is_set(),
        receiver=receiver,
        on_push=on_push,
        on_pull_request=on_pr,
        count_webhook=lambda status: daemon.metrics.webhook_requests.labels(code=str(status)).inc(),
    )


def serve(daemon, cfg: RunConfig, extras: list) -> int:
    from .source.webhook import WebhookReceiver

    elector = None
    if cfg.leader_election and cfg.target == "kubernetes":
        from .leader import LeaseElector

        ns = cfg.lease_namespace or _pod_namespace() or cfg.namespace
        identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        elector = LeaseElector(daemon.target.api_client, ns, cfg.lease_name, identity).start()
    is_leader = elector.is_leader if elector else (lambda: True)
    for x in extras:  # reviewers act on the Lease holder only, like the reconcile loop
        if hasattr(x, "is_leader"):
            x.is_leader = is_leader

    server = None
    address = listen_address(cfg.listen)
    if address:
        secret = cfg.webhook_secret
        receiver = WebhookReceiver(secret) if secret else None
        reviewers = [x for x in extras if hasattr(x, "on_pull_request")]
        try:
            server = ops_server(
                daemon, address, is_leader=is_leader, receiver=receiver, reviewers=reviewers
            ).start()
        except (OSError, RuntimeError) as e:
            from .cli import UsageError

            daemon.close()
            raise UsageError(
                f"cannot listen on {address[0]}:{address[1]} ({e}); choose another port with --listen "
                "HOST:PORT (or KAITO_GITOPS_LISTEN), or --listen '' to turn the ops server off"
            ) from None
        log.info("listening", address=f"{address[0]}:{server.port}", webhook=receiver is not None)

    watcher = None
    if daemon.source.local:
        from .source.watch import RefWatcher

        watcher = RefWatcher(daemon.source.watch_paths()[0], daemon.poke).start()

    def on_signal(signum, _frame) -> None:
        log.info("signal received, finishing the current pass", signal=signal.Signals(signum).name)
        daemon.stop()

    # SIGHUP too: closing the terminal must stop the model servers, not leave them under init
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        daemon.run_forever(is_leader)
    finally:
        if watcher:
            watcher.stop()
        for x in extras:
            x.close()
        daemon.close()
        if elector:
            elector.stop()
        if server:
            server.stop()
        log.info("stopped")
    return 0


def _pod_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def register(sub) -> None:
    p = sub.add_parser("run", help="the daemon: watch a git repository and reconcile its workspaces")
    add_arguments(p)
    p.set_defaults(func=cmd_run)
