"""Workspace status: Kaito's conditions and state, derived from what targets observe.

Pure: observations in, conditions out. Targets (Kubernetes, local processes) and
provisioners report what they see in the small dataclasses below; `derive` turns that into
ResourceReady / InferenceReady / JobStarted / WorkspaceSucceeded with Kaito's reasons, and
`carry_times` keeps lastTransitionTime fixed unless a condition's status changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

MESSAGE_LIMIT = 256  # Kaito truncates condition messages to 256 characters

# Kaito's reasons (api/v1beta1 + workspace controller)
RESOURCE_OK = "workspaceResourceStatusSuccess"
RESOURCE_NOT_READY = "workspaceResourceStatusNotReady"
INFERENCE_OK = "WorkspaceInferenceStatusSuccess"
INFERENCE_PENDING = "WorkspaceInferenceStatusPending"
JOB_STARTED = "WorkspaceTuningJobStatusStarted"
JOB_PENDING = "WorkspaceTuningJobStatusPending"
JOB_FAILED = "WorkspaceTuningJobStatusFailed"
SUCCEEDED = "workspaceSucceeded"
PENDING = "workspacePending"
FAILED = "workspaceFailed"


@dataclass(frozen=True)
class NodeState:
    name: str
    ready: bool
    gpus: int  # allocatable nvidia.com/gpu
    pressure: tuple[str, ...] = ()  # MemoryPressure, DiskPressure, PIDPressure
    gpu_labels: tuple[tuple[str, str], ...] = ()  # nvidia.com/* and GFD labels, for bring-your-own nodes


@dataclass(frozen=True)
class PodState:
    name: str
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    ready: bool = False
    waiting_reason: str = ""  # ImagePullBackOff, ErrImagePull, CrashLoopBackOff, CreateContainerError, ...
    waiting_message: str = ""
    last_terminated_reason: str = ""  # OOMKilled, Error, ...
    unschedulable_message: str = ""
    evicted_message: str = ""
    node: str = ""


@dataclass(frozen=True)
class JobState:
    active: int = 0
    ready: int = 0
    succeeded: int = 0
    failed: int = 0
    failed_message: str = ""


@dataclass(frozen=True)
class Progress:
    """Tuning progress as the trainer reports it."""

    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    learning_rate: float | None = None
    epoch: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: float | None = None
    state: str = ""
    error: str = ""


@dataclass(frozen=True)
class ResourceStatus:
    """What the node provisioner says about a workspace's nodes."""

    ready: bool
    reason: str
    message: str = ""
    retry_after: float | None = None  # seconds, when the provider asked us to wait
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Observation:
    """What a target sees of one workspace's workload right now."""

    kind: str  # inference | tuning
    applied: bool = False  # every desired object exists and is current
    replicas: int = 0
    ready_replicas: int = 0
    pods: tuple[PodState, ...] = ()
    nodes: tuple[NodeState, ...] = ()
    job: JobState | None = None
    progress: Progress | None = None
    endpoint: str = ""
    process_error: str = ""  # local target: why the process is not running
    rendered: bool = False  # the render target only writes files: nothing runs
    notes: tuple[str, ...] = ()  # what the target left undone on purpose (e.g. an output not pushed)


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # True | False | Unknown
    reason: str
    message: str = ""
    last_transition_time: str = ""

    def as_dict(self) -> dict:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
        }


@dataclass(frozen=True)
class WorkspaceStatus:
    state: str
    conditions: tuple[Condition, ...] = ()
    worker_nodes: tuple[str, ...] = ()
    endpoint: str = ""
    progress: Progress | None = None
    last_error: str = ""

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


def _short(msg: str) -> str:
    return msg if len(msg) <= MESSAGE_LIMIT else msg[: MESSAGE_LIMIT - 3] + "..."


