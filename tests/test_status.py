"""reconciler.status: Kaito's conditions and states from observations (pure; no servers needed).

The daemon tests reach these through the API double; here each rule is pinned on its own,
including the ones a double makes awkward (eviction, node pressure, ordering of problems).
"""

from __future__ import annotations

import pytest

from reconciler.status import (
    MESSAGE_LIMIT,
    JobState,
    NodeState,
    Observation,
    PodState,
    Progress,
    ResourceStatus,
    WorkspaceStatus,
    carry_times,
    derive,
    failed_status,
)

NODES_OK = ResourceStatus(True, "", nodes=("n1",))
NO_NODES = ResourceStatus(False, "NodeProvisioning", "agent pool ws1 is Creating")


def conds(s: WorkspaceStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in s.conditions}


def serving(**kw) -> Observation:
    base = dict(kind="inference", applied=True, replicas=1, ready_replicas=1, endpoint="http://ws.default")
    return Observation(**{**base, **kw})


def test_ready_inference():
    s = derive(serving(), NODES_OK)
    assert s.state == "Ready" and s.endpoint == "http://ws.default" and s.worker_nodes == ("n1",)
    assert conds(s) == {
        "ResourceReady": ("True", "workspaceResourceStatusSuccess"),
        "InferenceReady": ("True", "WorkspaceInferenceStatusSuccess"),
        "WorkspaceSucceeded": ("True", "workspaceSucceeded"),
    }


def test_no_nodes_yet_is_pending_with_the_provisioners_reason():
    s = derive(serving(applied=False, replicas=0, ready_replicas=0), NO_NODES)
    assert s.state == "Pending" and s.endpoint == ""
    c = s.condition("ResourceReady")
    assert (c.status, c.reason, c.message) == ("False", "NodeProvisioning", "agent pool ws1 is Creating")
    assert conds(s)["InferenceReady"] == ("False", "WorkspaceInferenceStatusPending")


def test_pods_not_ready_yet():
    s = derive(serving(ready_replicas=0, pods=(PodState("ws-0", "Running", node="n1"),)), NODES_OK)
    assert s.state == "NotReady" and s.condition("InferenceReady").message == "0/1 pods ready"
    assert conds(s)["WorkspaceSucceeded"] == ("False", "workspacePending")


@pytest.mark.parametrize(
    "pods, reason, words",
    [
        (
            (PodState("ws-0", "Running", last_terminated_reason="OOMKilled"),),
            "ContainerOOMKilled",
            "OOMKilled",
        ),
        (
            (PodState("ws-0", "Pending", waiting_reason="ImagePullBackOff", waiting_message="not found"),),
            "ImagePullError",
            "cannot pull its image: not found",
        ),
        (
            (
                PodState(
                    "ws-0",
                    "Pending",
                    waiting_reason="CreateContainerConfigError",
                    waiting_message="no secret",
                ),
            ),
            "ContainerStartError",
            "no secret",
        ),
        (
            (PodState("ws-0", "Running", waiting_reason="CrashLoopBackOff"),),
            "ContainerCrashLoopBackOff",
            "keeps crashing",
        ),
        (
            (PodState("ws-0", "Failed", evicted_message="The node was low on resource: ephemeral-storage."),),
            "PodEvicted",
            "evicted: The node was low on resource",
        ),
        (
            (PodState("ws-0", "Pending", unschedulable_message="0/3 nodes have nvidia.com/gpu"),),
            "Unschedulable",
            "cannot be scheduled: 0/3 nodes",
        ),
        # OOM is named before a crash loop it causes, across pods
        (
            (
                PodState("ws-0", "Running", waiting_reason="CrashLoopBackOff"),
                PodState("ws-1", "Running", last_terminated_reason="OOMKilled"),
            ),
            "ContainerOOMKilled",
            "pod ws-1",
        ),
    ],
)
def test_pod_problems_fail_the_workspace_with_kaitos_reason(pods, reason, words):
    s = derive(serving(ready_replicas=0, pods=pods), NODES_OK)
    inf = s.condition("InferenceReady")
    assert s.state == "NotReady" and inf.reason == reason and words in inf.message
    assert conds(s)["WorkspaceSucceeded"] == ("False", "workspaceFailed")


def test_node_pressure_warns_when_ready_and_explains_when_not():
    nodes = (NodeState("n1", True, 1, pressure=("DiskPressure",)),)
    ready = derive(serving(nodes=nodes), NODES_OK)
    assert (
        ready.state == "Ready"
        and "warning: node n1 is low on disk" in ready.condition("ResourceReady").message
    )
    stuck = derive(
        serving(ready_replicas=0, nodes=(NodeState("n1", True, 1, pressure=("MemoryPressure",)),)), NODES_OK
    )
    assert stuck.condition("InferenceReady").reason == "NodeMemoryPressure"


