"""Before merge: budgets in .kaito-gitops.yaml, vCPU quota and region capacity from ARM.

Budgets go through `kaito-gitops validate/plan` on real files and through the daemon on a real
git remote. Quota and capacity go through the real azure-mgmt-compute and
azure-mgmt-containerservice clients against the ARM double (usages and resource SKUs in ARM's
wire format), from `kaito-gitops plan` and from the pull-request review on the GitHub double.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from pathlib import Path

import pytest
from doubles.arm import ArmDouble, authorization_failed, location_restriction, throttled, zone_restriction
from test_deploy import doc_blocks, shell_lines
from test_github_review import BOT, OWNER, REPO, World, bot_comments, open_pr, reviewer

from reconciler.cli import build_parser, main
from reconciler.daemon import Daemon, DaemonSettings, WorkspaceReport
from reconciler.provisioners.azure_facts import AzureFactsReader
from reconciler.provisioners.none import NoneProvisioner
from reconciler.report.statusview import spend_lines
from reconciler.source.git import GitSource
from reconciler.status import WorkspaceStatus
from reconciler.targets.render import RenderTarget

ROOT = Path(__file__).resolve().parents[1]
AMSR = "Standard_ND96amsr_A100_v4"  # 8 x A100 80 GB, 96 vCPUs
ASR = "Standard_ND96asr_v4"  # 8 x A100 40 GB, 96 vCPUs (Azure's name; the catalog knows both)
AMSR_FAMILY = "StandardNDAMSv4_A100Family"
ASR_FAMILY = "standardNDASv4_A100Family"


def gpu_ws(name: str, preset: str, sku: str, namespace: str = "team-a") -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: kaito.sh/v1beta1
        kind: Workspace
        metadata:
          name: {name}
          namespace: {namespace}
        resource:
          instanceType: {sku}
          labelSelector:
            matchLabels:
              apps: {name}
        inference:
          preset:
            name: {preset}
        """
    )


BIG = gpu_ws("big", "deepseek-v3-0324", AMSR)  # sizing: 2 nodes, 16 GPUs, $65.54/h
OSS = gpu_ws("oss", "gpt-oss-120b", ASR)  # 1 node, 8 GPUs, $27.20/h


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def run_cli(monkeypatch, capsys, cwd: Path, *argv: str) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


# -- budgets ---------------------------------------------------------------------------------


BUDGETS = """\
budgets:
  total:
    pricePerHour: 100
  namespaces:
    team-a:
      gpus: 16
      pricePerHour: 70
"""


def test_a_budget_crossing_fails_validate_at_the_budget_and_at_the_workspace(tmp_path, monkeypatch, capsys):
    write(tmp_path, {".kaito-gitops.yaml": BUDGETS, "ws/big.yaml": BIG})
    rc, out, _ = run_cli(monkeypatch, capsys, tmp_path, "validate", "ws")
    assert rc == 0, out  # 16 GPUs, $65.54/h: within both caps
    write(tmp_path, {"ws/oss.yaml": OSS})  # +8 GPUs, +$27.20/h: team-a over 16 GPUs and $70/h
    rc, out, _ = run_cli(monkeypatch, capsys, tmp_path, "validate", "ws")
    assert rc == 1
    at_budget = re.search(r"^\.kaito-gitops\.yaml:5:5: error: budgets\.namespaces\.team-a: (.*)$", out, re.M)
    assert at_budget, out
    assert "16 GPU(s)" in at_budget[1] and "ws/oss.yaml (team-a/oss)" in at_budget[1]
    assert "[budget-exceeded]" in at_budget[1]
    # oss.yaml sorts after big.yaml: it is the one that crosses, and it says where the budget is
    at_ws = re.search(r"^ws/oss\.yaml:6:1: error: (.*)$", out, re.M)
    assert at_ws and "(set at .kaito-gitops.yaml:5)" in at_ws[1], out
    assert "ws/big.yaml:" not in out.split("budget-exceeded")[0].split("\n")[-1]
    assert not re.search(r"^ws/big\.yaml:\d+:\d+: error", out, re.M)
    # the total ($92.74/h of $100) holds; raising team-a's caps in git makes the revision valid
    write(tmp_path, {".kaito-gitops.yaml": BUDGETS.replace("gpus: 16", "gpus: 24").replace("70", "95")})
    rc, out, _ = run_cli(monkeypatch, capsys, tmp_path, "validate", "ws")
    assert rc == 0, out


