"""Prometheus metrics of the daemon (one registry per daemon, so tests can run several)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.reconcile_seconds = Histogram(
            "kaito_gitops_reconcile_duration_seconds",
            "Time to reconcile one workspace",
            ["result"],
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
        )
        self.pass_seconds = Histogram(
            "kaito_gitops_pass_duration_seconds",
            "Time of one full reconcile pass",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.queue_depth = Gauge("kaito_gitops_queue_depth", "Workspaces waiting for a worker", registry=r)
        self.fetch_seconds = Histogram(
            "kaito_gitops_git_fetch_duration_seconds",
            "Time to check and fetch the repository",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
        )
        self.fetch_failures = Counter(
            "kaito_gitops_git_fetch_failures_total", "Failed repository fetches", registry=r
        )
        self.applies = Counter(
            "kaito_gitops_applies_total", "Objects written (created, updated or replaced)", registry=r
        )
        self.prunes = Counter(
            "kaito_gitops_prunes_total", "Objects deleted because their workspace left git", registry=r
        )
        self.errors = Counter(
            "kaito_gitops_reconcile_errors_total", "Workspace reconciles that failed", registry=r
        )
        self.last_sync = Gauge(
            "kaito_gitops_last_successful_sync_timestamp_seconds",
            "When a workspace last reconciled without error",
            ["namespace", "workspace"],
            registry=r,
        )
        self.workspaces = Gauge("kaito_gitops_workspaces", "Workspaces by state", ["state"], registry=r)
        self.pass_failures = Counter(
            "kaito_gitops_pass_failures_total",
            "Passes that failed as a whole (the repository could not be fetched or loaded)",
            registry=r,
        )
        self.spend = Gauge(
            "kaito_gitops_spend_dollars_per_hour",
            "List price per hour of the nodes that exist now, by namespace",
            ["namespace"],
            registry=r,
        )
        self.gpus_billed = Gauge(
            "kaito_gitops_gpus_billed",
            "GPUs of the nodes that exist now, by namespace",
            ["namespace"],
            registry=r,
        )
        self.in_backoff = Gauge(
            "kaito_gitops_workspaces_in_backoff", "Workspaces waiting to retry after a failure", registry=r
        )
        self.condition = Gauge(
            "kaito_gitops_workspace_condition",
            "1 when the workspace's condition is True, 0 when False or Unknown",
            ["namespace", "workspace", "condition"],
            registry=r,
        )
        self.webhook_requests = Counter(
            "kaito_gitops_webhook_requests_total",
            "Webhook deliveries by HTTP status answered",
            ["code"],
            registry=r,
        )
        self.set_replicas = Gauge(
            "kaito_gitops_inferenceset_replicas",
            "Members an autoscaled InferenceSet runs now (the autoscaler's count)",
            ["namespace", "inferenceset"],
            registry=r,
        )
        self.scale_events = Counter(
            "kaito_gitops_inferenceset_scale_events_total",
            "Times the autoscaler changed an InferenceSet's count, by direction",
            ["namespace", "inferenceset", "direction"],
            registry=r,
        )
        self.cold_start_seconds = Histogram(
            "kaito_gitops_inferenceset_cold_start_seconds",
            "From a request held at zero replicas to the first member ready",
            ["namespace", "inferenceset"],
            registry=r,
            buckets=(5, 10, 30, 60, 120, 300, 600, 1200),
        )
        self.gpu_hours_saved = Gauge(
            "kaito_gitops_inferenceset_gpu_hours_saved",
            "GPU-hours not run by scaling below max-replicas, since the daemon started",
            ["namespace", "inferenceset"],
            registry=r,
        )
        self.revision_info = Gauge(
            "kaito_gitops_revision_info", "The revision being reconciled", ["revision"], registry=r
        )

    def forget_workspace(self, key: tuple[str, str]) -> None:
        """A removed workspace's series go too, so they do not pile up over the daemon's life."""
        with contextlib.suppress(KeyError):
            self.last_sync.remove(*key)

    def text(self) -> bytes:
        return generate_latest(self.registry)
