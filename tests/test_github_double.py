"""The GitHub REST double, driven through the real githubkit client (never patched)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import httpx
import jwt
import pydantic
import pytest
from doubles.github_api import (
    GitHubDouble,
    delivery_headers,
    fake_sha,
    generate_rsa_key,
    payload_body,
    pull_request_payload,
    push_payload,
    sign,
)
from githubkit import AppAuthStrategy, AppInstallationAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from githubkit.exception import (
    PrimaryRateLimitExceeded,
    RequestFailed,
    SecondaryRateLimitExceeded,
)
from githubkit.webhooks import parse as parse_webhook
from githubkit.webhooks import verify as verify_webhook

OWNER, NAME = "kaito-org", "workspaces"
HEAD = fake_sha("head-1")
ALICE, BOB = "ghp_alice", "ghp_bob"
MARKER = "<!-- kaito-gitops:review -->"


@pytest.fixture
def gh_double():
    with GitHubDouble() as double:
        double.add_repo(OWNER, NAME)
        double.add_token(ALICE, "alice")
        double.add_token(BOB, "bob")
        double.add_pull(
            OWNER,
            NAME,
            7,
            HEAD,
            head_ref="add-llama",
            files=[
                {"filename": "workspaces/llama.yaml", "status": "added", "additions": 20},
                {
                    "filename": "workspaces/phi.yaml",
                    "status": "renamed",
                    "previous_filename": "old/phi.yaml",
                    "additions": 1,
                    "deletions": 1,
                },
            ],
        )
        yield double


def client(double: GitHubDouble, token: object = ALICE, **kw: object) -> GitHub:
    # A private cache per client: githubkit's default MemCacheStrategy is process-wide and would
    # carry HTTP cache entries and App tokens from one test (and one double) into the next.
    return GitHub(token, base_url=double.base_url, cache_strategy=MemCacheStrategy(), **kw)  # type: ignore[arg-type]


def test_pagination_over_250_comments_follows_link_headers(gh_double: GitHubDouble) -> None:
    for i in range(250):
        gh_double.add_comment(OWNER, NAME, 7, f"comment {i}", user_login="carol")
    gh = client(gh_double)

    first = gh.rest.issues.list_comments(OWNER, NAME, 7, per_page=100)
    assert len(first.parsed_data) == 100
    link = first.headers["link"]
    assert first.parsed_data[0].issue_url.startswith(gh_double.api_url)  # JSON urls point at the double
    assert 'rel="next"' in link and 'rel="last"' in link
    assert "page=2" in link and "per_page=100" in link and "page=3>" in link

    gh_double.reset_requests()
    bodies = [
        c.body
        for c in gh.rest.paginate(
            gh.rest.issues.list_comments, owner=OWNER, repo=NAME, issue_number=7, per_page=100
        )
    ]
    assert bodies == [f"comment {i}" for i in range(250)]  # ascending id, nothing lost or doubled
    pages = [r for r in gh_double.requests if r.method == "GET"]
    assert [r.query.get("page", ["1"])[0] for r in pages] == ["1", "2", "3"]
    assert all(r.path == f"/repos/{OWNER}/{NAME}/issues/7/comments" for r in pages)

    last = gh.rest.issues.list_comments(OWNER, NAME, 7, per_page=100, page=3)
    assert len(last.parsed_data) == 50
    assert 'rel="prev"' in last.headers["link"] and 'rel="next"' not in last.headers["link"]
    # Without per_page GitHub pages by 30.
    assert len(gh.rest.issues.list_comments(OWNER, NAME, 7).parsed_data) == 30


def test_upsert_finds_the_marker_comment_and_patches_it(gh_double: GitHubDouble) -> None:
    for i in range(130):
        gh_double.add_comment(OWNER, NAME, 7, f"noise {i}", user_login="carol")
    gh = client(gh_double)

    def upsert(body: str) -> int:
        mine = [
            c
            for c in gh.rest.paginate(
                gh.rest.issues.list_comments, owner=OWNER, repo=NAME, issue_number=7, per_page=100
            )
            if c.user and c.user.login == "alice" and MARKER in (c.body or "")
        ]
        if mine:
            return gh.rest.issues.update_comment(OWNER, NAME, mine[0].id, body=body).parsed_data.id
        created = gh.rest.issues.create_comment(OWNER, NAME, 7, body=body)
        assert created.status_code == 201
        return created.parsed_data.id

    first = upsert(f"{MARKER}\nplan v1")
    gh_double.add_comment(OWNER, NAME, 7, f"imitation {MARKER}", user_login="mallory")  # not ours
    gh_double.reset_requests()
    second = upsert(f"{MARKER}\nplan v2")

    assert first == second
    assert gh_double.write_count() == 1
    patch = next(r for r in gh_double.requests if r.method == "PATCH")
    assert patch.path == f"/repos/{OWNER}/{NAME}/issues/comments/{first}"
    assert patch.body == {"body": f"{MARKER}\nplan v2"} and patch.login == "alice" and patch.status == 200
    ours = [c for c in gh_double.comments(OWNER, NAME, 7) if c["user"]["login"] == "alice"]
    assert [c["body"] for c in ours] == [f"{MARKER}\nplan v2"]
    assert len(gh_double.comments(OWNER, NAME, 7)) == 132

    fetched = gh.rest.issues.get_comment(OWNER, NAME, first).parsed_data
    assert fetched.html_url.endswith(f"/pull/7#issuecomment-{first}")
    assert gh.rest.issues.delete_comment(OWNER, NAME, first).status_code == 204
    assert len(gh_double.comments(OWNER, NAME, 7)) == 131


def test_only_the_author_may_edit_or_delete(gh_double: GitHubDouble) -> None:
    cid = gh_double.add_comment(OWNER, NAME, 7, "alice's", user_login="alice")
    bob = client(gh_double, BOB, auto_retry=False)
    with pytest.raises(RequestFailed) as edit:
        bob.rest.issues.update_comment(OWNER, NAME, cid, body="bob was here")
    assert edit.value.response.status_code == 403
    with pytest.raises(RequestFailed) as delete:
        bob.rest.issues.delete_comment(OWNER, NAME, cid)
    assert delete.value.response.status_code == 403
    assert gh_double.comments(OWNER, NAME, 7)[0]["body"] == "alice's"
    assert gh_double.write_count() == 0


def test_comment_body_limit_is_65536_characters(gh_double: GitHubDouble) -> None:
    gh = client(gh_double)
    ok = gh.rest.issues.create_comment(OWNER, NAME, 7, body="x" * 65536)
    assert ok.status_code == 201
    for call in (
        lambda: gh.rest.issues.create_comment(OWNER, NAME, 7, body="x" * 65537),
        lambda: gh.rest.issues.update_comment(OWNER, NAME, ok.parsed_data.id, body="é" * 65537),
    ):
        with pytest.raises(RequestFailed) as exc:
            call()
        error = exc.value.response.json()
        assert exc.value.response.status_code == 422
        assert error["message"] == "Validation Failed"
        assert error["errors"][0]["resource"] == "IssueComment"
        assert "too long (maximum is 65536 characters)" in error["errors"][0]["message"]
        assert error["documentation_url"].startswith("https://docs.github.com/rest/issues/comments#")
    with pytest.raises(RequestFailed) as unknown_pr:
        gh.rest.issues.create_comment(OWNER, NAME, 999, body="hi")
    assert unknown_pr.value.response.status_code == 404
    assert unknown_pr.value.response.json()["message"] == "Not Found"


def test_commit_statuses_list_combined_and_validation(gh_double: GitHubDouble) -> None:
    gh = client(gh_double)
    common = {"context": "kaito-gitops/validate", "target_url": "https://ci.example/run/1"}
    made = gh.rest.repos.create_commit_status(
        OWNER, NAME, HEAD, state="pending", description="checking", **common
    )
    assert made.status_code == 201 and made.parsed_data.creator and made.parsed_data.creator.login == "alice"
    gh.rest.repos.create_commit_status(OWNER, NAME, HEAD, state="success", description="x" * 140, **common)
    gh.rest.repos.create_commit_status(OWNER, NAME, HEAD, state="failure", context="other")

    listed = gh.rest.repos.list_commit_statuses_for_ref(OWNER, NAME, HEAD).parsed_data
    assert [s.state for s in listed] == ["failure", "success", "pending"]  # newest first
    by_branch = gh.rest.repos.list_commit_statuses_for_ref(OWNER, NAME, "add-llama").parsed_data
    assert [s.id for s in by_branch] == [s.id for s in listed]
    combined = gh.rest.repos.get_combined_status_for_ref(OWNER, NAME, HEAD).parsed_data
    assert combined.state == "failure" and combined.total_count == 2 and combined.sha == HEAD
    assert [s["state"] for s in gh_double.statuses(OWNER, NAME, HEAD)] == ["pending", "success", "failure"]

    with pytest.raises(RequestFailed) as long_description:
        gh.rest.repos.create_commit_status(
            OWNER, NAME, HEAD, state="success", description="x" * 141, **common
        )
    error = long_description.value.response.json()
    assert long_description.value.response.status_code == 422
    assert error["errors"] == [
        {
            "resource": "Status",
            "code": "custom",
            "field": "description",
            "message": "description is too long (maximum is 140 characters)",
        }
    ]
    # githubkit refuses an unknown state before sending; with body validation off, GitHub's 422.
    with pytest.raises(pydantic.ValidationError):
        gh.rest.repos.create_commit_status(OWNER, NAME, HEAD, state="bogus")  # type: ignore[arg-type]
    loose = client(gh_double, rest_api_validate_body=False)
    with pytest.raises(RequestFailed) as bad_state:
        loose.rest.repos.create_commit_status(OWNER, NAME, HEAD, state="bogus")  # type: ignore[arg-type]
    assert bad_state.value.response.status_code == 422
    with pytest.raises(RequestFailed) as unknown_sha:
        gh.rest.repos.create_commit_status(OWNER, NAME, fake_sha("nope"), state="success")
    assert unknown_sha.value.response.status_code == 422
    assert unknown_sha.value.response.json()["message"].startswith("No commit found for SHA")


def test_pulls_list_get_files_and_commit_lookup(gh_double: GitHubDouble) -> None:
    many = [
        {"filename": f"workspaces/ws-{i:03}.yaml", "status": "modified", "additions": 1} for i in range(250)
    ]
    gh_double.add_pull(OWNER, NAME, 8, fake_sha("head-8"), head_ref="bulk", files=many)
    gh = client(gh_double)

    open_numbers = [p.number for p in gh.rest.pulls.list(OWNER, NAME).parsed_data]
    assert open_numbers == [8, 7]
    pr = gh.rest.pulls.get(OWNER, NAME, 7).parsed_data
    assert (pr.head.sha, pr.head.ref, pr.base.ref, pr.changed_files, pr.merged) == (
        HEAD,
        "add-llama",
        "main",
        2,
        False,
    )

    files = gh.rest.pulls.list_files(OWNER, NAME, 7).parsed_data
    assert [(f.filename, f.status, f.previous_filename or None) for f in files] == [
        ("workspaces/llama.yaml", "added", None),
        ("workspaces/phi.yaml", "renamed", "old/phi.yaml"),
    ]
    paged = list(
        gh.rest.paginate(gh.rest.pulls.list_files, owner=OWNER, repo=NAME, pull_number=8, per_page=100)
    )
    assert len(paged) == 250 and paged[-1].filename == "workspaces/ws-249.yaml"

    # A new push, then a merge: the commit -> pull request lookup follows both.
    new_head = fake_sha("head-2")
    gh_double.set_pull_head(OWNER, NAME, 7, new_head)
    assert [
        p.number
        for p in gh.rest.repos.list_pull_requests_associated_with_commit(OWNER, NAME, HEAD).parsed_data
    ] == [7]
    merge = fake_sha("merge-7")
    gh_double.close_pull(OWNER, NAME, 7, merged=True, merge_commit_sha=merge)
    by_merge = gh.rest.repos.list_pull_requests_associated_with_commit(OWNER, NAME, merge).parsed_data
    assert [(p.number, p.state, p.merged_at is not None) for p in by_merge] == [(7, "closed", True)]
    assert [p.number for p in gh.rest.pulls.list(OWNER, NAME, state="closed").parsed_data] == [7]
    assert len(gh.rest.pulls.list(OWNER, NAME, state="all").parsed_data) == 2
    merged = gh.rest.pulls.get(OWNER, NAME, 7).parsed_data
    assert merged.merged and merged.head.sha == new_head and merged.commits == 2


def test_rate_limit_headers_and_conditional_requests(gh_double: GitHubDouble) -> None:
    gh = client(gh_double)
    first = gh.rest.pulls.get(OWNER, NAME, 7)
    assert first.headers["x-ratelimit-limit"] == "5000"
    assert first.headers["x-ratelimit-resource"] == "core"
    assert first.headers["x-ratelimit-remaining"] == "4999"
    assert first.headers["x-ratelimit-used"] == "1"
    assert int(first.headers["x-ratelimit-reset"]) > time.time()

    # githubkit's HTTP cache revalidates with If-None-Match; an unchanged answer is a 304 that
    # costs nothing, and the client still gets the full body.
    again = gh.rest.pulls.get(OWNER, NAME, 7)
    assert again.parsed_data.number == 7
    assert [r.status for r in gh_double.requests] == [200, 304]
    assert again.headers["x-ratelimit-remaining"] == "4999"
    gh.rest.issues.create_comment(OWNER, NAME, 7, body="new")
    assert gh.rest.pulls.get(OWNER, NAME, 7).parsed_data.comments == 1  # changed: a fresh 200
    assert gh_double.requests[-1].status == 200

    # Budgets are per identity; /rate_limit itself is free.
    bob = client(gh_double, BOB)
    assert bob.rest.rate_limit.get().parsed_data.resources.core.remaining == 5000
    gh_double.set_rate_limit(42, login="alice")
    assert gh.rest.rate_limit.get().parsed_data.resources.core.remaining == 42


def test_primary_rate_limit(gh_double: GitHubDouble) -> None:
    gh_double.set_rate_limit(0, reset_in_seconds=3600)
    strict = client(gh_double, auto_retry=False)
    with pytest.raises(PrimaryRateLimitExceeded) as exc:
        strict.rest.pulls.get(OWNER, NAME, 7)
    response = exc.value.response
    assert response.status_code == 403 and response.headers["x-ratelimit-remaining"] == "0"
    assert response.json()["message"].startswith("API rate limit exceeded for user ID")
    assert timedelta(minutes=59) < exc.value.retry_after <= timedelta(hours=1, seconds=1)

    # By default githubkit sleeps until x-ratelimit-reset and retries once (here: about a second).
    gh_double.set_rate_limit(0, reset_in_seconds=1)
    gh_double.reset_requests()
    patient = client(gh_double)
    assert patient.rest.pulls.get(OWNER, NAME, 7).parsed_data.number == 7
    assert [r.status for r in gh_double.requests] == [403, 200]


def test_secondary_rate_limit(gh_double: GitHubDouble) -> None:
    gh_double.secondary_limit_next(1, retry_after=1, match="^POST ")
    strict = client(gh_double, auto_retry=False)
    with pytest.raises(SecondaryRateLimitExceeded) as exc:
        strict.rest.issues.create_comment(OWNER, NAME, 7, body="hi")
    assert exc.value.retry_after == timedelta(seconds=1)
    assert exc.value.response.headers["retry-after"] == "1"
    assert "secondary rate limit" in exc.value.response.json()["message"]
    assert gh_double.comments(OWNER, NAME, 7) == []

    # Default client: one retry after Retry-After seconds, then the error surfaces.
    gh = client(gh_double)
    gh_double.secondary_limit_next(2, retry_after=1, status=429)
    gh_double.reset_requests()
    with pytest.raises(SecondaryRateLimitExceeded):
        gh.rest.issues.create_comment(OWNER, NAME, 7, body="hi")
    assert [r.status for r in gh_double.requests] == [429, 429]
    assert gh_double.comments(OWNER, NAME, 7) == [] and gh_double.write_count() == 0


def test_server_errors(gh_double: GitHubDouble) -> None:
    strict, patient = client(gh_double, auto_retry=False), client(gh_double)
    gh_double.fail_next(1, status=502)
    with pytest.raises(RequestFailed) as exc:
        strict.rest.pulls.get(OWNER, NAME, 7)
    assert exc.value.response.status_code == 502
    # The default client retries 5xx (sleeping 1 s, then 4 s, then 9 s); one failure costs 1 s.
    gh_double.fail_next(1, status=502)
    gh_double.reset_requests()
    assert patient.rest.pulls.get(OWNER, NAME, 7).parsed_data.number == 7
    assert [r.status for r in gh_double.requests] == [502, 200]


def test_github_app_jwt_installation_token_and_bot_author(gh_double: GitHubDouble) -> None:
    app = gh_double.add_app(424242, "kaito-gitops")
    assert app.private_key_pem is not None
    as_app = client(gh_double, AppAuthStrategy(app.app_id, app.private_key_pem))
    me = as_app.rest.apps.get_authenticated().parsed_data
    assert (me.id, me.slug) == (424242, "kaito-gitops")
    installation = as_app.rest.apps.get_repo_installation(OWNER, NAME).parsed_data
    assert installation.id == app.installation_id

    bot = client(gh_double, AppInstallationAuthStrategy(app.app_id, app.private_key_pem, installation.id))
    made = bot.rest.issues.create_comment(OWNER, NAME, 7, body=f"{MARKER}\nplan").parsed_data
    assert made.user and (made.user.login, made.user.type) == ("kaito-gitops[bot]", "Bot")
    assert made.performed_via_github_app and made.performed_via_github_app.slug == "kaito-gitops"
    status = bot.rest.repos.create_commit_status(
        OWNER, NAME, HEAD, state="success", context="kaito-gitops/validate"
    )
    assert status.parsed_data.creator and status.parsed_data.creator.login == "kaito-gitops[bot]"
    minted = [r for r in gh_double.requests if r.path.endswith("/access_tokens")]
    assert len(minted) == 1 and minted[0].login == "app:kaito-gitops" and minted[0].status == 201
    assert gh_double.requests[-1].login == "kaito-gitops[bot]"
    assert gh_double.write_count("/repos/") == 2

    # Installation tokens cannot read /user: the reviewer derives "<slug>[bot]" from GET /app.
    with pytest.raises(RequestFailed) as no_user:
        bot.rest.users.get_authenticated()
    assert no_user.value.response.status_code == 403
    alice = client(gh_double)
    assert alice.rest.users.get_authenticated().parsed_data.login == "alice"

    # A JWT signed by another key, or living longer than GitHub allows, is refused.
    other_key, _ = generate_rsa_key()
    forger = client(gh_double, AppAuthStrategy(app.app_id, other_key), auto_retry=False)
    with pytest.raises(RequestFailed) as forged:
        forger.rest.apps.get_authenticated()
    assert forged.value.response.status_code == 401
    now = int(time.time())
    too_long = jwt.encode(
        {"iss": str(app.app_id), "iat": now, "exp": now + 3600}, app.private_key_pem, "RS256"
    )
    answer = httpx.get(gh_double.base_url + "app", headers={"Authorization": f"Bearer {too_long}"})
    assert answer.status_code == 401 and "too far in the future" in answer.json()["message"]


def test_error_shapes_and_repository_id_links(gh_double: GitHubDouble) -> None:
    api = gh_double.base_url
    bad = httpx.get(api + "user", headers={"Authorization": "token nope"})
    assert bad.status_code == 401
    assert bad.json()["message"] == "Bad credentials" and "documentation_url" in bad.json()
    assert httpx.get(api + "user").json()["message"] == "Requires authentication"
    missing = httpx.get(api + "repos/kaito-org/nope/pulls/1", headers={"Authorization": f"Bearer {ALICE}"})
    assert missing.status_code == 404
    assert missing.json()["message"] == "Not Found"
    assert missing.headers["x-ratelimit-resource"] == "core"
    assert (
        httpx.post(
            api + f"repos/{OWNER}/{NAME}/issues/7/comments",
            content=b"{not json",
            headers={"Authorization": f"token {ALICE}"},
        ).status_code
        == 400
    )
    # Link headers name the repository by id, as GitHub's do; those URLs answer too.
    for i in range(3):
        gh_double.add_comment(OWNER, NAME, 7, f"c{i}")
    page1 = httpx.get(
        api + f"repos/{OWNER}/{NAME}/issues/7/comments?per_page=2",
        headers={"Authorization": f"token {ALICE}"},
    )
    next_url = page1.links["next"]["url"]
    assert "/repositories/" in next_url
    page2 = httpx.get(next_url, headers={"Authorization": f"token {ALICE}"})
    assert [c["body"] for c in page2.json()] == ["c2"]


def test_webhook_helpers_match_github(gh_double: GitHubDouble) -> None:
    secret = b"It's a Secret to Everybody"
    body = b"Hello, World!"
    # The example from GitHub's "Validating webhook deliveries" page.
    assert sign(secret, body) == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

    push = push_payload(
        OWNER,
        NAME,
        "refs/heads/main",
        fake_sha("before"),
        fake_sha("after"),
        [{"id": fake_sha("after"), "message": "Add llama", "added": ["workspaces/llama.yaml"], "removed": [],
          "modified": []}],
        clone_url="http://127.0.0.1:9418/workspaces.git",
    )  # fmt: skip
    raw = payload_body(push)
    headers = delivery_headers("push", raw, secret)
    assert headers["X-GitHub-Event"] == "push" and headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("GitHub-Hookshot/")
    assert len(headers["X-GitHub-Delivery"]) == 36  # a GUID
    assert verify_webhook(secret.decode(), raw, headers["X-Hub-Signature-256"])
    event = parse_webhook("push", raw)
    assert event.after == fake_sha("after") and event.commits[0].added == ["workspaces/llama.yaml"]
    assert event.repository.clone_url == "http://127.0.0.1:9418/workspaces.git"

    for action, extra in (
        ("opened", {}),
        ("synchronize", {"before": HEAD}),
        ("closed", {"merged": True, "merge_commit_sha": fake_sha("merge")}),
    ):
        payload = pull_request_payload(action, OWNER, NAME, 7, fake_sha("h2"), "add-llama", **extra)  # type: ignore[arg-type]
        parsed = parse_webhook("pull_request", json.dumps(payload))
        assert parsed.action == action and parsed.pull_request.head.sha == fake_sha("h2")
    assert payload["pull_request"]["merged"] is True
    # Ids in payloads agree with the double's REST answers for the same repository.
    gh = client(gh_double)
    rest_repo = gh.rest.pulls.get(OWNER, NAME, 7).parsed_data.base.repo
    assert payload["repository"]["id"] == rest_repo.id