def test_plan_shows_use_against_each_budget(tmp_path, monkeypatch, capsys):
    write(tmp_path, {".kaito-gitops.yaml": BUDGETS, "ws/big.yaml": BIG})
    rc, out, _ = run_cli(monkeypatch, capsys, tmp_path, "plan", "ws")
    assert rc == 0
    assert (
        "Budgets:\n  total: $65.54/h of $100.00/h\n  namespace team-a: 16 of 16 GPU(s), $65.54/h of $70.00/h"
        in out
    )
    rc, out, _ = run_cli(monkeypatch, capsys, tmp_path, "plan", "ws", "--format", "json")
    assert (
        json.loads(out)["checks"]["budgets"][1] == "namespace team-a: 16 of 16 GPU(s), $65.54/h of $70.00/h"
    )


@pytest.mark.parametrize(
    "text, where, rule, words",
    [
        ("budgets:\n  totl:\n    gpus: 4\n", "2:3", "schema-unknown-field", "did you mean 'total'?"),
        ("budgets:\n  total:\n    gpus: -2\n", "3:11", "schema-range", "at least 0"),
        ("budgets:\n  total:\n    pricePerHour: lots\n", "3:19", "schema-type", "must be a number"),
        ("budgets:\n  namespaces:\n    Team_A:\n      gpus: 1\n", "3:5", "schema-pattern", "DNS-1123"),
        ("budgets:\n  total: {}\n", "2:3", "schema-required", "at least one"),
        ("budgets: [1, 2]\n", "1:10", "schema-type", "must be a mapping"),
        ("- budgets\n", "1:1", "settings-invalid", "must be a mapping"),
        ("budgets: {}\n---\nbudgets: {}\n", "3:1", "settings-invalid", "one YAML document"),
        ("budgets: &a [*a, *a]\n", "1", "yaml", ""),
    ],
)
def test_bad_budget_files_are_findings_with_file_line_and_col(
    tmp_path, monkeypatch, capsys, text, where, rule, words
):
    write(tmp_path, {".kaito-gitops.yaml": text, "ws/big.yaml": BIG})
    rc, out, err = run_cli(monkeypatch, capsys, tmp_path, "validate", "ws")
    assert rc == 1 and "Traceback" not in out + err
    line = next((x for x in out.splitlines() if x.startswith(".kaito-gitops.yaml:")), "")
    assert line.startswith(f".kaito-gitops.yaml:{where}"), out
    assert rule in line and words in line, line


def test_the_daemon_holds_a_workspace_that_crosses_a_budget_until_git_raises_it(git_remote, tmp_path):
    git_remote.write({".kaito-gitops.yaml": BUDGETS, "workspaces/big.yaml": BIG}, "big, within budget")
    out = tmp_path / "out"
    d = Daemon(
        GitSource(git_remote.url, "main", tmp_path / "cache"),
        RenderTarget(out),
        NoneProvisioner(),
        DaemonSettings(paths=["workspaces"], target_name="render"),
    )
    try:
        d.run_pass()
        assert (out / "team-a" / "big").is_dir()
        git_remote.write({"workspaces/oss.yaml": OSS}, "oss: over team-a's budget")
        d.run_pass()
        assert not (out / "team-a" / "oss").exists(), "a workspace over budget must not be applied"
        [oss] = [r for r in d.reports() if r.key == ("team-a", "oss")]
        assert oss.errors and oss.errors[0].rule == "budget-exceeded"
        assert "set at .kaito-gitops.yaml:5" in oss.errors[0].message
        assert (out / "team-a" / "big").is_dir()  # the rest of the revision is applied
        # a change that grows big over the budget keeps its last good version running
        git_remote.write({"workspaces/big.yaml": BIG.replace(AMSR, ASR)}, "big on 3 x ND96asr: 24 GPUs")
        d.run_pass()
        [big] = [r for r in d.reports() if r.key == ("team-a", "big")]
        assert big.errors and big.errors[0].rule == "budget-exceeded"
        assert d.desired[("team-a", "big")].node_pool.vm_size == AMSR
        # raising the budget in git applies both
        git_remote.write(
            {
                ".kaito-gitops.yaml": BUDGETS.replace("gpus: 16", "gpus: 40")
                .replace("70", "200")
                .replace("100", "200")
            },
            "raise team-a's budget",
        )
        d.run_pass()
        assert (out / "team-a" / "oss").is_dir()
        assert d.desired[("team-a", "big")].node_pool.vm_size == ASR
        assert not any(r.errors for r in d.reports())
    finally:
        d.close()


