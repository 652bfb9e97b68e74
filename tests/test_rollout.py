"""A changed InferenceSet template rolls across its members under spec.updateStrategy.

The rule as a table (rollout.roll is pure), then the daemon against the API double: one member
at a time from the highest index, a member that is not ready stops the rollout there, and the
set's status says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.rollout import Strategy, most_unavailable, roll, strategy


@dataclass
class P:  # a plan, as far as a rollout looks at one
    objects: list


OLD, NEW = P(["old"]), P(["new"])
MEMBERS = [(i, ("default", f"phi-{i}")) for i in range(3)]
KEYS = [k for _, k in MEMBERS]


def test_one_member_at_a_time_from_the_highest_index_while_the_others_are_ready():
    applied = dict.fromkeys(KEYS, OLD)
    r = roll(MEMBERS, dict.fromkeys(KEYS, NEW), applied, set(KEYS), Strategy())
    assert [r.plans[k] for k in KEYS] == [OLD, OLD, NEW] and (r.updated, r.total) == (0, 3)
    applied[KEYS[2]] = NEW  # applied, not ready yet: nothing else moves, and the status says why
    r = roll(MEMBERS, dict.fromkeys(KEYS, NEW), applied, set(KEYS[:2]), Strategy())
    assert [r.plans[k] for k in KEYS] == [OLD, OLD, NEW] and r.waiting == "waiting for phi-2 to be ready"
    r = roll(MEMBERS, dict.fromkeys(KEYS, NEW), applied, set(KEYS), Strategy())
    assert [r.plans[k] for k in KEYS] == [OLD, NEW, NEW] and r.updated == 1 and r.waiting == ""


def test_max_unavailable_partition_and_on_delete():
    desired, applied = dict.fromkeys(KEYS, NEW), dict.fromkeys(KEYS, OLD)
    r = roll(MEMBERS, desired, applied, set(KEYS), Strategy(max_unavailable=2))
    assert [r.plans[k] for k in KEYS] == [OLD, NEW, NEW]
    r = roll(MEMBERS, desired, applied, set(KEYS), Strategy(max_unavailable="100%", partition=1))
    assert [r.plans[k] for k in KEYS] == [OLD, NEW, NEW], "members below the partition keep the old template"
    r = roll(MEMBERS, desired, applied, set(KEYS), Strategy(on_delete=True))
    assert [r.plans[k] for k in KEYS] == [OLD, OLD, OLD]
    r = roll(MEMBERS, desired, {KEYS[0]: OLD}, set(KEYS), Strategy(on_delete=True))
    assert [r.plans[k] for k in KEYS] == [OLD, NEW, NEW], "a member never applied gets the new template"
    assert most_unavailable(Strategy("25%"), 3) == 1 and most_unavailable(Strategy("50%"), 8) == 4
    assert strategy({"updateStrategy": {"rollingUpdate": {"maxUnavailable": 2, "partition": 1}}}) == Strategy(
        2, 1
    )
    assert strategy({}) == Strategy()


def test_the_daemon_rolls_a_template_change_one_member_at_a_time_and_stops_at_one_not_ready(
    kube_api, git_remote, tmp_path
):
    from doubles.kube_fixtures import gpu_node
    from test_daemon_kube import make, names
    from test_inferenceset import SET

    from reconciler.report.statusview import status_files

    def label(sts):  # which template the member's StatefulSet runs
        spec = str(kube_api.get_object("apps/v1", "StatefulSet", "default", sts)["spec"]["template"])
        return "b" if "phi-3.5-mini-instruct" in spec else "a"

    for member in ("phi-0", "phi-1", "phi-2"):
        labels = {"apps": "phi", "kaito.sh/workspace": member, "kaito.sh/workspacenamespace": "default"}
        kube_api.put_object(gpu_node(f"node-{member}", labels))
    set_yaml = SET.replace("namespace: llm", "namespace: default").replace("replicas: 2", "replicas: 3")
    git_remote.write({"workspaces/phi.yaml": set_yaml})
    d = make(kube_api, git_remote, tmp_path)

    def settle(ready=("phi-0", "phi-1", "phi-2")):
        for _ in range(2):
            d.run_pass()
            kube_api.reconcile_workloads()
            for m in ("phi-0", "phi-1", "phi-2"):
                kube_api.set_pod_phase("default", f"{m}-0", "Running" if m in ready else "Pending")
            kube_api.reconcile_workloads()
        d.run_pass()

    settle()
    assert names(kube_api, "StatefulSet") == ["phi-0", "phi-1", "phi-2"]
    assert [label(m) for m in ("phi-0", "phi-1", "phi-2")] == ["a", "a", "a"]

    git_remote.write(
        {"workspaces/phi.yaml": set_yaml.replace("phi-4-mini-instruct", "phi-3.5-mini-instruct")}, "phi-3.5"
    )
    settle(ready=("phi-0", "phi-1"))  # the updated member does not come up
    assert [label(m) for m in ("phi-0", "phi-1", "phi-2")] == ["a", "a", "b"]
    r = d.rollouts[("default", "phi")]
    assert (r.updated, r.total, r.waiting) == (1, 3, "waiting for phi-2 to be ready")
    doc = status_files(d.reports(), d.revision, (), d.validated.inference_sets, rollouts=d.rollouts)
    assert "waiting: waiting for phi-2 to be ready" in doc["status/default/phi.yaml"], doc[
        "status/default/phi.yaml"
    ]

    for _ in range(3):  # it comes up: the rollout goes on, one member a pass
        settle()
    assert [label(m) for m in ("phi-0", "phi-1", "phi-2")] == ["b", "b", "b"]
    assert ("default", "phi") not in d.rollouts