def pod_problem(pods: tuple[PodState, ...]) -> tuple[str, str] | None:
    """The first pod failure in Kaito's order: OOM, image pull, start error, crash loop, eviction, scheduling."""
    checks = (
        (
            "ContainerOOMKilled",
            lambda p: p.last_terminated_reason == "OOMKilled",
            lambda p: (
                f"pod {p.name} was killed for using too much memory (OOMKilled); use a larger instance type or a "
                "smaller context length"
            ),
        ),
        (
            "ImagePullError",
            lambda p: p.waiting_reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName"),
            lambda p: f"pod {p.name} cannot pull its image: {p.waiting_message or p.waiting_reason}",
        ),
        (
            "ContainerStartError",
            lambda p: (
                p.waiting_reason
                in ("CreateContainerError", "CreateContainerConfigError", "RunContainerError")
            ),
            lambda p: f"pod {p.name} cannot start: {p.waiting_message or p.waiting_reason}",
        ),
        (
            "ContainerCrashLoopBackOff",
            lambda p: p.waiting_reason == "CrashLoopBackOff",
            lambda p: (
                f"pod {p.name} keeps crashing (CrashLoopBackOff){': ' + p.waiting_message if p.waiting_message else ''}"
            ),
        ),
        (
            "PodEvicted",
            lambda p: bool(p.evicted_message),
            lambda p: f"pod {p.name} was evicted: {p.evicted_message}",
        ),
        (
            "Unschedulable",
            lambda p: bool(p.unschedulable_message),
            lambda p: f"pod {p.name} cannot be scheduled: {p.unschedulable_message}",
        ),
    )
    for reason, test, message in checks:
        for p in pods:
            if test(p):
                return reason, _short(message(p))
    return None


def node_pressure(nodes: tuple[NodeState, ...]) -> tuple[str, str] | None:
    for n in nodes:
        if "DiskPressure" in n.pressure:
            return "NodeDiskPressure", f"node {n.name} is low on disk"
        if "MemoryPressure" in n.pressure:
            return "NodeMemoryPressure", f"node {n.name} is low on memory"
    return None