def test_last_error_and_long_messages_are_bounded():
    huge = "x" * 1000
    s = derive(
        serving(ready_replicas=0, pods=(PodState("ws-0", "Pending", unschedulable_message=huge),)),
        NODES_OK,
        last_error="Kubernetes API 500",
    )
    assert all(len(c.message) <= MESSAGE_LIMIT for c in s.conditions)
    assert s.last_error == "Kubernetes API 500"
    pending = derive(serving(applied=False, replicas=0, ready_replicas=0), NODES_OK, last_error="timeout")
    assert (
        pending.condition("InferenceReady").message
        == "workload not applied yet (last reconcile error: timeout)"
    )


def test_local_process_error_wins():
    s = derive(serving(ready_replicas=0, process_error="exited with code 1: CUDA not available"), NODES_OK)
    assert conds(s)["InferenceReady"] == ("False", "ContainerStartError")


def tuning(**kw) -> Observation:
    return Observation(kind="tuning", applied=True, **kw)


def test_tuning_states():
    pending = derive(tuning(), NO_NODES)
    assert pending.state == "Pending" and pending.condition("JobStarted").message == "waiting for nodes"
    progress = Progress(step=30, total_steps=120, loss=1.25)
    running = derive(tuning(job=JobState(active=1), progress=progress), NODES_OK)
    assert running.state == "Running" and running.progress == progress
    assert running.condition("WorkspaceSucceeded").message == "step 30/120"
    done = derive(tuning(job=JobState(succeeded=1)), NODES_OK)
    assert done.state == "Succeeded" and conds(done)["WorkspaceSucceeded"] == ("True", "workspaceSucceeded")
    failed = derive(tuning(job=JobState(failed=3, failed_message="BackoffLimitExceeded")), NODES_OK)
    assert failed.state == "Failed" and conds(failed)["JobStarted"] == (
        "False",
        "WorkspaceTuningJobStatusFailed",
    )
    assert failed.condition("WorkspaceSucceeded").message == "BackoffLimitExceeded"
    # a failed attempt with a retry running is still Running, not Failed
    assert derive(tuning(job=JobState(active=1, failed=1)), NODES_OK).state == "Running"
    blocked = derive(tuning(pods=(PodState("t-0", "Pending", waiting_reason="ErrImagePull"),)), NODES_OK)
    assert blocked.state == "Pending" and conds(blocked)["JobStarted"] == ("False", "ImagePullError")


def test_rendered_target_says_so():
    s = derive(Observation(kind="inference", applied=True, rendered=True), NODES_OK)
    assert s.state == "Rendered" and {c.reason for c in s.conditions} == {"Rendered"}


def test_transition_times_move_only_when_status_changes():
    first = carry_times(None, derive(serving(ready_replicas=0), NODES_OK), "t1")
    assert {c.last_transition_time for c in first.conditions} == {"t1"}
    again = carry_times(first, derive(serving(ready_replicas=0), NODES_OK), "t2")
    assert again == first
    ready = carry_times(again, derive(serving(), NODES_OK), "t3")
    times = {c.type: c.last_transition_time for c in ready.conditions}
    assert times == {"ResourceReady": "t1", "InferenceReady": "t3", "WorkspaceSucceeded": "t3"}


def test_failed_status_for_invalid_workspaces():
    s = failed_status("tuning", "workspaces/a.yaml:3:5 resource.instanceType: unknown SKU")
    assert s.state == "Failed" and {c.reason for c in s.conditions} == {"InvalidWorkspace", "workspaceFailed"}
    assert failed_status("inference", "bad").state == "NotReady"


def test_progress_records_from_logs_tolerate_junk():
    from reconciler.targets.kubernetes import parse_progress_log

    log = "\n".join(
        [
            '{"step": 3, "total_steps": 10, "loss": 1.5}',
            'plain text with "step" in it',
            '{"step": 4, "total_steps": NaN, "loss": Infinity}',
            '{"step": "x"}',
        ]
    )
    p = parse_progress_log(log)
    assert (p.step, p.total_steps, p.loss) == (4, 0, None)  # the newest record, non-numbers dropped
    assert parse_progress_log('{"step": NaN}\n{"step": 2, "loss": 0.5}\n').loss == 0.5
    assert parse_progress_log("no records") is None
