"""Pull-request review on GitHub: one living comment and the commit statuses.

On `pull_request` webhooks (opened, synchronize, reopened, ready_for_review) and by polling
open pull requests as a fallback, the reviewer fetches the head, validates it, plans it
against the base, and upserts ONE comment (found by a hidden marker and the bot's login
across every page of comments) plus the `kaito-gitops/validate` status on the head. After a
merge it keeps that comment and a `kaito-gitops/deploy` status current with the rollout.

Every write is skipped when the text would not change; rate limits are respected by waiting
(on this thread only) instead of retrying blindly.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog
from githubkit import AppAuthStrategy, AppInstallationAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from githubkit.exception import RateLimitExceeded, RequestFailed

from .. import budgets, capacity
from ..evals.preview import (
    CONTEXT,
    MAX_TOKENS,
    LocalPreviewer,
    PreviewJob,
    PreviewRunner,
    outcome_of,
    pending_section,
    refused_section,
    suites_to_preview,
    too_costly,
)
from ..logs import error_text
from ..plandiff import diff_states
from ..planning import plan_revision
from ..planview import Checks
from ..render.common import RenderSettings
from ..source.git import GitSource, SourceError
from ..source.webhook import PullRequestEvent
from ..validation import validate_sources, with_settings
from .review_comment import MARKER, Deployment, comment_body, status_description

log = structlog.get_logger("kaito_gitops.review")

VALIDATE_CONTEXT = "kaito-gitops/validate"
DEPLOY_CONTEXT = "kaito-gitops/deploy"
EVAL_CONTEXT = CONTEXT  # kaito-gitops/eval: the preview's verdict on the head
RATE_RESERVE = 50  # requests kept in hand for what matters (statuses, the comment) before pausing
REVIEW_ACTIONS = {"opened", "synchronize", "reopened", "ready_for_review", "edited"}


@dataclass
class _Merged:
    number: int
    merge_sha: str
    workspaces: list[tuple[str, str]]
    diff_body_args: dict = field(default_factory=dict)
    reached: bool = False  # the daemon loaded a revision containing the merge (it stays reached)
    done: bool = False


class GitHubReviewer:
    def __init__(
        self,
        gh: GitHub,
        owner: str,
        repo: str,
        source: GitSource,
        *,
        paths: list[str],
        namespace: str,
        render: RenderSettings,
        bot_login: str,
        poll_interval: float = 300.0,
        target_url: str = "",
        max_file_bytes: int = 1 << 20,
        policy=None,
    ):
        self.gh, self.owner, self.repo = gh, owner, repo
        self.source = source
        self.paths = [p for p in paths if p]
        self.namespace = namespace
        self.render = render
        self.bot_login = bot_login
        self.poll_interval = poll_interval
        self.target_url = target_url
        self.max_file_bytes = max_file_bytes
        self.policy = policy  # the daemon's kinds.ObjectPolicy: reviews check objects as it applies them
        self._reviewed: dict[int, str] = {}  # PR -> head sha reviewed
        self._comment_ids: dict[int, int] = {}
        self._last_body: dict[int, str] = {}
        self._posted_status: dict[
            tuple[str, str], tuple[str, str]
        ] = {}  # (sha, context) -> (state, description)
        self._merged: dict[int, _Merged] = {}
        self._candidates: dict[int, tuple[list, dict]] = {}  # PR -> (changed workspaces, comment inputs)
        self._queue: list[int] = []
        self._cond = threading.Condition()
        self._stop = False
        self._paused_until = 0.0
        self.is_leader = lambda: True  # with several replicas, only the Lease holder reviews
        self.azure = None  # an AzureFactsReader when the daemon provisions AKS pools
        self.previews = None  # an evals.preview.PreviewRunner with --preview-target local or kubernetes
        self.preview_max_tokens = MAX_TOKENS
        self._outcomes: dict[int, object] = {}  # PR -> the PreviewOutcome not yet posted
        self._thread = threading.Thread(target=self._run, name="github-review", daemon=True)
        self._thread.start()

    # -- inputs -----------------------------------------------------------------------------
    def on_pull_request(self, event: PullRequestEvent) -> None:
        if event.repository and event.repository.lower() != f"{self.owner}/{self.repo}".lower():
            return
        if event.action in REVIEW_ACTIONS or (event.action == "closed" and event.merged):
            self.enqueue(event.number)

    def enqueue(self, number: int) -> None:
        with self._cond:
            if number not in self._queue:
                self._queue.append(number)
            self._cond.notify()

    def on_pass(self, daemon, result) -> None:
        """After a daemon pass: move merged pull requests' deployment sections along."""
        for merged in list(self._merged.values()):
            if not merged.done:
                self._deployment(daemon, merged)

    # -- the worker -----------------------------------------------------------------------
    def _run(self) -> None:
        next_poll = time.monotonic()
        while True:
            with self._cond:
                if not self._queue and not self._stop:
                    timeout = max(0.05, next_poll - time.monotonic()) if self.poll_interval > 0 else None
                    self._cond.wait(timeout)
                if self._stop:
                    return
                number = self._queue.pop(0) if self._queue else None
            if not self.is_leader():
                if number is not None:
                    self.enqueue(number)
                time.sleep(1.0)
                continue
            pause = self._paused_until - time.monotonic()
            if pause > 0:
                if number is not None:
                    self.enqueue(number)
                time.sleep(min(1.0, pause))
                continue
            try:
                if number is not None:
                    self.review(number)
                elif self.poll_interval > 0 and time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self.poll_interval
                    self.poll()
            except RateLimitExceeded as e:
                wait_s = e.retry_after.total_seconds() if e.retry_after else 60.0
                self._paused_until = time.monotonic() + max(1.0, wait_s)
                log.warning("GitHub rate limit: pausing reviews", seconds=round(wait_s, 1))
                if number is not None:
                    self.enqueue(number)
            except (RequestFailed, SourceError) as e:
                log.warning("review failed", pr=number, error=str(e)[:300])
            except Exception as e:  # never let one pull request stop the reviewer
                log.warning("review failed", pr=number, error=error_text(e))

    def poll(self) -> None:
        """The fallback for missed webhooks: review every open pull request whose head moved."""
        pulls = self.gh.rest.paginate(
            self.gh.rest.pulls.list, owner=self.owner, repo=self.repo, state="open", per_page=100
        )
        open_now = set()
        for pr in pulls:
            open_now.add(pr.number)
            if self._reviewed.get(pr.number) != pr.head.sha:
                self.enqueue(pr.number)
        for number in sorted(set(self._reviewed) - open_now):  # closed or merged unseen: tear down
            self.enqueue(number)

    # -- one review ---------------------------------------------------------------------------
    def _note_rate(self, resp) -> None:
        """Slow down before GitHub has to stop us: pause until the reset when the budget runs low."""
        try:
            remaining = int(resp.headers.get("x-ratelimit-remaining", ""))
            reset = float(resp.headers.get("x-ratelimit-reset", ""))
        except ValueError:
            return
        if remaining < RATE_RESERVE:
            wait_s = max(1.0, reset - time.time())
            self._paused_until = time.monotonic() + wait_s
            log.warning(
                "GitHub API budget low: pausing reviews until it resets",
                remaining=remaining,
                seconds=round(wait_s),
            )

    def review(self, number: int) -> None:
        resp = self.gh.rest.pulls.get(self.owner, self.repo, number)
        self._note_rate(resp)
        pr = resp.json()
        if pr.get("merged") or pr.get("state") != "open":
            self._reviewed.pop(number, None)
            if self.previews is not None:
                self.previews.forget(number)
            if pr.get("merged"):
                self._track_merge(number, pr)
            return
        head_sha = pr["head"]["sha"]
        base_ref = pr["base"]["ref"]
        if self._reviewed.get(number) == head_sha:
            self._post_preview(number)
            return
        head = self.source.fetch_commit(f"refs/pull/{number}/head")
        if head != head_sha:
            log.info("pull request head moved while fetching; reviewing what git has", pr=number)
        base = self.source.fetch_commit(f"refs/heads/{base_ref}")
        paths = with_settings(self.paths)
        base_files = list(self.source.files(base, paths, self.max_file_bytes, remember=False))
        head_files = list(self.source.files(head, paths, self.max_file_bytes, remember=False))
        base_rev = validate_sources(
            base_files,
            namespace=self.namespace,
            target="kubernetes",
            max_file_bytes=self.max_file_bytes,
            byo_nodes=self.render.byo_nodes,
            policy=self.policy,
        )
        head_rev = validate_sources(
            head_files,
            namespace=self.namespace,
            target="kubernetes",
            base=base_rev,
            max_file_bytes=self.max_file_bytes,
            byo_nodes=self.render.byo_nodes,
            policy=self.policy,
        )
        settings = replace(self.render, revision=head[:12])
        before, after = plan_revision(base_rev, settings), plan_revision(head_rev, settings)
        budgets.hold(head_rev, after, before)  # a crossing is an error at the budget and the workspace
        diff = diff_states(before, after)
        checks = Checks(budgets.usage_lines(budgets.from_revision(head_rev), after), self._capacity(diff))
        repo_html = pr["base"]["repo"]["html_url"]
        findings = head_rev.findings
        changed = [c.key for c in diff.changes if c.action != "unchanged"]
        evaluation, eval_status = self._start_preview(
            number, head, base_ref, base_files, head_files, base_rev, head_rev, changed
        )
        body = comment_body(
            diff,
            findings,
            repo_html=repo_html,
            head_sha=head,
            base_ref=base_ref,
            checks=checks,
            evaluation=evaluation,
        )
        self._upsert_comment(number, body)
        errors = sum(f.is_error for f in findings)
        self._status(
            head, VALIDATE_CONTEXT, "failure" if errors else "success", status_description(diff, errors)
        )
        if eval_status:
            self._status(head, EVAL_CONTEXT, *eval_status)
        self._reviewed[number] = head_sha
        self._candidates[number] = (
            changed,
            {
                "repo_html": repo_html,
                "base_ref": base_ref,
                "diff": diff,
                "findings": findings,
                "head": head,
                "checks": checks,
                "evaluation": evaluation,
            },
        )
        log.info("pull request reviewed", pr=number, head=head[:12], errors=errors, changes=len(diff.changes))

    # -- eval previews ----------------------------------------------------------------------------
    def _start_preview(
        self, number, head, base_ref, base_files, head_files, base_rev, head_rev, changed
    ) -> tuple[str, tuple[str, str] | None]:
        """Queue the preview of the suites this change touches: (the Eval section, the status)."""
        if self.previews is None:
            return "", None
        suites = suites_to_preview(base_rev, head_rev, set(changed))
        self._outcomes.pop(number, None)
        if not suites:
            return "", None
        # what the pull request's own suites ask for is checked here, once, for every previewer
        refused = tuple(
            f"`{s.name}`: {why}" for s in suites if (why := too_costly(s, self.preview_max_tokens))
        )
        runnable = tuple(s.name for s in suites if not too_costly(s, self.preview_max_tokens))
        job = PreviewJob(number, head, base_ref, base_files, head_files, runnable, refused)
        if not runnable:
            outcome = outcome_of(job, [], [], [], 0.0)
            return outcome.section, (outcome.state, outcome.description)
        try:  # where it would run and what it costs, before anything starts
            where, why = self.previews.describe(job)
        except Exception as e:
            where, why = "", f"not previewed: {error_text(e)}"
        if not why:
            ahead = self.previews.submit(job)
            if ahead is not None:
                return pending_section(job, ahead, where), (
                    "pending",
                    f"previewing {len(suites)} suite(s) on base and head",
                )
            why = f"not previewed: {self.previews.max_pending} other previews wait; push again later"
        return refused_section(why), ("error", why[:140])

    def on_preview(self, outcome) -> None:
        """From the preview thread: hand the outcome to the reviewer's thread, which posts it."""
        self._outcomes[outcome.job.number] = outcome
        self.enqueue(outcome.job.number)

    def _post_preview(self, number: int) -> None:
        outcome = self._outcomes.pop(number, None)
        if outcome is None or number not in self._candidates:
            return
        args = self._candidates[number][1]
        if outcome.job.head_sha != args["head"]:
            return  # a newer push is being previewed; this one is stale
        args["evaluation"] = outcome.section
        self._upsert_comment(number, self._body(args))
        self._status(outcome.job.head_sha, EVAL_CONTEXT, outcome.state, outcome.description)
        log.info("eval preview posted", pr=number, state=outcome.state, summary=outcome.description)

    @staticmethod
    def _body(args: dict, deployment=None) -> str:
        return comment_body(
            args["diff"],
            args["findings"],
            repo_html=args["repo_html"],
            head_sha=args["head"],
            base_ref=args["base_ref"],
            deployment=deployment,
            checks=args.get("checks"),
            evaluation=args.get("evaluation", ""),
        )

    def _capacity(self, diff):
        """Quota and region capacity of the pull request's node pools (None without an AKS cluster)."""
        if self.azure is None:
            return None
        try:
            return capacity.check(diff, self.azure.facts(capacity.sizes(diff)))
        except Exception as e:  # the review goes out whatever ARM does
            log.warning("quota and capacity check failed", error=error_text(e))
            return capacity.CapacityReport("", unknown=[f"quota unknown: {error_text(e)}"])

    def _find_comment(self, number: int) -> tuple[int | None, str]:
        if number in self._comment_ids:
            return self._comment_ids[number], self._last_body.get(number, "")
        for c in self.gh.rest.paginate(
            self.gh.rest.issues.list_comments,
            owner=self.owner,
            repo=self.repo,
            issue_number=number,
            per_page=100,
        ):
            if c.user and c.user.login == self.bot_login and MARKER in (c.body or ""):
                self._comment_ids[number] = c.id
                return c.id, c.body or ""
        return None, ""

    def _upsert_comment(self, number: int, body: str) -> None:
        comment_id, current = self._find_comment(number)
        if current == body:
            return
        if comment_id is None:
            resp = self.gh.rest.issues.create_comment(self.owner, self.repo, number, body=body)
            self._comment_ids[number] = resp.parsed_data.id
        else:
            self.gh.rest.issues.update_comment(self.owner, self.repo, comment_id, body=body)
        self._last_body[number] = body

    def _status(self, sha: str, context: str, state: str, description: str) -> None:
        key = (sha, context)
        if self._posted_status.get(key) == (state, description):
            return
        if key not in self._posted_status:  # after a restart: ask GitHub what is there already
            for s in self.gh.rest.repos.list_commit_statuses_for_ref(
                self.owner, self.repo, sha, per_page=100
            ).parsed_data:
                if s.context == context:
                    self._posted_status[key] = (s.state, s.description or "")
                    break
            if self._posted_status.get(key) == (state, description):
                return
        data = {"state": state, "context": context, "description": description[:140]}
        if self.target_url:
            data["target_url"] = self.target_url
        self.gh.rest.repos.create_commit_status(self.owner, self.repo, sha, **data)
        self._posted_status[key] = (state, description)

    # -- after merge ------------------------------------------------------------------------------
    def _track_merge(self, number: int, pr: dict) -> None:
        if number in self._merged:
            return
        merge_sha = pr.get("merge_commit_sha") or pr["head"]["sha"]
        keys, args = self._candidates.get(number, ([], {}))
        self._merged[number] = _Merged(number, merge_sha, [tuple(k) for k in keys], args)
        self._status(merge_sha, DEPLOY_CONTEXT, "pending", "merged; waiting for kaito-gitops to apply it")

    def _deployment(self, daemon, merged: _Merged) -> None:
        if not merged.reached:
            merged.reached = self.source.has_commit(merged.merge_sha) and self._contains(
                daemon.revision, merged.merge_sha
            )
            if not merged.reached:
                return
        reports = {r.key: r for r in daemon.reports()}
        lines, states = [], []
        for key in merged.workspaces:
            r = reports.get(key)
            name = f"{key[0]}/{key[1]}"
            if r is None:
                lines.append((name, "removed", "workspace and its nodes deleted"))
                states.append("done")
                continue
            stage, state = _stage(r)
            lines.append((name, stage, (r.status.last_error or _detail(r))[:200]))
            states.append(state)
        overall = (
            "failure"
            if "failed" in states
            else ("success" if all(s == "done" for s in states) else "pending")
        )
        dep = Deployment(merged.merge_sha, lines, overall)
        args = merged.diff_body_args
        if args:
            self._upsert_comment(merged.number, self._body(args, dep))
        desc = {
            "success": "deployed: every workspace is serving or finished",
            "failure": "deployment failed: see the kaito-gitops comment",
            "pending": "rolling out: " + ", ".join(f"{w} {s}" for w, s, _ in lines),
        }[overall]
        self._status(merged.merge_sha, DEPLOY_CONTEXT, overall, desc[:140])
        merged.done = overall != "pending"

    def _contains(self, revision: str, sha: str) -> bool:
        if not revision:
            return False
        if revision == sha:
            return True
        try:
            self.source.repo.git.merge_base("--is-ancestor", sha, revision)
            return True
        except Exception:
            return False

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=10)
        if self.previews is not None:
            self.previews.close()

    def review_now(self, number: int) -> None:
        """Review on the caller's thread (tests, and `kaito-gitops review` one-offs)."""
        self.review(number)


