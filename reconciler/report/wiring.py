"""Attach the configured reporters to a daemon."""

from __future__ import annotations

import structlog

log = structlog.get_logger("kaito_gitops.report")


def attach(daemon, cfg) -> list:
    out = []
    writer = None
    if cfg.status != "off":
        from .status_reporter import StatusReporter
        from .statusgit import StatusWriter

        if cfg.status == "tree":
            if daemon.source.local and not daemon.source.repo.bare:
                raise SystemExit(
                    "--status tree needs a remote or a bare repository: writing to the branch of a "
                    "checked-out local repository would move it under the person working in it"
                )
            writer = StatusWriter(daemon.source, cfg.branch, cfg.status_dir)
            daemon.ignore_prefixes.append(cfg.status_dir.strip("/") + "/")
        else:
            writer = StatusWriter(daemon.source, cfg.status_branch, "")
        reporter = StatusReporter(writer)
        daemon.on_pass.append(reporter.on_pass)
        out.append(reporter)
    if getattr(cfg, "eval_deployed", "off") != "off":
        from ..evals.deployed import DeployedEvals

        earlier = writer.read if writer is not None else None
        out.append(DeployedEvals(daemon, load=cfg.eval_deployed == "all", earlier=earlier))
    if cfg.github_repo:
        from .github_review import build_reviewer

        out.append(build_reviewer(daemon, cfg))
    return out
