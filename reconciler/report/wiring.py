"""Attach the configured reporters to a daemon."""

from __future__ import annotations

import structlog

from ..logs import error_text

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
        from ..evals.deployed import DeployedEvals, figures_in_status

        seed = {}
        if writer is not None:  # the figures from before a restart: kept, and compared with
            try:
                seed = figures_in_status(writer.read())
            except Exception as e:
                log.warning("could not read earlier eval figures from status", error=error_text(e))
        out.append(DeployedEvals(daemon, load=cfg.eval_deployed == "all", seed=seed))
    if cfg.github_repo:
        from .github_review import build_reviewer

        out.append(build_reviewer(daemon, cfg))
    return out