# -- spend in status ---------------------------------------------------------------------------


def _report(ns: str, name: str, gpus: int, price: float | None) -> WorkspaceReport:
    return WorkspaceReport(
        key=(ns, name),
        path=f"{name}.yaml",
        revision="abc",
        kind="inference",
        instance_type=AMSR,
        status=WorkspaceStatus("Ready"),
        gpus=gpus,
        price_per_hour=price,
    )


def test_status_md_shows_the_spend_of_the_pools_that_exist():
    reports = [
        _report("team-a", "big", 16, 65.54),
        _report("team-a", "oss", 8, 27.197),
        _report("team-b", "wait", 8, None),  # no pool yet (or bring-your-own nodes): not billed
    ]
    lines = spend_lines(reports)
    assert "| team-a | 24 | $92.74 | $67,698 |" in lines
    assert "| **total** | 24 | $92.74 | $67,698 |" in lines
    assert not any("team-b" in x for x in lines)
    assert spend_lines([_report("x", "y", 1, None)]) == []


# -- quota and capacity against the ARM double ---------------------------------------------------


@pytest.fixture
def arm(tmp_path):
    with ArmDouble(tmp_path) as double:
        double.put_pool(
            "nodepool1",
            {"vmSize": "Standard_D4ds_v5", "count": 2, "mode": "System", "availabilityZones": ["1"]},
        )
        double.set_usage(AMSR_FAMILY, current=56, limit=96, localized="Standard NDAMSv4_A100 Family vCPUs")
        double.set_usage(ASR_FAMILY, current=0, limit=200)
        double.add_sku(
            AMSR,
            family=AMSR_FAMILY,
            vcpus=96,
            gpus=8,
            locations={"eastus": ["1", "2"], "westus2": ["1", "2", "3"]},
        )
        double.add_sku(
            ASR,
            family=ASR_FAMILY,
            vcpus=96,
            gpus=8,
            locations={"eastus": ["1", "2"], "southcentralus": ["1", "2", "3"]},
            restrictions=[zone_restriction("eastus", ["1"])],  # not in the zone the cluster runs in
        )
        yield double


def azure_env(monkeypatch, arm: ArmDouble) -> list[str]:
    for k, v in arm.workload_identity_env().items():
        monkeypatch.setenv(k, v)
    return [
        "--aks-subscription",
        arm.subscription_id,
        "--aks-resource-group",
        arm.resource_group,
        "--aks-cluster",
        arm.cluster,
        "--arm-endpoint",
        arm.base_url,
    ]


def test_plan_shows_a_quota_shortfall_before_merge(arm, tmp_path, monkeypatch, capsys):
    write(tmp_path, {"ws/big.yaml": BIG})
    flags = azure_env(monkeypatch, arm)
    rc, out, _ = run_cli(monkeypatch, capsys, tmp_path, "plan", "ws", *flags)
    assert rc == 0  # a shortfall is news for the reviewer, not an invalid file
    assert f"{AMSR_FAMILY}: needs 192 vCPUs in eastus, 40 free (56/96 used): SHORT by 152" in out, out
    assert "team-a/big: this will fail with QuotaExceeded: the revision needs 192 vCPUs" in out
    rc, out, _ = run_cli(monkeypatch, capsys, tmp_path, "plan", "ws", "--format", "json", *flags)
    [fam] = json.loads(out)["checks"]["capacity"]["families"]
    assert fam == {
        "family": AMSR_FAMILY,
        "neededVcpus": 192,
        "freeVcpus": 40,
        "shortVcpus": 152,
        "workspaces": ["team-a/big"],
        "vcpusPerWorkspace": {"team-a/big": 192},
    }
    # the reads are the real ones, with their api-versions, and nothing is written
    reads = {(r.method, r.path.split("/providers/")[-1]) for r in arm.requests if "/providers/" in r.path}
    assert ("GET", "Microsoft.Compute/locations/eastus/usages") in reads
    assert ("GET", "Microsoft.Compute/skus") in reads
    assert {r.method for r in arm.requests if "oauth2" not in r.path} == {"GET"}
    assert all(r.api_version for r in arm.requests if "oauth2" not in r.path)


