"""InferenceSet: read as Kaito defines it, checked with Kaito's webhook rules (mirrored from
api/v1beta1/inferenceset_validation_test.go) and ours (autoscaling bounds, nodeCountLimit),
every finding at the set's own file:line:col; members planned as workspaces `<set>-<index>`, and
one Service `<set>` in front of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.inferenceset import LABEL_CREATED_BY, LABEL_MEMBER
from reconciler.planning import plan_revision

KAITO_EXAMPLES = Path(__file__).parent / "fixtures" / "kaito-inferenceset"

SET = """\
apiVersion: kaito.sh/v1beta1
kind: InferenceSet
metadata:
  name: phi
  namespace: llm
  annotations: {}
spec:
  replicas: 2
  nodeCountLimit: 4
  labelSelector:
    matchLabels:
      apps: phi
  template:
    resource:
      instanceType: Standard_NC24ads_A100_v4
    inference:
      preset:
        name: phi-4-mini-instruct
"""


def errors(rev):
    return [f for f in rev.findings if f.is_error]


def where(rev, rule):
    return [(f.line, f.col, f.field, f.message) for f in rev.findings if f.rule == rule]


@pytest.mark.parametrize("example", sorted(p.name for p in KAITO_EXAMPLES.glob("*.yaml")))
def test_kaitos_own_examples_validate_and_plan_unchanged(validate, example):
    text = (KAITO_EXAMPLES / example).read_text()
    rev = validate({f"kaito/{example}": text})
    # what kaito-gitops refuses in any file, not about the set: a plain Secret's data in git, and
    # GPU partitions (MIG), which it does not run for workspaces either
    allowed = {"object-secret-in-git", "partition-unsupported"}
    assert [f.text() for f in errors(rev) if f.rule not in allowed] == []
    [s] = rev.inference_sets
    members = sorted(ws.name for ws in rev.workspaces)
    assert members == [f"{s.name}-{i}" for i in range(s.replicas)]
    if not any(f.rule == "partition-unsupported" for f in rev.findings):
        state = plan_revision(rev)
        assert sorted(k[1] for k in state.plans) == members
        assert ("Service", s.namespace, s.name) in state.objects, "one Service in front of the members"


def test_members_are_workspaces_of_the_template_and_the_set_service_selects_them(validate):
    rev = validate({"sets/phi.yaml": SET})
    assert errors(rev) == []
    state = plan_revision(rev)
    assert sorted(state.plans) == [("llm", "phi-0"), ("llm", "phi-1")]
    plan = state.plans[("llm", "phi-1")]
    assert plan.workspace.api_version == "kaito.sh/v1beta1" and plan.sku.name == "Standard_NC24ads_A100_v4"
    assert dict(plan.workspace.resource.match_labels) == {"apps": "phi"}  # spec.labelSelector
    sts = next(o for o in plan.objects if o["kind"] == "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[LABEL_CREATED_BY] == "phi" and pod_labels[LABEL_MEMBER] == "phi-1"
    svc = state.objects[("Service", "llm", "phi")].body
    assert svc["spec"]["selector"] == {LABEL_CREATED_BY: "phi"} and svc["spec"]["ports"][0]["port"] == 80


def test_replicas_zero_checks_the_template_and_runs_nothing(validate):
    rev = validate(
        SET.replace("replicas: 2", "replicas: 0").replace("phi-4-mini-instruct", "phi-4-mini-instrukt")
    )
    assert rev.workspaces == []
    [f] = [f for f in errors(rev) if f.rule == "preset-unknown"]
    assert (f.line, f.field) == (18, "spec.template.inference.preset.name"), f.text()


# Kaito's webhook (inferenceset_validation.go) and its table tests, as accept/refuse on one field
KAITO_CASES = [
    ("valid", SET, None),
    ("name not DNS-1123", SET.replace("name: phi\n", "name: Phi_Set\n", 1), "metadata.name"),
    ("negative replicas", SET.replace("replicas: 2", "replicas: -1"), "spec.replicas"),
    (
        "valid maintenance window",
        SET + "  autoUpgrade:\n    enabled: true\n    maintenanceWindow: {schedule: '0 2 * * 6'}\n",
        None,
    ),
    (
        "window without a schedule",
        SET + "  autoUpgrade:\n    maintenanceWindow: {duration: 4h}\n",
        "spec.autoUpgrade.maintenanceWindow",
    ),
    (
        "bad cron",
        SET + "  autoUpgrade:\n    maintenanceWindow: {schedule: '0 25 * * 6'}\n",
        "spec.autoUpgrade.maintenanceWindow.schedule",
    ),
    (
        "six cron fields",
        SET + "  autoUpgrade:\n    maintenanceWindow: {schedule: '0 0 2 * * 6'}\n",
        "spec.autoUpgrade.maintenanceWindow.schedule",
    ),
    (
        "zero duration",
        SET + "  autoUpgrade:\n    maintenanceWindow: {schedule: '@daily', duration: 0s}\n",
        "spec.autoUpgrade.maintenanceWindow.duration",
    ),
    (
        "bad upgrade strategy",
        SET + "  autoUpgrade: {strategy: Sideways}\n",
        "spec.autoUpgrade.strategy",
    ),
    (
        "BYO without an instanceType is fine",
        SET.replace("    resource:\n      instanceType: Standard_NC24ads_A100_v4\n", ""),
        None,
    ),
]


@pytest.mark.parametrize("name,text,field", KAITO_CASES, ids=[c[0] for c in KAITO_CASES])
def test_kaitos_webhook_rules(validate, name, text, field):
    byo = "instanceType" not in text
    rev = validate({"sets/phi.yaml": text}, byo_nodes=byo)
    got = sorted({f.field for f in errors(rev)})
    assert got == ([field] if field else []), [f.text() for f in errors(rev)]
    if field:
        assert rev.workspaces == [] or all(not rev.is_valid(ws) for ws in rev.workspaces), (
            "no member of a bad set runs"
        )


def test_a_partition_is_refused_for_a_set_as_for_a_workspace(validate):
    # Kaito's TestInferenceSetMIGImmutable refuses a changed partition; kaito-gitops runs none at all
    with_partition = SET.replace(
        "      instanceType: Standard_NC24ads_A100_v4\n", "      partition: {mode: mig, profile: 1g.10gb}\n"
    )
    rev = validate({"sets/phi.yaml": with_partition}, byo_nodes=True)
    assert {f.rule for f in errors(rev)} == {"partition-unsupported"}
    assert {f.field for f in errors(rev)} == {"spec.template.resource.partition"}


def annotated(**bounds) -> str:
    if not bounds:
        return SET
    lines = "".join(f'    scaling.kaito-gitops.io/{k.replace("_", "-")}: "{v}"\n' for k, v in bounds.items())
    return SET.replace("  annotations: {}\n", "  annotations:\n" + lines)


BOUNDS_CASES = [
    ("no bounds: fixed at replicas", annotated(), None, (2, 2)),
    ("scale to zero", annotated(min_replicas=0, max_replicas=3), None, (0, 3)),
    (
        "min above max",
        annotated(min_replicas=3, max_replicas=2),
        "scaling.kaito-gitops.io/min-replicas",
        None,
    ),
    ("negative", annotated(min_replicas=-1), "scaling.kaito-gitops.io/min-replicas", None),
    ("not a number", annotated(max_replicas="lots"), "scaling.kaito-gitops.io/max-replicas", None),
    ("max zero", annotated(min_replicas=0, max_replicas=0), "scaling.kaito-gitops.io/max-replicas", None),
    (
        "queue target zero",
        annotated(target_queue_per_replica=0),
        "scaling.kaito-gitops.io/target-queue-per-replica",
        None,
    ),
    ("bad idle window", annotated(scale_down_after="soon"), "scaling.kaito-gitops.io/scale-down-after", None),
    ("good idle window", annotated(min_replicas=0, max_replicas=2, scale_down_after="90s"), None, (0, 2)),
]


@pytest.mark.parametrize("name,text,key,bounds", BOUNDS_CASES, ids=[c[0] for c in BOUNDS_CASES])
def test_scaling_bounds(validate, name, text, key, bounds):
    rev = validate({"sets/phi.yaml": text})
    bad = [f for f in errors(rev) if f.rule == "scaling-bounds"]
    if key is None:
        assert errors(rev) == [], [f.text() for f in errors(rev)]
        [s] = rev.inference_sets
        assert (s.scaling.min_replicas, s.scaling.max_replicas) == bounds
    else:
        assert [f.field for f in bad] == [f"metadata.annotations.{key}"], [f.text() for f in bad]
        line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip().startswith(key + ":"))
        assert bad[0].line == line, "at the annotation's own line"


def test_node_count_limit_against_the_sizing(validate):
    # phi-4-mini needs 1 node of NC24ads_A100_v4 a replica
    small = SET.replace("nodeCountLimit: 4", "nodeCountLimit: 1")
    [f] = where(validate({"s.yaml": small}), "inferenceset-node-count-limit")
    assert f[:3] == (9, 19, "spec.nodeCountLimit") and "replicas 2 need 2 node(s)" in f[3], f
    for_min = annotated(min_replicas=2, max_replicas=4).replace("nodeCountLimit: 4", "nodeCountLimit: 1")
    [f] = where(validate({"s.yaml": for_min}), "inferenceset-node-count-limit")
    assert "replicas 2 need 2 node(s)" in f[3]
    rev = validate({"s.yaml": annotated(min_replicas=0, max_replicas=6)})
    [f] = [f for f in rev.findings if f.rule == "inferenceset-node-count-limit"]
    assert not f.is_error and "scaling stops at 4 replica(s)" in f.message
    assert errors(rev) == []


def test_bounds_on_a_workspace_are_an_error_naming_the_annotation(validate):
    from support.workspaces import SMOL

    ws = SMOL.replace(
        "metadata:\n", 'metadata:\n  annotations:\n    scaling.kaito-gitops.io/max-replicas: "3"\n', 1
    )
    [f] = [f for f in errors(validate({"ws.yaml": ws})) if f.rule == "scaling-bounds-on-workspace"]
    assert (
        f.field == "metadata.annotations.scaling.kaito-gitops.io/max-replicas" and "InferenceSet" in f.message
    )


def test_did_you_mean_and_bad_types_point_at_the_set(validate):
    rev = validate(
        {
            "s.yaml": SET.replace("nodeCountLimit: 4", "nodeCountLimt: 4").replace(
                "replicas: 2", "replicas: two"
            )
        }
    )
    by_field = {f.field: f for f in errors(rev)}
    assert "spec.nodeCountLimt" in by_field and "nodeCountLimit" in by_field["spec.nodeCountLimt"].message
    assert by_field["spec.replicas"].line == 8
    assert rev.workspaces == [], "a set the schema refuses has no members"


def test_a_member_name_taken_by_a_workspace_is_an_error_for_both(validate):
    from support.workspaces import smol_ws

    rev = validate(
        {"s.yaml": SET.replace("namespace: llm", "namespace: default"), "w.yaml": smol_ws("phi-0")}
    )
    assert {f.path for f in errors(rev) if f.rule == "workspace-duplicate"} == {"s.yaml", "w.yaml"}


def test_the_daemon_applies_the_members_and_the_set_service_and_follows_replicas_in_git(
    kube_api, git_remote, tmp_path
):
    from doubles.kube_fixtures import gpu_node
    from ruamel.yaml import YAML
    from test_daemon_kube import make, names

    from reconciler.report.statusview import status_files

    for member in ("phi-0", "phi-1"):  # the nodes a provisioner would bring up for each member
        labels = {"apps": "phi", "kaito.sh/workspace": member, "kaito.sh/workspacenamespace": "default"}
        kube_api.put_object(gpu_node(f"node-{member}", labels))
    set_yaml = SET.replace("namespace: llm", "namespace: default")
    git_remote.write({"workspaces/phi.yaml": set_yaml})
    d = make(kube_api, git_remote, tmp_path)
    d.run_pass()
    assert names(kube_api, "StatefulSet") == ["phi-0", "phi-1"]
    svc = kube_api.get_object("v1", "Service", "default", "phi")
    assert svc["spec"]["selector"] == {LABEL_CREATED_BY: "phi"}
    kube_api.reconcile_workloads()
    kube_api.set_pod_phase("default", "phi-0-0", "Running")
    kube_api.reconcile_workloads()
    d.run_pass()
    files = status_files(d.reports(), d.revision, (), d.validated.inference_sets)
    doc = YAML(typ="safe").load(files["status/default/phi.yaml"])
    assert doc["kind"] == "InferenceSetStatus" and (doc["replicas"], doc["readyReplicas"]) == (2, 1), doc
    assert doc["members"] == [
        {"name": "phi-0", "state": "Ready"},
        {"name": "phi-1", "state": doc["members"][1]["state"]},
    ]
    assert "| default/phi | Progressing | 1/2 | 2 | phi-0 (Ready), phi-1 (" in files["STATUS.md"], files[
        "STATUS.md"
    ]
    # one replica fewer in git: the last member goes, the set's Service stays
    git_remote.write({"workspaces/phi.yaml": set_yaml.replace("replicas: 2", "replicas: 1")}, "one replica")
    d.run_pass()
    assert names(kube_api, "StatefulSet") == ["phi-0"] and kube_api.get_object(
        "v1", "Service", "default", "phi"
    )
    # a schema error in the set: its member and its Service stay as they were (last good version)
    broken = set_yaml.replace("replicas: 2", "replicas: 1").replace(
        "  annotations: {}\n", "  annotations:\n    scaling.kaito-gitops.io/min-replicas: 1\n"
    )
    git_remote.write({"workspaces/phi.yaml": broken}, "an unquoted annotation")
    d.run_pass()
    assert names(kube_api, "StatefulSet") == ["phi-0"] and kube_api.get_object(
        "v1", "Service", "default", "phi"
    )
    assert d.findings[("default", "phi-0")], "the member's status says why it is held"
    # the set leaves git: members and Service are pruned with it
    git_remote.write({"workspaces/phi.yaml": None, "workspaces/other.yaml": "# nothing\n"}, "remove the set")
    d.run_pass()
    assert (
        names(kube_api, "StatefulSet") == []
        and kube_api.get_object("v1", "Service", "default", "phi") is None
    )
    d.close()


def test_plans_and_pr_comments_show_a_set_as_one_entry_with_its_cost_at_min_and_max(validate):
    from reconciler import planview
    from reconciler.plandiff import diff_states
    from reconciler.report.review_comment import comment_body

    rev = validate({"sets/phi.yaml": annotated(min_replicas=0, max_replicas=3)})
    diff = diff_states(None, plan_revision(rev))
    text = planview.text(diff)
    assert "+ llm/phi  InferenceSet, 2 replica(s), scales 0-3  (sets/phi.yaml)" in text, text
    assert "members: + phi-0, + phi-1" in text and "+ llm/phi-0" not in text
    assert "cost: $7.35/h for 2; $0.00/h at min 0, $11.02/h at max 3" in text, text
    md = planview.markdown(diff)
    assert "| `llm/phi` (InferenceSet, 2 replica(s), scales 0-3) | add | +2 | +$7.35 |" in md, md
    body = comment_body(
        diff, rev.findings, repo_html="https://github.com/o/r", head_sha="a" * 40, base_ref="main"
    )
    assert body.count("<b>llm/phi</b>") == 1 and "<b>llm/phi-0</b>" not in body, body


def test_a_workspace_named_like_a_set_collides_at_the_service(validate):
    from support.workspaces import smol_ws

    rev = validate({"s.yaml": SET.replace("namespace: llm", "namespace: default"), "w.yaml": smol_ws("phi")})
    assert any(f.is_error and f.path in ("s.yaml", "w.yaml") for f in rev.findings), [
        f.text() for f in rev.findings
    ]


def test_a_name_too_long_for_its_last_member_is_one_finding_and_no_member_runs(validate):
    name = "a" * 50
    rev = validate(
        {
            "s.yaml": SET.replace("name: phi\n", f"name: {name}\n", 1)
            .replace("replicas: 2", "replicas: 11")
            .replace("nodeCountLimit: 4", "nodeCountLimit: 20")
        }
    )
    [f] = errors(rev)
    assert (f.rule, f.field, f.line) == ("name-too-long", "metadata.name", 4) and f"{name}-10" in f.message, (
        f.text()
    )
    assert plan_revision(rev).plans == {}, "a set is never applied in part"


def test_a_huge_replica_count_is_refused_before_any_member_is_made(validate):
    rev = validate({"s.yaml": SET.replace("replicas: 2", "replicas: 1000000000000")})
    assert [(f.rule, f.field) for f in errors(rev)] == [("inferenceset-replicas", "spec.replicas")]
    assert rev.workspaces == []


def test_a_workspace_cannot_join_a_set_by_its_label(validate):
    from support.workspaces import smol_ws

    intruder = smol_ws("other").replace(
        "metadata:\n", "metadata:\n  labels:\n    inferenceset.kaito.sh/created-by: phi\n", 1
    )
    rev = validate({"s.yaml": SET, "w.yaml": intruder})
    [warn] = [f for f in rev.findings if f.rule == "inferenceset-label-on-workspace"]
    assert warn.path == "w.yaml" and not warn.is_error
    [plan] = [p for k, p in plan_revision(rev).plans.items() if k[1] == "other"]
    sts = next(o for o in plan.objects if o["kind"] == "StatefulSet")
    assert LABEL_CREATED_BY not in sts["spec"]["template"]["metadata"]["labels"], (
        "not behind the set's Service"
    )


def test_template_annotations_are_reported_where_they_are_written(validate):
    text = SET.replace(
        "  template:\n", "  template:\n    metadata:\n      annotations:\n        kaito.sh/runtime: vllm\n"
    )
    [f] = [f for f in validate({"s.yaml": text}).findings if f.rule == "annotation-runtime-ignored"]
    assert (f.line, f.field) == (16, "spec.template.metadata.annotations.kaito.sh/runtime"), f.text()


def test_replicas_outside_the_bounds_and_a_set_service_held_while_the_set_is_wrong(validate):
    rev = validate({"s.yaml": annotated(min_replicas=0, max_replicas=1)})
    [f] = errors(rev)
    assert (f.rule, f.field) == (
        "scaling-bounds",
        "spec.replicas",
    ) and "outside the scaling bounds 0-1" in f.message
    assert ("Service", "llm", "phi") in rev.invalid_objects and set(rev.held_sets) == {("llm", "phi")}


def test_a_set_that_scales_to_zero_gets_an_activator_and_a_members_service(validate):
    rev = validate({"sets/phi.yaml": annotated(min_replicas=0, max_replicas=3)})
    state = plan_revision(rev)
    assert {k for k in state.objects if k[2].startswith("phi")} == {
        ("Service", "llm", "phi"),
        ("Service", "llm", "phi-members"),
        ("Deployment.apps", "llm", "phi-activator"),
    }
    fixed = plan_revision(validate({"sets/phi.yaml": annotated(min_replicas=1, max_replicas=3)}))
    assert [k for k in fixed.objects if k[2].startswith("phi")] == [("Service", "llm", "phi")]


def test_a_set_with_no_replica_in_git_is_planned_from_its_template_with_its_cost_at_max(validate):
    from reconciler import planview
    from reconciler.plandiff import diff_states

    rev = validate(
        {"sets/phi.yaml": annotated(min_replicas=0, max_replicas=3).replace("replicas: 2", "replicas: 0")}
    )
    state = plan_revision(rev)
    assert state.plans == {} and ("llm", "phi") in state.set_templates, "nothing runs; the template is sized"
    text = planview.text(diff_states(None, state))
    assert "+ llm/phi  InferenceSet, 0 replica(s), scales 0-3  (sets/phi.yaml)" in text, text
    assert "members: none until scaled up (replicas 0)" in text
    assert "cost: $0.00/h for 0; $0.00/h at min 0, $11.02/h at max 3" in text, text
    again = planview.text(diff_states(state, state))
    assert "llm/phi" not in again, "an unchanged set is not in the plan"
    base = plan_revision(rev)
    a100x2 = validate(
        {
            "sets/phi.yaml": annotated(min_replicas=0, max_replicas=3)
            .replace("replicas: 2", "replicas: 0")
            .replace("Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4")
        }
    )
    changed = planview.text(diff_states(base, plan_revision(a100x2)))
    assert "~ llm/phi  InferenceSet, 0 replica(s), scales 0-3" in changed, changed


def test_members_the_autoscaler_may_add_must_not_be_named_like_a_workspace(validate):
    from support.workspaces import smol_ws

    set_yaml = annotated(min_replicas=1, max_replicas=3).replace("namespace: llm", "namespace: default")
    rev = validate({"s.yaml": set_yaml, "w.yaml": smol_ws("phi-2")})
    found = {(f.path, f.rule) for f in rev.findings if f.is_error}
    assert found == {("s.yaml", "workspace-duplicate"), ("w.yaml", "workspace-duplicate")}, found
    assert ("default", "phi") in rev.held_sets, "the autoscaler adds nothing to it"


def test_a_template_error_in_a_set_with_no_replica_holds_it(validate):
    bad = annotated(min_replicas=0, max_replicas=3).replace("replicas: 2", "replicas: 0")
    rev = validate({"s.yaml": bad.replace("phi-4-mini-instruct", "phi-4-mini-instruc")})
    assert ("llm", "phi") in rev.held_sets and rev.held_sets[("llm", "phi")][0].field == (
        "spec.template.inference.preset.name"
    )


def _render_daemon(remote, tmp_path):
    from reconciler.daemon import Daemon, DaemonSettings
    from reconciler.provisioners.none import NoneProvisioner
    from reconciler.source.git import GitSource
    from reconciler.targets.render import RenderTarget

    return Daemon(
        GitSource(remote.url, "main", tmp_path / "cache"),
        RenderTarget(tmp_path / "out"),
        NoneProvisioner(),
        DaemonSettings(paths=["workspaces"], target_name="render", workers=2),
    )


AUTOSCALED = annotated(min_replicas=0, max_replicas=3).replace("namespace: llm", "namespace: default")


def members_of(d) -> list[str]:
    return sorted(k[1] for k in d.desired if k[1].startswith("phi-"))


def test_the_autoscaler_stops_where_a_budget_would_be_crossed(git_remote, tmp_path):
    # one member is an A100 at $3.67/h: a $8/h cap holds two
    budget = "budgets:\n  total:\n    pricePerHour: 8\n"
    git_remote.write(
        {
            ".kaito-gitops.yaml": budget,
            "workspaces/phi.yaml": AUTOSCALED.replace("replicas: 2", "replicas: 1"),
        }
    )
    d = _render_daemon(git_remote, tmp_path)
    d.run_pass()
    d.scale(("default", "phi"), 3)
    d.run_pass()
    assert members_of(d) == ["phi-0", "phi-1"] and d.set_counts[("default", "phi")] == 2


def test_a_set_with_an_error_keeps_the_members_the_autoscaler_runs_now(git_remote, tmp_path):
    git_remote.write({"workspaces/phi.yaml": AUTOSCALED.replace("replicas: 2", "replicas: 1")})
    d = _render_daemon(git_remote, tmp_path)
    d.run_pass()
    d.scale(("default", "phi"), 3)
    d.run_pass()
    assert members_of(d) == ["phi-0", "phi-1", "phi-2"]
    git_remote.write(
        {"workspaces/phi.yaml": AUTOSCALED.replace("phi-4-mini-instruct", "phi-4-mini-instruc")}, "typo"
    )
    d.run_pass()
    assert members_of(d) == ["phi-0", "phi-1", "phi-2"], "neither back to replicas in git nor pruned"
    d.scale(("default", "phi"), 0)  # the autoscaler leaves a held set alone; a stray ask changes nothing
    d.run_pass()
    assert members_of(d) == ["phi-0", "phi-1", "phi-2"]
    git_remote.write({"workspaces/phi.yaml": AUTOSCALED.replace("replicas: 2", "replicas: 1")}, "fixed")
    d.run_pass()
    assert members_of(d) == ["phi-0", "phi-1", "phi-2"], "the count carries on from where it was"