def _stage(r) -> tuple[str, str]:
    """Where a workspace is in its rollout: applied -> nodes ready -> serving/finished (or failed)."""
    s = r.status
    conds = {c.type: c for c in s.conditions}
    if s.state == "Rendered":
        return "rendered", "done"
    if s.state in ("Ready", "Succeeded"):
        return ("serving" if s.state == "Ready" else "finished"), "done"
    if s.state == "Failed" or (
        s.state == "NotReady"
        and conds.get("InferenceReady")
        and conds["InferenceReady"].reason not in ("WorkspaceInferenceStatusPending",)
    ):
        return "failed", "failed"
    if conds.get("ResourceReady") and conds["ResourceReady"].status == "True":
        return "nodes ready", "pending"
    return "applied", "pending"


def _detail(r) -> str:
    for c in r.status.conditions:
        if c.status != "True" and c.message:
            return c.message
    return r.status.endpoint or r.status.state


def build_reviewer(daemon, cfg) -> GitHubReviewer:
    owner, _, name = cfg.github_repo.partition("/")
    if not owner or not name:
        raise SystemExit("--github-repo must be owner/name")
    api = cfg.github_api_url.rstrip("/") + "/"
    if cfg.github_app_id:
        key = Path(cfg.github_app_key_file).read_text()
        app_gh = GitHub(
            AppAuthStrategy(cfg.github_app_id, key),
            base_url=api,
            cache_strategy=MemCacheStrategy(),
            auto_retry=False,
        )
        slug = app_gh.rest.apps.get_authenticated().parsed_data.slug
        gh = GitHub(
            AppInstallationAuthStrategy(cfg.github_app_id, key, int(cfg.github_installation_id)),
            base_url=api,
            cache_strategy=MemCacheStrategy(),
            auto_retry=False,
        )
        login = f"{slug}[bot]"
    else:
        if not cfg.github_token_file:
            raise SystemExit("--github-repo needs --github-token-file or a GitHub App (--github-app-id ...)")
        token = Path(cfg.github_token_file).read_text().strip()
        gh = GitHub(token, base_url=api, cache_strategy=MemCacheStrategy(), auto_retry=False)
        login = gh.rest.users.get_authenticated().parsed_data.login
    reviewer = GitHubReviewer(
        gh,
        owner,
        name,
        daemon.source,
        paths=daemon.settings.paths,
        namespace=daemon.settings.namespace,
        render=daemon.render,
        bot_login=login,
        poll_interval=cfg.review_interval,
        policy=getattr(daemon.settings, "policy", None),
    )
    if getattr(cfg, "provisioner", "") == "aks":
        from ..provisioners.azure_facts import AzureFactsReader, configured

        if configured(cfg):
            reviewer.azure = AzureFactsReader.from_config(cfg)
    if getattr(cfg, "preview_target", "off") != "off":
        reviewer.previews = PreviewRunner(
            previewer(daemon, cfg), reviewer.on_preview, max_pending=cfg.preview_queue
        )
        reviewer.preview_max_tokens = cfg.preview_max_tokens
    daemon.on_pass.append(reviewer.on_pass)
    return reviewer


def previewer(daemon, cfg):
    """Where previews run: the daemon's machine, or (`kubernetes`) the daemon's cluster, with
    node pools from its provisioner's kind."""
    common = {
        "namespace": daemon.settings.namespace,
        "policy": getattr(daemon.settings, "policy", None),
        "byo_nodes": daemon.render.byo_nodes,
        "timeout": cfg.preview_timeout,
    }
    if cfg.preview_target != "kubernetes":
        return LocalPreviewer(Path(cfg.local_state_dir) / "previews", **common)
    from ..evals.cluster_preview import Caps, ClusterPreviewer
    from ..provisioners.none import NoneProvisioner

    if cfg.provisioner == "aks":
        from ..provisioners.aks import AksProvisioner

        provisioner = AksProvisioner.from_config(cfg, previews=True)
    else:
        provisioner = NoneProvisioner()
    return ClusterPreviewer(
        daemon.target.api_client,
        provisioner,
        render=daemon.render,
        caps=Caps(cfg.preview_ttl, cfg.preview_max, cfg.preview_max_price),
        reach=cfg.preview_reach,
        deployed=daemon.target,  # its snapshot is what serves now; no second listing of the cluster
        **common,
    )