def test_workspaces_of_one_family_count_together_and_an_owned_pool_only_by_its_growth(
    arm, tmp_path, monkeypatch, capsys
):
    import git

    arm.set_usage(AMSR_FAMILY, current=192, limit=300)  # big's 2 nodes already run
    repo = git.Repo.init(tmp_path, initial_branch="main")
    write(tmp_path, {"ws/big.yaml": BIG})
    repo.index.add(["ws/big.yaml"])
    repo.index.commit("big", author=git.Actor("t", "t@x"), committer=git.Actor("t", "t@x"))
    write(
        tmp_path, {"ws/big2.yaml": BIG.replace("name: big", "name: big2").replace("apps: big", "apps: big2")}
    )
    flags = azure_env(monkeypatch, arm)
    _, out, _ = run_cli(monkeypatch, capsys, tmp_path, "plan", "ws", "--base", "HEAD", *flags)
    # big is unchanged (its pool is in the 192 used); big2 needs 192 of the 108 free
    assert f"{AMSR_FAMILY}: needs 192 vCPUs in eastus, 108 free (192/300 used): SHORT by 84" in out, out
    assert "team-a/big2: this will fail with QuotaExceeded" in out and "team-a/big:" not in out
    assert "  team-a/big2: +192 vCPUs" in out
    # without a base, both are new: 384 vCPUs together, each named with its share
    _rc, out, _ = run_cli(monkeypatch, capsys, tmp_path, "plan", "ws", *flags)
    assert f"{AMSR_FAMILY}: needs 384 vCPUs" in out
    assert "  team-a/big: +192 vCPUs\n    team-a/big2: +192 vCPUs" in out


def test_a_size_restricted_in_the_clusters_zone_says_where_it_is_offered(arm, tmp_path, monkeypatch, capsys):
    write(tmp_path, {"ws/oss.yaml": OSS})
    _, out, _ = run_cli(monkeypatch, capsys, tmp_path, "plan", "ws", *azure_env(monkeypatch, arm))
    assert (
        f"team-a/oss: {ASR} is not available for this subscription in zone(s) 1 of eastus, where the "
        "cluster's nodes run; it is offered in eastus zone(s) 2, and in: southcentralus (zones 1, 2, 3)"
    ) in out, out
    assert f"{ASR_FAMILY}: needs 96 vCPUs in eastus, 200 free (0/200 used): fits" in out
    # a size not sold in the region at all
    arm.add_sku(
        "Standard_NC40ads_H100_v5",
        family="StandardNCadsH100v5Family",
        vcpus=40,
        gpus=1,
        locations={"westeurope": ["1"]},
    )
    arm.add_sku(
        "Standard_NC24ads_A100_v4",
        family="StandardNCADSA100v4Family",
        vcpus=24,
        gpus=1,
        locations={"eastus": ["1"], "westus3": []},
        restrictions=[location_restriction("eastus")],
    )
    write(tmp_path, {"ws/h.yaml": gpu_ws("h", "phi-4-mini-instruct", "Standard_NC40ads_H100_v5")})
    write(tmp_path, {"ws/a.yaml": gpu_ws("a", "phi-4-mini-instruct", "Standard_NC24ads_A100_v4")})
    _rc, out, _ = run_cli(monkeypatch, capsys, tmp_path, "plan", "ws", *azure_env(monkeypatch, arm))
    assert (
        "team-a/h: Standard_NC40ads_H100_v5 is not offered in eastus; it is offered in: westeurope (zones 1)"
        in out
    )
    assert (
        "team-a/a: Standard_NC24ads_A100_v4 is restricted for this subscription in eastus; it is offered in: westus3"
    ) in out, out


def test_no_reader_role_or_throttling_leave_the_plan_standing_and_say_why(arm, tmp_path, monkeypatch, capsys):
    write(tmp_path, {"ws/big.yaml": BIG})
    flags = azure_env(monkeypatch, arm)
    arm.fail_next(
        authorization_failed(
            f"/subscriptions/{arm.subscription_id}", action="Microsoft.Compute/locations/usages/read"
        ),
        api="usages",
    )
    rc, out, _ = run_cli(monkeypatch, capsys, tmp_path, "plan", "ws", *flags)
    assert rc == 0 and "+ team-a/big" in out
    assert (
        "quota unknown: the identity kaito-gitops runs as may not read compute quota in eastus in subscription "
        f"{arm.subscription_id} (AuthorizationFailed); grant it the Reader role on the subscription"
    ) in out, out
    assert f"{AMSR_FAMILY}: needs 192 vCPUs in eastus; quota unknown" in out
    # a short Retry-After is waited out once
    arm.fail_next(throttled(retry_after=1), api="skus")
    t = time.monotonic()
    rc, out, _ = run_cli(monkeypatch, capsys, tmp_path, "plan", "ws", *flags)
    assert "SHORT by 152" in out and "unknown" not in out and time.monotonic() - t >= 1
    # a long one is not: the plan comes at once, saying what is unknown and for how long
    arm.fail_next(throttled(retry_after=120), api="usages", times=5)
    t = time.monotonic()
    rc, out, _ = run_cli(monkeypatch, capsys, tmp_path, "plan", "ws", *flags)
    assert rc == 0 and time.monotonic() - t < 30
    assert "quota unknown: ARM throttled reading compute quota in eastus (429); it asks to wait 120s" in out


