"""One active writer: a coordination.k8s.io Lease, held by renewing it.

Replicas race to take an expired Lease with an optimistic-concurrency PUT (the API server
refuses a stale resourceVersion with 409), so at most one of them reconciles at a time.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .logs import error_text

log = structlog.get_logger("kaito_gitops.leader")


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(ts: str | None) -> float:
    """RFC 3339 with or without fraction, 'Z' or an offset (servers differ in what they echo)."""
    if not ts:
        return 0.0
    try:
        dt = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


class LeaseElector:
    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int = 15,
        renew_every: float = 5.0,
    ):
        self.api = client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_seconds, self.renew_every = lease_seconds, renew_every
        self._leader = False
        self._renewed_at = 0.0  # monotonic time at the start of the last successful renewal
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)

    def is_leader(self) -> bool:
        # a renewal can hang on a slow API server for longer than the lease: once the lease we
        # last wrote has run out, another replica may hold it, so we no longer act
        return self._leader and time.monotonic() - self._renewed_at < self.lease_seconds

    def start(self) -> LeaseElector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._leader:
            self.release()

    def _get(self) -> dict | None:
        try:
            resp = self.api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=(5, 10)
            )
            return json.loads(resp.data)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def try_acquire(self) -> bool:
        """One attempt to take or renew the Lease; True when we hold it afterwards."""
        now = time.time()
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": _ts(now),
        }
        lease = self._get()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec, "acquireTime": _ts(now), "leaseTransitions": 0},
            }
            try:
                self.api.create_namespaced_lease(
                    self.namespace, body, _preload_content=False, _request_timeout=(5, 10)
                )
                return True
            except ApiException as e:
                if e.status == 409:
                    return False
                raise
        cur = lease.get("spec") or {}
        holder = cur.get("holderIdentity")
        expires = _parse(cur.get("renewTime")) + float(cur.get("leaseDurationSeconds") or self.lease_seconds)
        if holder not in (None, "", self.identity) and expires > now:
            return False
        new_spec = {**cur, **spec}
        if holder != self.identity:
            new_spec["acquireTime"] = _ts(now)
            new_spec["leaseTransitions"] = int(cur.get("leaseTransitions") or 0) + 1
        body = {**lease, "spec": new_spec}
        try:
            self.api.replace_namespaced_lease(
                self.name, self.namespace, body, _preload_content=False, _request_timeout=(5, 10)
            )
            return True
        except ApiException as e:
            if e.status == 409:  # someone else won the race
                return False
            raise

    def release(self) -> None:
        try:
            lease = self._get()
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                self.api.replace_namespaced_lease(
                    self.name, self.namespace, lease, _preload_content=False, _request_timeout=(5, 10)
                )
        except ApiException as e:
            log.warning("could not release the lease", status=e.status)
        self._leader = False

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                held = self.try_acquire()
                if held:
                    self._renewed_at = started
            except Exception as e:  # API down: we cannot prove we lead, so we do not
                log.warning("lease check failed", error=error_text(e))
                held = False
            if held != self._leader:
                log.info("leadership changed", leader=held, identity=self.identity)
            self._leader = held
            self._stop.wait(self.renew_every)