def derive(obs: Observation, resource: ResourceStatus, *, last_error: str = "") -> WorkspaceStatus:
    """Kaito's conditions and state from one observation (times are filled by carry_times)."""
    if obs.rendered:
        msg = "objects rendered to files; another tool applies them" if obs.applied else "rendering pending"
        status = "True" if obs.applied else "False"
        second = "InferenceReady" if obs.kind == "inference" else "JobStarted"
        return WorkspaceStatus(
            "Rendered" if obs.applied else "Pending",
            (
                Condition("ResourceReady", status, "Rendered", msg),
                Condition(second, "Unknown", "Rendered", msg),
                Condition("WorkspaceSucceeded", "Unknown", "Rendered", msg),
            ),
            last_error=last_error,
        )
    res_ok = resource.ready
    res_msg = resource.message or ("enough nodes are ready" if res_ok else "waiting for GPU nodes")
    warning = node_pressure(obs.nodes)
    if res_ok and warning:
        res_msg += f"; warning: {warning[1]}"
    resource_c = Condition(
        "ResourceReady",
        "True" if res_ok else "False",
        RESOURCE_OK if res_ok else (resource.reason or RESOURCE_NOT_READY),
        _short(res_msg),
    )
    suffix = f" (last reconcile error: {last_error})" if last_error else ""
    conditions = [resource_c]
    nodes = tuple(sorted(resource.nodes or {p.node for p in obs.pods if p.node}))
    if obs.kind == "inference":
        problem = pod_problem(obs.pods) or node_pressure(obs.nodes)
        if obs.process_error:
            problem = ("ContainerStartError", obs.process_error)
        ready = res_ok and obs.applied and obs.replicas > 0 and obs.ready_replicas >= obs.replicas
        if ready:
            inf = Condition("InferenceReady", "True", INFERENCE_OK, "inference service is ready")
        elif problem:
            inf = Condition("InferenceReady", "False", problem[0], _short(problem[1] + suffix))
        else:
            msg = (
                f"{obs.ready_replicas}/{obs.replicas} pods ready"
                if obs.applied
                else "workload not applied yet"
            )
            inf = Condition("InferenceReady", "False", INFERENCE_PENDING, _short(msg + suffix))
        succeeded = Condition(
            "WorkspaceSucceeded",
            inf.status,
            SUCCEEDED if ready else (FAILED if problem else PENDING),
            inf.message,
        )
        conditions += [inf, succeeded]
        state = "Ready" if ready else ("NotReady" if problem or (obs.applied and obs.replicas) else "Pending")
        return WorkspaceStatus(
            state, tuple(conditions), nodes, obs.endpoint if ready else "", None, last_error
        )

    job = obs.job or JobState()
    problem = pod_problem(obs.pods)
    if obs.process_error:
        problem = ("ContainerStartError", obs.process_error)
    if job.succeeded > 0:
        started = Condition("JobStarted", "True", JOB_STARTED, "tuning job started")
        done = Condition(
            "WorkspaceSucceeded", "True", SUCCEEDED, _short("; ".join(("tuning job finished", *obs.notes)))
        )
        state = "Succeeded"
    elif job.failed > 0 and job.active == 0:
        msg = job.failed_message or (problem[1] if problem else "the tuning job failed")
        started = Condition("JobStarted", "False", JOB_FAILED, _short(msg + suffix))
        done = Condition("WorkspaceSucceeded", "False", FAILED, _short(msg + suffix))
        state = "Failed"
    elif job.active > 0 or job.ready > 0:
        started = Condition("JobStarted", "True", JOB_STARTED, "tuning job started")
        msg = "tuning is running"
        if obs.progress and obs.progress.total_steps:
            msg = f"step {obs.progress.step}/{obs.progress.total_steps}"
        done = Condition("WorkspaceSucceeded", "False", PENDING, msg)
        state = "Running"
    else:
        msg = problem[1] if problem else ("waiting for nodes" if not res_ok else "job not started yet")
        started = Condition(
            "JobStarted", "False", problem[0] if problem else JOB_PENDING, _short(msg + suffix)
        )
        done = Condition("WorkspaceSucceeded", "False", PENDING, _short(msg + suffix))
        state = "Pending"
    conditions += [started, done]
    return WorkspaceStatus(state, tuple(conditions), nodes, "", obs.progress, last_error)


def carry_times(previous: WorkspaceStatus | None, current: WorkspaceStatus, now: str) -> WorkspaceStatus:
    """Keep each condition's lastTransitionTime unless its status changed (so nothing ticks)."""
    old = {c.type: c for c in previous.conditions} if previous else {}
    out = []
    for c in current.conditions:
        prev = old.get(c.type)
        when = (
            prev.last_transition_time
            if prev and prev.status == c.status and prev.last_transition_time
            else now
        )
        out.append(replace(c, last_transition_time=when))
    return replace(current, conditions=tuple(out))


def failed_status(kind: str, message: str) -> WorkspaceStatus:
    """A workspace that cannot be applied at all (validation errors and no last good state)."""
    c = Condition("ResourceReady", "False", "InvalidWorkspace", _short(message))
    second = "InferenceReady" if kind == "inference" else "JobStarted"
    return WorkspaceStatus(
        "Failed" if kind == "tuning" else "NotReady",
        (
            c,
            Condition(second, "False", "InvalidWorkspace", _short(message)),
            Condition("WorkspaceSucceeded", "False", FAILED, _short(message)),
        ),
        last_error=message,
    )


def waiting_status(kind: str, message: str) -> WorkspaceStatus:
    """A workspace held back (no nodes, no pods) until an object it mounts exists."""
    second = "InferenceReady" if kind == "inference" else "JobStarted"
    return WorkspaceStatus(
        "Pending",
        (
            Condition("ResourceReady", "False", "WaitingForObjects", _short(message)),
            Condition(second, "False", "WaitingForObjects", _short(message)),
            Condition("WorkspaceSucceeded", "False", "WaitingForObjects", _short(message)),
        ),
        last_error=message,
    )
