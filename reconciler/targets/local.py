"""The local target: each workspace as a process on this machine, so the whole loop runs on a laptop.

Inference runs `python -m runtime.inference` (the CPU server, or SGLang when a GPU and sglang
are there) on a free 127.0.0.1 port, restarted with backoff if it dies; tuning runs
`python -m runtime.tuning` like a Job (a few retries, then Failed). Data, adapters and outputs
live under the state folder, or in `hostPath` folders the workspace names. Processes run in
their own process groups and are stopped with the workspace or the daemon: nothing is left
behind. The other objects of the repository get local stand-ins (local_objects.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from ..catalog import GIB
from ..companions import ObjectKey, Reference
from ..configs import TRAINING_KEY
from ..planning import ObjectPlan, WorkspacePlan
from ..progress_format import progress_from_dict
from ..status import JobState, NodeState, Observation
from ..threaded_server import port_is_free
from .activator import DRAIN_MAX, HOLD_TIMEOUT, Activator
from .base import ApplyResult, ObjectsResult, WorkspaceKey
from .local_objects import LocalObjects

log = structlog.get_logger("kaito_gitops.local")

RESTART_MAX_DELAY = 60.0
TUNING_RETRIES = 2  # like the Job's backoffLimit
STOP_GRACE = 10.0
CPU_BYTES_PER_PARAM = 4 * 1.3  # fp32 weights on CPU plus activations and the Python process
# training loads fp32 weights and quantizes them (two copies at the peak), then adds activations
CPU_TUNING_BYTES_PER_PARAM = 4 * 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return 0


def _drop(args: list[str], name: str, with_value: bool = True) -> list[str]:
    out, skip = [], 0
    for a in args:
        if skip:
            skip -= 1
            continue
        if a == name:
            skip = 1 if with_value else 0
            continue
        out.append(a)
    return out


PROCESS_FILE = "process.json"


def _is_our_process(pid: int, folder: Path) -> bool:
    """Whether `pid` is alive and still the process we started in `folder` (pids are reused)."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return Path(cwd).resolve() == folder.resolve() and stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stop_group(pid: int) -> None:
    """SIGTERM the process group `pid` leads, then SIGKILL what is left after the grace period."""
    import time

    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and importlib.util.find_spec("sglang") is not None


@dataclass
class Workload:
    key: WorkspaceKey
    kind: str
    signature: str
    folder: Path
    steps: list[list[str]]  # setup commands, then the main command last
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    state: str = "Pending"  # Pending | Running | Ready | Succeeded | Failed
    error: str = ""
    restarts: int = 0
    failures: int = 0
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    progress_file: Path | None = None
    set_key: tuple[str, str] | None = None  # the InferenceSet it is a member of
    drain_since: float = 0.0  # monotonic time its set's activator stopped sending it requests

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}" if self.port else ""