def test_the_reader_reads_once_per_ttl_and_backs_off_after_a_long_429(arm):
    reader = AzureFactsReader(
        arm.client(), arm.compute_client(), arm.subscription_id, arm.resource_group, arm.cluster, ttl=60
    )
    a = reader.facts([(AMSR,)])
    calls = reader.calls
    b = reader.facts([(AMSR,)])
    assert a is b and reader.calls == calls == 3  # cluster, usages, SKUs of the location
    reader.ttl = 0
    arm.fail_next(throttled(retry_after=60), api="usages")
    c = reader.facts([(AMSR,)])
    assert "asks to wait 60s" in c.quota_unknown
    assert "asking again in 60s" in c.offers_unknown  # ARM throttles the subscription: wait it out
    d = reader.facts([(AMSR,)])  # inside the wait: usages are not asked again
    assert "asking again in" in d.quota_unknown
    assert sum(1 for r in arm.requests if r.path.endswith("/usages")) == 2


def test_the_pull_request_comment_shows_the_shortfall(arm, git_remote, tmp_path):
    from doubles.github_api import GitHubDouble

    gh = GitHubDouble()
    gh.start()
    gh.add_repo(OWNER, REPO)
    gh.add_token("bot-token", BOT, type="Bot")
    world = World(git_remote, gh, tmp_path)
    git_remote.write({"workspaces/readme.txt": "GPU workspaces\n"}, "base")
    open_pr(world, 3, {"workspaces/big.yaml": BIG, ".kaito-gitops.yaml": BUDGETS}, "add big")
    r = reviewer(git_remote, gh, tmp_path)
    r.azure = AzureFactsReader(
        arm.client(), arm.compute_client(), arm.subscription_id, arm.resource_group, arm.cluster
    )
    try:
        r.review_now(3)
        [c] = bot_comments(gh, 3)
        body = c["body"]
        assert ":warning: **Azure would refuse part of this plan**" in body
        assert "#### Quota and capacity in `eastus`" in body
        assert f"- :x: `{AMSR_FAMILY}`: needs 192 vCPUs, 40 free (56/96 used) — **short by 152**" in body
        assert "- :x: `team-a/big`: this will fail with QuotaExceeded" in body
        assert "- :white_check_mark: namespace team-a: 16 of 16 GPU(s), $65.54/h of $70.00/h" in body
        # a budget crossing in a pull request: the check fails, with both places linked
        open_pr(
            world,
            3,
            {"workspaces/big.yaml": BIG, ".kaito-gitops.yaml": BUDGETS, "workspaces/oss.yaml": OSS},
            "add oss",
        )
        r.review_now(3)
        [c] = bot_comments(gh, 3)
        assert ":x: **kaito-gitops: fix the errors below**" in c["body"]
        assert "[`.kaito-gitops.yaml:5`]" in c["body"] and "[`workspaces/oss.yaml:6`]" in c["body"]
    finally:
        r.close()
        gh.stop()


def test_the_docs_commands_parse_and_the_role_grants_exactly_the_reads():
    text = (ROOT / "docs" / "budgets.md").read_text()
    cmds = [c for lang, body in doc_blocks(text) if lang == "sh" for c in shell_lines(body)]
    kaito = [c for c in cmds if c[0] == "kaito-gitops"]
    assert kaito
    for c in kaito:
        build_parser().parse_args(c[1:])
    role = json.loads((ROOT / "deploy" / "azure" / "quota-reader-role.json").read_text())
    assert sorted(role["Actions"]) == [
        "Microsoft.Compute/locations/usages/read",
        "Microsoft.Compute/skus/read",
        "Microsoft.ContainerService/managedClusters/read",
    ]
    assert role["Name"] in text and not role["DataActions"]
    for block in [b for lang, b in doc_blocks(text) if lang == "yaml"]:
        assert "budgets:" in block