class LocalTarget:
    name = "local"

    def __init__(
        self,
        state_dir: str | Path = ".kaito-gitops/local",
        *,
        python: str = sys.executable,
        cache_dir: str | Path | None = None,
        docker_config: str | None = None,
        hold_timeout: float = HOLD_TIMEOUT,
    ):
        self.hold_timeout = hold_timeout  # how long a set's activator holds a request for a member
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.python = python
        self.cache_dir = Path(
            cache_dir or os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
        )
        self.docker_config = docker_config or os.environ.get("KAITO_GITOPS_DOCKER_CONFIG")
        self.workloads: dict[WorkspaceKey, Workload] = {}
        self._lock = threading.Lock()
        # ports of servers a previous daemon left running, which we stopped: a restarted
        # workspace gets its old endpoint back
        self._ports: dict[WorkspaceKey, int] = self._stop_leftovers()
        # called when a workload's state changes (ready, died, finished): the daemon runs a pass
        # at once, so status shows it without waiting for the next poll
        self.on_change = lambda: None
        self._notes: dict[WorkspaceKey, list[str]] = {}  # what this machine did not do, said in status
        self.stand_ins = LocalObjects(self.state_dir)  # PVCs, ConfigMaps and Secrets as folders
        self.activators: dict[tuple[str, str], Activator] = {}  # each InferenceSet's one endpoint
        self.on_hold = lambda set_key: None  # a request waits at a set with no ready member (the scaler)

    # -- the target interface -----------------------------------------------------------
    def refresh(self) -> None:
        return None

    def live_workspaces(self) -> dict[WorkspaceKey, str]:
        with self._lock:
            return {k: "" for k in self.workloads}

    def nodes(self, plan: WorkspacePlan) -> list[NodeState] | None:
        return None  # this machine is the node

    def apply(self, plan: WorkspacePlan) -> ApplyResult:
        signature = hashlib.sha256(
            json.dumps(
                [o for o in plan.objects if o["kind"] in ("StatefulSet", "Job", "ConfigMap")],
                sort_keys=True,
                default=str,
            ).encode()
        ).hexdigest()[:16]
        with self._lock:
            current = self.workloads.get(plan.key)
        if current is not None and current.signature == signature:
            return ApplyResult()
        if current is not None and not self._drained(current):
            return ApplyResult(pending="finishing its requests before it is replaced")
        if current is not None:
            self._stop(current)
        workload = self._workload(plan, signature, current)
        with self._lock:
            self.workloads[plan.key] = workload
        refusal = refusal_of(plan)
        if refusal:
            workload.state, workload.error = "Failed", refusal
            log.warning(
                "workspace refused on this machine", workspace=f"{plan.key[0]}/{plan.key[1]}", reason=refusal
            )
            return ApplyResult(writes=1, applied=["process (refused)"])
        workload.thread = threading.Thread(
            target=self._supervise, args=(workload,), daemon=True, name=f"local-{plan.key[1]}"
        )
        workload.thread.start()
        log.info(
            "started",
            workspace=f"{plan.key[0]}/{plan.key[1]}",
            kind=workload.kind,
            endpoint=workload.endpoint,
        )
        return ApplyResult(writes=1, applied=["process"])

    def remove(self, key: WorkspaceKey) -> tuple[bool, ApplyResult]:
        with self._lock:
            workload = self.workloads.get(key)
        if workload is None:
            return True, ApplyResult()
        if not self._drained(workload):
            return False, ApplyResult(pending="finishing its requests before it stops")
        with self._lock:
            self.workloads.pop(key, None)
        self._stop(workload)
        (workload.folder / "endpoint.json").unlink(missing_ok=True)
        log.info("stopped", workspace=f"{key[0]}/{key[1]}")
        return True, ApplyResult(writes=1, deleted=["process"])

    def observe(self, key: WorkspaceKey, plan: WorkspacePlan | None) -> Observation:
        with self._lock:
            w = self.workloads.get(key)
        kind = plan.kind if plan else "inference"
        if w is None:
            return Observation(kind, False)
        if w.kind == "inference":
            ready = w.state == "Ready"
            return Observation(
                "inference",
                True,
                replicas=1,
                ready_replicas=1 if ready else 0,
                endpoint=w.endpoint if ready else "",
                process_error=w.error if w.state == "Failed" or (w.error and not ready) else "",
            )
        progress = None
        if w.progress_file and w.progress_file.exists():
            try:
                progress = progress_from_dict(json.loads(w.progress_file.read_text()))
            except (OSError, ValueError):
                progress = None
        job = JobState(
            active=1 if w.state == "Running" else 0,
            succeeded=1 if w.state == "Succeeded" else 0,
            failed=max(w.failures, 1) if w.state == "Failed" else 0,  # a refusal fails at once
            failed_message=w.error,
        )
        return Observation(
            "tuning",
            True,
            job=job,
            progress=progress,
            process_error=w.error if w.state == "Failed" and not w.failures else "",
            notes=tuple(self._notes.get(key, ())),
        )

    def failed(self, key: WorkspaceKey) -> str:
        """Why a workload will not come up (refused, or out of retries); '' while it may."""
        with self._lock:
            w = self.workloads.get(key)
        return (w.error or "failed") if w is not None and w.state == "Failed" else ""

    def close(self) -> None:
        for key in list(self.activators):
            self._stop_activator(key)
        with self._lock:
            workloads = list(self.workloads.values())
            self.workloads.clear()
        for w in workloads:
            self._stop(w)

    # -- InferenceSets: one endpoint each, that holds requests while no member is ready ------------
    def serve_sets(self, sets: list) -> dict[tuple[str, str], str]:
        """An activator per set on a port of its own (the same one after a restart, when free)."""
        want = {s.key: s for s in sets if s.name}
        for key in [k for k in self.activators if k not in want]:
            self._stop_activator(key)
        for key, s in want.items():
            if key in self.activators:
                continue
            folder = self.state_dir / key[0] / key[1]
            folder.mkdir(parents=True, exist_ok=True)
            act = Activator(
                s.name,
                port=self._set_port(folder),
                upstreams=lambda key=key: self._ready_members(key),
                on_hold=lambda key=key: self.on_hold(key),
                hold_timeout=self.hold_timeout,
            ).start()
            self.activators[key] = act
            (folder / "activator.json").write_text(json.dumps({"port": act.port}))
            (folder / "endpoint.json").write_text(json.dumps({"endpoint": act.endpoint, "state": "Serving"}))
            log.info("set endpoint", inferenceset=f"{key[0]}/{key[1]}", endpoint=act.endpoint)
        return {k: a.endpoint for k, a in self.activators.items()}

    def set_load(self, s, members: list[WorkspaceKey]):
        import httpx

        from .member_metrics import read_load

        with self._lock:
            urls = [w.endpoint for k in members if (w := self.workloads.get(k)) and w.state == "Ready"]
        with httpx.Client() as http:
            load = read_load(http, urls)
        act = self.activators.get(s.key)
        return replace(load, held=act.held, requests=act.requests) if act else load

    def _drained(self, w: Workload) -> bool:
        """Whether a set member may be stopped now: its activator sends it nothing more, and it has
        answered what it had (or DRAIN_MAX has passed). Never blocks a pass: a waiter pokes the
        daemon once it is done."""
        activator = self.activators.get(w.set_key) if w.set_key else None
        if activator is None or not w.port:
            return True
        if activator.drain(w.endpoint) or (w.drain_since and time.monotonic() - w.drain_since > DRAIN_MAX):
            w.state = "Stopping"  # out of the activator's upstreams before its address is freed
            activator.forget(w.endpoint)
            return True
        if not w.drain_since:
            w.drain_since = time.monotonic()
            log.info(
                "draining", workspace=f"{w.key[0]}/{w.key[1]}", in_flight=activator.in_flight.get(w.endpoint)
            )

            def wait() -> None:
                activator.drained(w.endpoint)
                self.on_change()

            threading.Thread(target=wait, daemon=True, name=f"drain-{w.key[1]}").start()
        return False

    def _ready_members(self, set_key: tuple[str, str]) -> list[str]:
        with self._lock:
            return [
                w.endpoint for w in self.workloads.values() if w.set_key == set_key and w.state == "Ready"
            ]

    def _set_port(self, folder: Path) -> int:
        try:
            port = int(json.loads((folder / "activator.json").read_text())["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return free_port()
        return port if port_is_free("127.0.0.1", port) else free_port()

    def _stop_activator(self, key: tuple[str, str]) -> None:
        self.activators.pop(key).stop()
        (self.state_dir / key[0] / key[1] / "endpoint.json").unlink(missing_ok=True)

    # -- the other objects (local_objects.py) ---------------------------------------------
    def apply_objects(
        self, desired: dict[ObjectKey, ObjectPlan], keep: set[ObjectKey], prune: bool
    ) -> ObjectsResult:
        return self.stand_ins.apply(desired, keep, prune)

    def missing(self, refs: list[Reference]) -> list[Reference]:
        return self.stand_ins.missing(refs)

    # -- building commands ----------------------------------------------------------------
    def _workload(self, plan: WorkspacePlan, signature: str, previous: Workload | None) -> Workload:
        ns, name = plan.key
        folder = self.state_dir / ns / name
        folder.mkdir(parents=True, exist_ok=True)
        env = {"HF_HOME": str(self.cache_dir), "PYTHONUNBUFFERED": "1"}
        preset = plan.workspace.preset
        token = self.stand_ins.secret_file(ns, preset.model_access_secret if preset else None, "HF_TOKEN")
        if token is not None:  # as the pod's secretKeyRef would; never logged
            env["HF_TOKEN"] = token.read_text().strip()
        if plan.kind == "inference":
            port = previous.port if previous and previous.port else self._reuse_port(plan.key)
            steps = self._adapter_steps(plan, folder)
            steps.append(self._inference_command(plan, folder, port))
            w = Workload(plan.key, "inference", signature, folder, steps, port, env)
            w.set_key = plan.workspace.set_key
            return w
        steps, progress = self._tuning_steps(plan, folder)
        return Workload(plan.key, "tuning", signature, folder, steps, 0, env, progress_file=progress)

    def _adapter_steps(self, plan: WorkspacePlan, folder: Path) -> list[list[str]]:
        adapters = folder / "adapters"
        if adapters.exists():
            shutil.rmtree(adapters)
        adapters.mkdir(parents=True)
        steps = []
        for a in plan.workspace.inference.adapters if plan.workspace.inference else ():
            if a.source is None or not a.source.name:
                continue
            if a.source.image:
                steps.append(self._pull(a.source.image, adapters / a.source.name, "adapter"))
            elif self.stand_ins.volume_path(a.source.volume_source, plan.workspace.namespace) is not None:
                (adapters / a.source.name).symlink_to(
                    self.stand_ins.volume_path(a.source.volume_source, plan.workspace.namespace)
                )
        return steps

    def _pull(self, image: str, dest: Path, expect: str) -> list[str]:
        """The command that pulls an image's files (an adapter, tuning data) into `dest`."""
        cmd = [self.python, "-m", "runtime.adapters", "pull", "--image", image, "--dest", str(dest)]
        cmd += ["--expect", expect]
        if self.docker_config:
            cmd += ["--docker-config", self.docker_config]
        return cmd

    def _inference_command(self, plan: WorkspacePlan, folder: Path, port: int) -> list[str]:
        container = plan.objects[-1]["spec"]["template"]["spec"]["containers"][0]
        args = list(container["command"][3:])  # after python -m runtime.inference
        extra: list[str] = []
        if "--" in args:
            extra = args[args.index("--") :]
            args = args[: args.index("--")]
        for cluster_only in (
            "--port",
            "--download-dir",
            "--config-file",
            "--adapters-dir",
            "--dist-init-addr",
            "--nnodes",
        ):
            args = _drop(args, cluster_only)
        backend = "sglang" if has_gpu() else "cpu"
        args = ["--backend", backend, "--host", "127.0.0.1", "--port", str(port), *args]
        if plan.workspace.inference and plan.workspace.inference.adapters:
            args += ["--adapters-dir", str(folder / "adapters")]
        if backend == "sglang":
            args += extra
        return [self.python, "-m", "runtime.inference", *args]

    def _tuning_steps(self, plan: WorkspacePlan, folder: Path) -> tuple[list[list[str]], Path]:
        t = plan.workspace.tuning
        assert t is not None
        steps: list[list[str]] = []
        data = folder / "data"
        ns = plan.workspace.namespace
        if t.input and self.stand_ins.volume_path(t.input.volume_source, ns) is not None:
            data = self.stand_ins.volume_path(t.input.volume_source, ns)
        elif t.input and t.input.urls:
            steps.append([self.python, "-m", "runtime.data", "fetch", "--dest", str(data), *t.input.urls])
        elif t.input and t.input.image:
            steps.append(self._pull(t.input.image, data, "any"))
        output = folder / "output"
        if t.output and self.stand_ins.volume_path(t.output.volume_source, ns) is not None:
            output = self.stand_ins.volume_path(t.output.volume_source, ns)
        output.mkdir(parents=True, exist_ok=True)
        cm = next(o for o in plan.objects if o["kind"] == "ConfigMap")
        config = folder / "training_config.yaml"
        config.write_text(cm["data"][TRAINING_KEY])
        progress = folder / "progress.json"
        progress.unlink(missing_ok=True)
        model = plan.model.huggingface if plan.model else (t.preset.name if t.preset else "")
        skipped: list[str] = []
        cmd = [
            self.python,
            "-m",
            "runtime.tuning",
            "--model",
            model,
            "--method",
            t.method or "qlora",
            "--config",
            str(config),
            "--data-dir",
            str(data),
            "--output-dir",
            str(output),
            "--download-dir",
            str(self.cache_dir),
            "--progress-file",
            str(progress),
        ]
        docker_config = self.docker_config
        pushed_with = self.stand_ins.secret_file(
            ns, t.output.image_push_secret if t.output else None, ".dockerconfigjson"
        )
        if pushed_with is not None:
            docker_config = str(pushed_with)
        if t.output and t.output.image and not docker_config:
            skipped.append(
                f"the adapter is not pushed to {t.output.image}: set KAITO_GITOPS_DOCKER_CONFIG to a "
                "dockerconfigjson file with push credentials for that registry, or put it at "
                f"{self.stand_ins.secrets / ns / (t.output.image_push_secret or '<secret>') / '.dockerconfigjson'} "
                "(the imagePushSecret's local stand-in); it stays in " + str(output)
            )
        if t.output and t.output.image and docker_config:
            cmd += [
                "--push-image",
                t.output.image,
                "--docker-config",
                docker_config,
                "--model-name",
                plan.model.name if plan.model else model,
            ]
        self._notes[plan.key] = skipped
        return [*steps, cmd], progress

    # -- supervision ----------------------------------------------------------------------
    def _spawn(self, w: Workload, cmd: list[str], log_name: str) -> subprocess.Popen:
        logf = open(w.folder / log_name, "ab")  # noqa: SIM115 - the child owns it; closed after wait()
        env = {**os.environ, **w.env}
        proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=w.folder
        )
        proc._kaito_log = logf  # type: ignore[attr-defined]
        # a daemon killed before it could stop its children finds them again from this file
        (w.folder / PROCESS_FILE).write_text(
            json.dumps({"pid": proc.pid, "port": w.port, "argv0": cmd[:3], "workspace": list(w.key)})
        )
        return proc

    def _stop_leftovers(self) -> dict[WorkspaceKey, int]:
        """Stop every process a previous daemon started here and did not stop (it was killed, or
        its terminal closed): never two servers for one workspace. Returns their ports."""
        ports: dict[WorkspaceKey, int] = {}
        for f in sorted(self.state_dir.glob(f"*/*/{PROCESS_FILE}")):
            try:
                info = json.loads(f.read_text())
                pid, key = int(info["pid"]), (str(info["workspace"][0]), str(info["workspace"][1]))
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                f.unlink(missing_ok=True)
                continue
            (f.parent / "endpoint.json").unlink(missing_ok=True)  # first: it is not serving any more
            if _is_our_process(pid, f.parent):
                log.warning(
                    "stopping a process a previous daemon left running",
                    workspace=f"{key[0]}/{key[1]}",
                    pid=pid,
                    port=info.get("port"),
                )
                _stop_group(pid)
            if info.get("port"):
                ports[key] = int(info["port"])
            f.unlink(missing_ok=True)
        return ports

    def _reuse_port(self, key: WorkspaceKey) -> int:
        port = self._ports.pop(key, 0)
        return port if port and port_is_free("127.0.0.1", port) else free_port()  # unless taken meanwhile

    @staticmethod
    def _last_line(path: Path) -> str:
        try:
            lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1][-300:] if lines else ""

    def _run_setup(self, w: Workload) -> bool:
        for i, cmd in enumerate(w.steps[:-1]):
            if w.stop.is_set():
                return False
            proc = w.proc = self._spawn(w, cmd, "setup.log")
            code = proc.wait()
            proc._kaito_log.close()  # type: ignore[attr-defined]
            if code != 0:
                w.error = f"setup step {i + 1} ({cmd[2]}) failed: {self._last_line(w.folder / 'setup.log')}"
                return False
        return True

    def _supervise(self, w: Workload) -> None:
        delay = 1.0
        while not w.stop.is_set():
            w.state, w.error = ("Pending" if w.kind == "inference" else "Running"), w.error
            if not self._run_setup(w):
                if w.stop.is_set():
                    return
                w.failures += 1
                if w.kind == "tuning" and w.failures > TUNING_RETRIES:
                    w.state = "Failed"
                    self.on_change()
                    return
                w.stop.wait(delay)
                delay = min(delay * 2, RESTART_MAX_DELAY)
                continue
            proc = w.proc = self._spawn(
                w, w.steps[-1], "server.log" if w.kind == "inference" else "tuning.log"
            )
            if w.kind == "inference":
                code = self._watch_server(w, proc)
            else:
                w.state = "Running"
                code = proc.wait()
            proc._kaito_log.close()  # type: ignore[attr-defined]
            if w.stop.is_set():
                return
            if w.kind == "tuning":
                if code == 0:
                    w.state, w.error = "Succeeded", ""
                    for note in self._notes.get(w.key, ()):
                        log.warning("tuning output not pushed", workspace=f"{w.key[0]}/{w.key[1]}", why=note)
                    self.on_change()
                    return
                w.failures += 1
                w.error = f"tuning exited with code {code}: {self._last_line(w.folder / 'tuning.log')}"
                if w.failures > TUNING_RETRIES:
                    w.state = "Failed"
                    self.on_change()
                    return
            else:
                w.restarts += 1
                w.state = "NotReady"
                w.error = f"server exited with code {code}: {self._last_line(w.folder / 'server.log')}"
                (w.folder / "endpoint.json").unlink(missing_ok=True)
                self.on_change()
                log.warning(
                    "local server died; restarting",
                    workspace=f"{w.key[0]}/{w.key[1]}",
                    code=code,
                    restart_in=round(delay, 1),
                    error=w.error,
                )
            w.stop.wait(delay)
            delay = min(delay * 2, RESTART_MAX_DELAY)

    def _watch_server(self, w: Workload, proc: subprocess.Popen) -> int:
        """Poll /health until the process exits or we are stopped; mark Ready while it answers."""
        while True:
            code = proc.poll()
            if code is not None:
                return code
            if w.stop.wait(0.5):
                return 0
            healthy = False
            try:
                with urllib.request.urlopen(f"{w.endpoint}/health", timeout=2) as resp:
                    healthy = resp.status == 200
            except OSError:
                healthy = False
            if healthy and w.state != "Ready":
                w.state, w.error = "Ready", ""
                (w.folder / "endpoint.json").write_text(
                    json.dumps({"endpoint": w.endpoint, "state": "Ready"})
                )
                log.info("serving", workspace=f"{w.key[0]}/{w.key[1]}", endpoint=w.endpoint)
                self.on_change()
            elif not healthy and w.state == "Ready":
                w.state = "NotReady"
                self.on_change()

    def _stop(self, w: Workload) -> None:
        w.stop.set()
        proc = w.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(STOP_GRACE)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        if w.thread is not None and w.thread is not threading.current_thread():
            w.thread.join(timeout=STOP_GRACE + 5)
        (w.folder / PROCESS_FILE).unlink(missing_ok=True)
        (w.folder / "endpoint.json").unlink(missing_ok=True)  # nothing serves there now


def refusal_of(plan: WorkspacePlan) -> str:
    """A model this machine cannot hold is refused with the numbers, before downloading anything."""
    if plan.model is None or has_gpu():
        return ""
    tuning = plan.kind == "tuning"
    need = plan.model.parameters_b * 1e9 * (CPU_TUNING_BYTES_PER_PARAM if tuning else CPU_BYTES_PER_PARAM)
    have = available_memory()
    if have and need > have:
        what = (
            "to train on CPU (weights loaded in fp32, then quantized, plus activations)"
            if tuning
            else ("on CPU (parameters in fp32)")
        )
        return (
            f"{plan.model.name} needs about {need / GIB:.1f} GiB of memory {what}: "
            f"{plan.model.parameters_b:g}B parameters, and this machine has {have / GIB:.1f} GiB available; "
            "nothing was downloaded. Run it in a cluster or pick a smaller preset such as smollm2-135m-instruct"
        )
    return ""
