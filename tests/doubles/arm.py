"""A local HTTPS double of Azure Resource Manager (AKS agent pools) and of Entra ID's token endpoint.

Tests drive it with the real `azure.mgmt.containerservice.ContainerServiceClient` and real
`azure.identity` credentials, so it speaks ARM's wire format: paths, api-version, status codes,
`Azure-AsyncOperation` / `Location` long-running operations and `{"error": {...}}` bodies.
Facts it relies on are in shared/reference/machine-infra.md sections 2 and 3.

    with ArmDouble(tmp_path) as arm:
        client = arm.client()                # or ContainerServiceClient(cred, sub, base_url=arm.base_url, ...)
        client.agent_pools.begin_create_or_update(arm.resource_group, arm.cluster, "gpu1", pool).result()

One server answers both ARM and the token endpoint, on 127.0.0.1 with a trustme CA (`ca_path`).
Nothing sleeps: a long-running operation advances when it is polled (or when the test calls
`advance`), so clients must use `polling_interval=0` (and `retry_total=0` unless a test wants retries).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import trustme
from azure.core.credentials import AccessToken

SUBSCRIPTION_ID = "6f1c2a4e-3b5d-4c7e-9a1f-2d3e4b5c6a70"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "8e4b1c2d-5f6a-4b7c-8d9e-0a1b2c3d4e5f"
RESOURCE_GROUP = "rg-kaito"
CLUSTER = "aks-kaito"
LOCATION = "eastus"
KUBERNETES_VERSION = "1.33.2"
ARM_SCOPE = "https://management.azure.com/.default"
STATIC_TOKEN = "arm-double-static-token"
POOL_TYPE = "Microsoft.ContainerService/managedClusters/agentPools"

# The two ways ARM tells a client how to follow a PUT (see machine-infra.md section 2).
ASYNC_OPERATION = "azure-async-operation"  # Azure-AsyncOperation header -> /operations/<id>
PROVISIONING_STATE = "provisioning-state"  # no header: the client polls the resource itself
LroStyle = Literal["azure-async-operation", "provisioning-state"]
# A request may pick its own style with this header (SDK: `headers={LRO_STYLE_HEADER: ...}`).
LRO_STYLE_HEADER = "x-arm-double-lro-style"

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_LINUX_POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_WINDOWS_POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,5}$")
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_CLUSTER_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/Microsoft\.ContainerService/managedClusters/(?P<cluster>[^/]+)"
    r"(?:/(?P<pools>agentPools)(?:/(?P<pool>[^/]+))?)?/?$",
    re.IGNORECASE,  # ARM matches path segments and names case-insensitively
)
# Microsoft.Compute reads the planner makes before merge: quota usages and resource SKUs.
_USAGES_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Compute/locations/(?P<location>[^/]+)/usages/?$",
    re.IGNORECASE,
)
_SKUS_PATH = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Compute/skus/?$", re.IGNORECASE)
_LOCATION_FILTER = re.compile(r"^\s*location\s+eq\s+'(?P<location>[^']+)'\s*$", re.IGNORECASE)
_TOKEN_PATH = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$")
_POLL_PATH = re.compile(r"^/(?P<kind>operations|deletes)/(?P<id>[0-9a-f-]+)$")

# Properties AKS refuses to change on an existing pool; clients must replace the pool instead.
IMMUTABLE_PROPERTIES = (
    "vmSize",
    "osType",
    "osDiskSizeGB",
    "osDiskType",
    "gpuInstanceProfile",
    "gpuProfile",
    "maxPods",
    "availabilityZones",
    "vnetSubnetID",
)
# What AKS fills in when a PUT leaves a property out (the values a real cluster reports).
_POOL_DEFAULTS: dict[str, Any] = {
    "count": 1,
    "vmSize": "Standard_D2s_v3",
    "osDiskSizeGB": 128,
    "osDiskType": "Managed",
    "kubeletDiskType": "OS",
    "maxPods": 250,
    "type": "VirtualMachineScaleSets",
    "mode": "User",
    "osType": "Linux",
    "osSKU": "Ubuntu",
    "scaleDownMode": "Delete",
    "enableFIPS": False,
    "enableNodePublicIP": False,
    "upgradeSettings": {"maxSurge": "10%"},
}
_READ_ONLY_PROPERTIES = ("provisioningState", "eTag", "currentOrchestratorVersion", "status")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# Errors, with ARM's codes and message shapes


@dataclass(frozen=True)
class ArmError:
    """An ARM error: HTTP status, `{"error": {"code", "message", "target"?, "details"?}}` and headers."""

    status: int
    code: str
    message: str
    target: str | None = None
    details: tuple[Mapping[str, Any], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)

    def error(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            body["target"] = self.target
        if self.details:
            body["details"] = [dict(d) for d in self.details]
        return body

    def body(self) -> dict[str, Any]:
        return {"error": self.error()}


def quota_exceeded(
    *,
    family: str = "standardNCADSA100v4Family",
    location: str = LOCATION,
    limit: int = 24,
    usage: int = 0,
    required: int = 48,
    status: int = 400,
) -> ArmError:
    """Compute's vCPU quota error as AKS relays it (preflight answer, or a failed operation)."""
    message = (
        f"Operation could not be completed as it results in exceeding approved {family} Cores quota. "
        f"Additional details - Deployment Model: Resource Manager, Location: {location}, "
        f"Current Limit: {limit}, Current Usage: {usage}, Additional Required: {required}, "
        f"(Minimum) New Limit Required: {usage + required}. Submit a request for Quota increase at "
        "https://aka.ms/ProdportalCRP/#blade/Microsoft_Azure_Capacity/UsageAndQuota.ReactView/Parameters/"
        f"%7B%22subscriptionId%22:%22{SUBSCRIPTION_ID}%22,%22command%22:%22openQuotaApprovalBlade%22%7D "
        "by specifying parameters listed in the 'Details' section for deployment to succeed. Please read "
        "more about quota limits at https://docs.microsoft.com/en-us/azure/azure-supportability/per-vm-quota-requests"
    )
    detail = {"code": "QuotaExceeded", "target": family, "message": message}
    return ArmError(status, "QuotaExceeded", message, details=(detail,))


def operation_not_allowed(message: str, *, status: int = 400) -> ArmError:
    return ArmError(status, "OperationNotAllowed", message)


def property_change_not_allowed(prop: str) -> ArmError:
    """What AKS answers when a PUT changes an immutable property such as vmSize."""
    return ArmError(
        400, "PropertyChangeNotAllowed", f"Changing property '{prop}' is not allowed.", target=prop
    )


def sku_not_available(vm_size: str, *, location: str = LOCATION, status: int = 400) -> ArmError:
    message = (
        f"The requested VM size for resource 'Following SKUs have failed for Capacity Restrictions: {vm_size}' "
        f"is currently not available in location '{location}'. Please try another size or deploy to a "
        "different location or different zone. See https://aka.ms/azureskunotavailable for details."
    )
    return ArmError(
        status, "SkuNotAvailable", message, details=({"code": "SkuNotAvailable", "message": message},)
    )


def allocation_failed(*, zonal: bool = True, status: int = 400) -> ArmError:
    """No capacity: Compute's ZonalAllocationFailed / AllocationFailed (usually a failed operation)."""
    code = "ZonalAllocationFailed" if zonal else "AllocationFailed"
    where = "zone" if zonal else "region"
    message = (
        f"Allocation failed. We do not have sufficient capacity for the requested VM size in this {where}. "
        "Read more about improving likelihood of allocation success at http://aka.ms/allocation-guidance"
    )
    return ArmError(status, code, message, details=({"code": code, "message": message},))


def authorization_failed(
    scope: str,
    *,
    client_id: str = CLIENT_ID,
    object_id: str | None = None,
    action: str = "Microsoft.ContainerService/managedClusters/agentPools/write",
) -> ArmError:
    message = (
        f"The client '{client_id}' with object id '{object_id or client_id}' does not have authorization to "
        f"perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently "
        "granted, please refresh your credentials."
    )
    return ArmError(403, "AuthorizationFailed", message)


def invalid_parameter(message: str, *, target: str | None = None) -> ArmError:
    return ArmError(400, "InvalidParameter", message, target=target)


def throttled(*, retry_after: int | None = 1, retry_after_ms: int | None = None) -> ArmError:
    """ARM's 429. azure-core reads `Retry-After` first and `retry-after-ms` only when it is absent,
    so pass `retry_after=None, retry_after_ms=10` for a fast test. `Retry-After` must be an integer
    (the generated SDK code parses it with int()), and 0 means "absent" to the SDK."""
    for value in (retry_after, retry_after_ms):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise TypeError(f"retry delays must be non-negative integers, not {value!r}")
    headers = {"x-ms-ratelimit-remaining-subscription-writes": "0"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    seconds = retry_after if retry_after is not None else max(1, (retry_after_ms or 0) // 1000)
    message = (
        f"Number of 'write' requests for subscription '{SUBSCRIPTION_ID}' actor '{CLIENT_ID}' exceeded. "
        f"Please try again after '{seconds}' seconds after additional tokens are available. "
        "Refer to https://aka.ms/arm-throttling for additional information."
    )
    return ArmError(429, "SubscriptionRequestsThrottled", message, headers=headers)


def internal_error() -> ArmError:
    return ArmError(500, "InternalServerError", "An internal server error occurred. Please try again later.")


def service_unavailable(*, retry_after: int | None = None) -> ArmError:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    message = "The service is temporarily unavailable. Please retry the request later."
    return ArmError(503, "ServiceUnavailable", message, headers=headers)


def _not_found(message: str, code: str = "NotFound") -> ArmError:
    return ArmError(404, code, message)


# Fixed answers of ARM's front door.
MISSING_AUTHORIZATION = ArmError(
    401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
)
INVALID_TOKEN = ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.")
MISSING_API_VERSION = ArmError(
    400,
    "MissingApiVersionParameter",
    "The api-version query parameter (?api-version=) is required for all requests.",
)
INVALID_POOL_NAME = invalid_parameter(
    "The value of parameter agentPoolProfile.name is invalid. "
    "Please see https://aka.ms/aks-naming-rules for more details.",
    target="agentPoolProfile.name",
)


def _invalid_content(why: str) -> ArmError:
    return ArmError(
        400, "InvalidRequestContent", f"The request content was invalid and could not be deserialized: {why}"
    )


# ---------------------------------------------------------------------------------------------
# State


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    api_version: str | None
    headers: dict[str, str]  # the Authorization value is replaced by "<redacted>"
    body: Any  # parsed JSON (ARM) or form fields with the assertion redacted (token endpoint)
    status: int = 0
    at: float = 0.0  # time.monotonic() when the request arrived


@dataclass
class _Cluster:
    subscription: str
    resource_group: str
    name: str
    location: str
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)  # lower-case name -> wire form

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourcegroups/{self.resource_group}"
            f"/providers/Microsoft.ContainerService/managedClusters/{self.name}"
        )

    def pool_id(self, pool: str) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ContainerService/managedClusters/{self.name}/agentPools/{pool}"
        )


@dataclass
class _Operation:
    id: str
    kind: Literal["create", "update", "delete"]
    cluster: _Cluster
    pool: str
    polls_left: int
    error: ArmError | None = None  # terminal error of a failing create/update
    status: str = "InProgress"  # then Succeeded, Failed or Canceled
    start_time: str = field(default_factory=_now)
    end_time: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.id, "status": self.status, "startTime": self.start_time}
        if self.end_time:
            body["endTime"] = self.end_time
        if self.error and self.status == "Failed":
            body["error"] = self.error.error()
        return body


@dataclass
class _Injection:
    error: ArmError
    method: str | None
    pool: str | None
    cluster: str | None
    times: int
    api: str | None = None  # "usages" or "skus": only that Compute read; None: any request

    def matches(
        self, method: str, cluster: _Cluster | None, pool: str | None, api: str | None = None
    ) -> bool:
        return (
            (self.api is None or self.api == api)
            and (self.method is None or self.method == method)
            and (self.pool is None or (pool is not None and self.pool.lower() == pool.lower()))
            and (
                self.cluster is None or (cluster is not None and self.cluster.lower() == cluster.name.lower())
            )
        )


class StaticTokenCredential:
    """A TokenCredential handing out the double's static token (for tests that skip Entra ID)."""

    def __init__(self, token: str = STATIC_TOKEN) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


# ---------------------------------------------------------------------------------------------
# The double


class ArmDouble:
    """ARM agentPools + managedClusters GET + Entra ID token endpoint, over HTTPS on 127.0.0.1."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        lro_style: LroStyle = ASYNC_OPERATION,
        in_progress_polls: int = 1,
        auto_advance: bool = True,
        poll_retry_after_ms: int | None = None,
        static_token: str | None = STATIC_TOKEN,
        subscription_id: str = SUBSCRIPTION_ID,
        resource_group: str = RESOURCE_GROUP,
        cluster: str = CLUSTER,
        location: str = LOCATION,
        tenant_id: str = TENANT_ID,
        client_id: str = CLIENT_ID,
        system_pool: bool = True,
    ) -> None:
        self.dir = Path(tmp_path) / "arm-double"
        self.dir.mkdir(parents=True, exist_ok=True)
        # Mutable between requests: tests may switch style, speed or mode as they go.
        self.lro_style: LroStyle = lro_style
        self.in_progress_polls = in_progress_polls  # polls that still see "in progress"
        self.auto_advance = auto_advance
        # With auto_advance off, a client's background poller would spin at polling_interval=0;
        # retry-after-ms on in-progress answers slows it to a trickle (Retry-After itself must be int).
        if poll_retry_after_ms is None and not auto_advance:
            poll_retry_after_ms = 50
        self.poll_retry_after_ms = poll_retry_after_ms
        self.static_token = static_token
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.cluster = cluster
        self.location = location
        self.tenant_id = tenant_id
        self.client_id = client_id
        self._lock = threading.RLock()
        self.federated_token_file = self.dir / "azure-identity-token"
        self._valid_assertions: set[str] = set()
        self.write_federated_token(_fake_jwt("initial"))
        self._clusters: dict[tuple[str, str, str], _Cluster] = {}
        self._operations: dict[str, _Operation] = {}
        self._pending: dict[tuple[int, str], _Operation] = {}  # (id(cluster), pool) -> running op
        self._injections: list[_Injection] = []
        self._usages: dict[str, dict[str, dict[str, Any]]] = {}  # location -> family -> Usage
        self._skus: list[dict[str, Any]] = []  # ResourceSku wire forms
        self._provisioning_failures: list[_Injection] = []
        self._issued_tokens: set[str] = set()
        self._requests: list[RecordedRequest] = []
        self._ready_hooks: list[Callable[[dict[str, Any]], None]] = []
        self._deleted_hooks: list[Callable[[dict[str, Any]], None]] = []
        self.hook_errors: list[BaseException] = []
        self.add_cluster(cluster, system_pool=system_pool)

        ca = trustme.CA()
        self.ca_path = self.dir / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(self._ssl)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> str:
        self._server = _Server(self, self._ssl)
        self.base_url = f"https://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval keeps stop() quick (shutdown waits for the serve loop to notice).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="arm-double", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.hook_errors:
            # A hook runs inside a request thread; surface its failure to the test here.
            raise RuntimeError(f"an ArmDouble hook failed: {self.hook_errors[0]!r}") from self.hook_errors[0]

    def __enter__(self) -> ArmDouble:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients and identity -------------------------------------------------------------------

    def credential(self) -> StaticTokenCredential:
        if self.static_token is None:
            raise ValueError("this double accepts no static token; use workload identity")
        return StaticTokenCredential(self.static_token)

    def client(self, credential: Any = None, **kwargs: Any) -> Any:
        """A real ContainerServiceClient aimed at the double, with fast test settings."""
        from azure.mgmt.containerservice import ContainerServiceClient

        options = {"polling_interval": 0, "retry_total": 0, **kwargs}
        return ContainerServiceClient(
            credential or self.credential(),
            self.subscription_id,
            base_url=self.base_url,
            connection_verify=str(self.ca_path),
            **options,
        )

    def compute_client(self, credential: Any = None, **kwargs: Any) -> Any:
        """A real azure-mgmt-compute ComputeManagementClient aimed at the double."""
        from azure.mgmt.compute import ComputeManagementClient

        options = {"retry_total": 0, **kwargs}
        return ComputeManagementClient(
            credential or self.credential(),
            self.subscription_id,
            base_url=self.base_url,
            connection_verify=str(self.ca_path),
            **options,
        )

    def workload_identity_env(self) -> dict[str, str]:
        """What the AKS workload-identity webhook injects, aimed at this double (set via monkeypatch)."""
        return {
            "AZURE_CLIENT_ID": self.client_id,
            "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_FEDERATED_TOKEN_FILE": str(self.federated_token_file),
            "AZURE_AUTHORITY_HOST": self.base_url,
            # Pins DefaultAzureCredential to one credential: never an IMDS probe in tests.
            "AZURE_TOKEN_CREDENTIALS": "WorkloadIdentityCredential",
            "REQUESTS_CA_BUNDLE": str(self.ca_path),
        }

    def write_federated_token(self, text: str, *, keep_previous: bool = True) -> None:
        """Rotate the projected service-account token in the file the credential reads.

        The token endpoint accepts the file's current content and, like Entra ID before an old
        token expires, earlier contents written here; `keep_previous=False` expires those. That
        matters because azure-identity 1.27 re-reads the file at most every 600 s per credential.
        """
        with self._lock:
            if not keep_previous:
                self._valid_assertions.clear()
            self._valid_assertions.add(text)
        self.federated_token_file.write_text(text, encoding="utf-8")

    @property
    def issued_tokens(self) -> set[str]:
        with self._lock:
            return set(self._issued_tokens)

    # -- state ----------------------------------------------------------------------------------

    def add_cluster(
        self,
        name: str,
        *,
        resource_group: str | None = None,
        location: str | None = None,
        system_pool: bool = True,
    ) -> None:
        rg = resource_group or self.resource_group
        cluster = _Cluster(self.subscription_id, rg, name, location or self.location)
        with self._lock:
            self._clusters[(self.subscription_id.lower(), rg.lower(), name.lower())] = cluster
        if system_pool:
            props = {"vmSize": "Standard_D4ds_v5", "count": 2, "mode": "System", "nodeLabels": {}}
            self.put_pool("nodepool1", props, cluster=name, resource_group=rg)

    def pool_id(self, pool: str, *, cluster: str | None = None, resource_group: str | None = None) -> str:
        return self._cluster(cluster, resource_group).pool_id(pool)

    def pools(
        self, cluster: str | None = None, *, resource_group: str | None = None
    ) -> dict[str, dict[str, Any]]:
        """A copy of the cluster's pools in wire form (camelCase), by name."""
        c = self._cluster(cluster, resource_group)
        with self._lock:
            return {p["name"]: copy.deepcopy(p) for p in c.pools.values()}

    def pool(
        self, name: str, cluster: str | None = None, *, resource_group: str | None = None
    ) -> dict | None:
        return self.pools(cluster, resource_group=resource_group).get(name)

    def put_pool(
        self,
        name: str,
        properties: Mapping[str, Any],
        *,
        cluster: str | None = None,
        resource_group: str | None = None,
        provisioning_state: str = "Succeeded",
    ) -> dict[str, Any]:
        """Seed a pool that already exists (e.g. one leaked by an earlier run); no hooks fire."""
        c = self._cluster(cluster, resource_group)
        with self._lock:
            pool = self._build_pool(c, name, dict(properties), None)
            pool["properties"]["provisioningState"] = provisioning_state
            c.pools[name.lower()] = pool
            return copy.deepcopy(pool)

    def on_pool_ready(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call `callback(pool)` when a create/update reaches Succeeded, before the client hears it."""
        self._ready_hooks.append(callback)

    def on_pool_deleted(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call `callback(pool)` when a delete completes, before the client hears it."""
        self._deleted_hooks.append(callback)

    def advance(self, pool: str, *, cluster: str | None = None, resource_group: str | None = None) -> None:
        """Finish the pool's running operation now (what `auto_advance=False` waits for)."""
        c = self._cluster(cluster, resource_group)
        with self._lock:
            op = self._pending.get((id(c), pool.lower()))
            if op is None:
                raise KeyError(f"no operation is running on agent pool {pool!r} of {c.name!r}")
            hooks = self._complete(op)
        self._run_hooks(hooks)

    # -- error injection ------------------------------------------------------------------------

    def fail_next(
        self,
        error: ArmError,
        *,
        method: str | None = None,
        pool: str | None = None,
        cluster: str | None = None,
        times: int = 1,
        api: str | None = None,
    ) -> None:
        """Answer the next `times` matching ARM requests with `error`. Operation and delete polls
        count as requests on their pool; `pool=None` matches any request, lists included.
        `api="usages"` or `api="skus"` picks one of the Compute reads."""
        with self._lock:
            self._injections.append(_Injection(error, method and method.upper(), pool, cluster, times, api))

    # -- Microsoft.Compute: quota usages and resource SKUs --------------------------------------

    def set_usage(
        self, family: str, *, current: int, limit: int, location: str | None = None, localized: str = ""
    ) -> None:
        """The vCPU quota of one VM family in one location, as `az vm list-usage` shows it."""
        loc = (location or self.location).lower()
        with self._lock:
            self._usages.setdefault(loc, {})[family] = {
                "currentValue": current,
                "limit": limit,
                "name": {"value": family, "localizedValue": localized or f"{family} vCPUs"},
                "unit": "Count",
            }

    def add_sku(
        self,
        name: str,
        *,
        family: str,
        vcpus: int,
        gpus: int = 0,
        locations: Mapping[str, list[str]] | None = None,
        restrictions: list[dict[str, Any]] | None = None,
    ) -> None:
        """A virtual-machine resource SKU offered in `locations` (location -> zones)."""
        locations = dict(locations or {self.location: ["1", "2", "3"]})
        size = name.removeprefix("Standard_")
        caps = [{"name": "vCPUs", "value": str(vcpus)}, {"name": "GPUs", "value": str(gpus)}]
        with self._lock:
            self._skus.append(
                {
                    "resourceType": "virtualMachines",
                    "name": name,
                    "tier": "Standard",
                    "size": size,
                    "family": family,
                    "locations": list(locations),
                    "locationInfo": [
                        {"location": loc, "zones": zones, "zoneDetails": []}
                        for loc, zones in locations.items()
                    ],
                    "capabilities": caps,
                    "restrictions": list(restrictions or []),
                }
            )

    def fail_provisioning(
        self, error: ArmError, *, pool: str | None = None, cluster: str | None = None, times: int = 1
    ) -> None:
        """End the next matching create/update operation as Failed with `error`."""
        with self._lock:
            self._provisioning_failures.append(_Injection(error, "PUT", pool, cluster, times))

    # -- recorded requests ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- internals: lookup ----------------------------------------------------------------------

    def _cluster(self, name: str | None, resource_group: str | None) -> _Cluster:
        key = (
            self.subscription_id.lower(),
            (resource_group or self.resource_group).lower(),
            (name or self.cluster).lower(),
        )
        with self._lock:
            try:
                return self._clusters[key]
            except KeyError:
                raise KeyError(f"no managed cluster {key[2]!r} in resource group {key[1]!r}") from None

    def _find_cluster(self, sub: str, rg: str, name: str) -> _Cluster | ArmError:
        if sub.lower() != self.subscription_id.lower():
            return _not_found(f"The subscription '{sub}' could not be found.", "SubscriptionNotFound")
        if not any(k[1] == rg.lower() for k in self._clusters):
            return _not_found(f"Resource group '{rg}' could not be found.", "ResourceGroupNotFound")
        cluster = self._clusters.get((sub.lower(), rg.lower(), name.lower()))
        if cluster is None:
            return _not_found(
                f"The Resource 'Microsoft.ContainerService/managedClusters/{name}' under resource group '{rg}' "
                "was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                "ResourceNotFound",
            )
        return cluster

    # -- internals: pools and operations (called with the lock held) -----------------------------

    def _build_pool(
        self, cluster: _Cluster, name: str, requested: dict[str, Any], existing: dict[str, Any] | None
    ) -> dict[str, Any]:
        # PUT replaces the pool: omitted mutable properties fall back to AKS defaults, omitted
        # immutable ones keep their current value.
        kept = {}
        if existing is not None:
            old = existing["properties"]
            kept = {k: old[k] for k in IMMUTABLE_PROPERTIES if k in old}
        props = {**copy.deepcopy(_POOL_DEFAULTS), **kept}
        props.update({k: v for k, v in requested.items() if k not in _READ_ONLY_PROPERTIES})
        props.setdefault("orchestratorVersion", KUBERNETES_VERSION)
        props["currentOrchestratorVersion"] = props["orchestratorVersion"]
        props.setdefault("nodeImageVersion", "AKSUbuntu-2204gen2containerd-202610.01.0")
        props["powerState"] = {"code": "Running"}
        props["eTag"] = str(uuid.uuid4())
        return {"id": cluster.pool_id(name), "name": name, "type": POOL_TYPE, "properties": props}

    def _start(self, kind: Literal["create", "update", "delete"], cluster: _Cluster, pool: str) -> _Operation:
        error = None
        if kind != "delete":
            for injection in self._provisioning_failures:
                if injection.matches("PUT", cluster, pool):
                    error = injection.error
                    injection.times -= 1
                    break
            self._provisioning_failures = [i for i in self._provisioning_failures if i.times > 0]
        op = _Operation(str(uuid.uuid4()), kind, cluster, pool.lower(), self.in_progress_polls, error)
        superseded = self._pending.get((id(cluster), op.pool))
        if superseded is not None:  # a delete cancels a running create/update
            superseded.status, superseded.end_time = "Canceled", _now()
        self._operations[op.id] = op
        self._pending[(id(cluster), op.pool)] = op
        return op

    def _poll(self, op: _Operation) -> list[tuple[Callable, dict]]:
        """One observation of a running operation; returns hooks to run once the lock is released."""
        if op.status != "InProgress" or not self.auto_advance:
            return []
        if op.polls_left > 0:
            op.polls_left -= 1
            return []
        return self._complete(op)

    def _complete(self, op: _Operation) -> list[tuple[Callable, dict]]:
        op.end_time = _now()
        self._pending.pop((id(op.cluster), op.pool), None)
        pool = op.cluster.pools.get(op.pool)
        if op.kind == "delete":
            op.status = "Succeeded"
            if pool is None:
                return []
            del op.cluster.pools[op.pool]
            return [(hook, copy.deepcopy(pool)) for hook in self._deleted_hooks]
        if pool is None:  # deleted meanwhile; the delete already canceled this operation
            return []
        props = pool["properties"]
        if op.error is not None:
            op.status = "Failed"
            props["provisioningState"] = "Failed"
            props["status"] = {"provisioningError": op.error.error()}
            return []
        op.status = "Succeeded"
        props["provisioningState"] = "Succeeded"
        props.pop("status", None)
        return [(hook, copy.deepcopy(pool)) for hook in self._ready_hooks]

    def _run_hooks(self, hooks: list[tuple[Callable, dict]]) -> None:
        for hook, pool in hooks:
            try:
                hook(pool)
            except Exception as exc:
                self.hook_errors.append(exc)

    def _cluster_body(self, cluster: _Cluster) -> dict[str, Any]:
        profiles = [{"name": p["name"], **p["properties"]} for p in cluster.pools.values()]
        dns_prefix = f"{cluster.name}-dns"
        return {
            "id": cluster.id,
            "location": cluster.location,
            "name": cluster.name,
            "type": "Microsoft.ContainerService/ManagedClusters",
            "sku": {"name": "Base", "tier": "Standard"},
            "identity": {
                "type": "SystemAssigned",
                "principalId": str(uuid.uuid5(uuid.NAMESPACE_URL, cluster.id)),
                "tenantId": self.tenant_id,
            },
            "properties": {
                "provisioningState": "Succeeded",
                "powerState": {"code": "Running"},
                "kubernetesVersion": KUBERNETES_VERSION,
                "currentKubernetesVersion": KUBERNETES_VERSION,
                "dnsPrefix": dns_prefix,
                "fqdn": f"{dns_prefix}-3k9x2m1q.hcp.{cluster.location}.azmk8s.io",
                "agentPoolProfiles": profiles,
                "nodeResourceGroup": f"MC_{cluster.resource_group}_{cluster.name}_{cluster.location}",
                "enableRBAC": True,
                "networkProfile": {
                    "networkPlugin": "azure",
                    "networkPluginMode": "overlay",
                    "podCidr": "10.244.0.0/16",
                    "serviceCidr": "10.0.0.0/16",
                    "dnsServiceIP": "10.0.0.10",
                    "loadBalancerSku": "standard",
                },
                "oidcIssuerProfile": {
                    "enabled": True,
                    "issuerURL": f"https://{cluster.location}.oic.prod-aks.azure.com/{self.tenant_id}/",
                },
                "securityProfile": {"workloadIdentity": {"enabled": True}},
            },
        }


def _fake_jwt(subject: str) -> str:
    """Something shaped like a projected service-account token (the double never verifies it)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = {
        "aud": ["api://AzureADTokenExchange"],
        "sub": f"system:serviceaccount:kaito-gitops:{subject}",
        "iss": "https://oidc.example.invalid/",
        "exp": int(time.time()) + 3600,
        "jti": secrets.token_hex(8),
    }
    return f"{part({'alg': 'RS256', 'kid': 'arm-double'})}.{part(claims)}.{secrets.token_urlsafe(32)}"


# ---------------------------------------------------------------------------------------------
# HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, double: ArmDouble, context: ssl.SSLContext) -> None:
        self.double = double
        self.context = context
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, in the connection's own thread, so one slow client
        # cannot hold up accept() for the others.
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping keep-alive connections (at test end, or on stop) are not errors.
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            super().handle_error(request, client_address)


@dataclass
class _Response:
    status: int
    body: Any = None  # dict -> JSON; None -> empty
    headers: dict[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as ARM and the SDK's requests session expect
    disable_nagle_algorithm = True  # else every keep-alive request stalls ~40 ms (delayed ACK)
    timeout = 30  # idle keep-alive connections end eventually after stop()
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _serve(self) -> None:
        double = self.server.double
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in self.headers.items()}
        record = RecordedRequest(
            self.command, path, query, query.get("api-version"), headers, None, at=time.monotonic()
        )
        hooks: list[tuple[Callable, dict]] = []
        try:
            if m := _TOKEN_PATH.match(path):
                form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
                record.body = {k: ("<redacted>" if k == "client_assertion" else v) for k, v in form.items()}
                response = self._token(double, m["tenant"], form)
            else:
                try:
                    record.body = json.loads(raw) if raw else None
                except ValueError as exc:
                    response = _error(_invalid_content(str(exc)))
                else:
                    response, hooks = self._arm(double, path, query, record.body)
        except Exception as exc:  # a bug in the double must not hang the client
            response = _error(ArmError(500, "InternalServerError", f"arm double: {exc!r}"))
        double._run_hooks(hooks)  # outside the lock, before the client hears the outcome
        record.status = response.status
        with double._lock:
            double._requests.append(record)
        self._send(response)

    def _send(self, response: _Response) -> None:
        payload = b"" if response.body is None else json.dumps(response.body).encode()
        self.send_response(response.status)
        request_id = str(uuid.uuid4())
        self.send_header("x-ms-request-id", request_id)
        self.send_header(
            "x-ms-correlation-request-id", self.headers.get("x-ms-client-request-id") or request_id
        )
        for name, value in response.headers.items():
            self.send_header(name, value)
        if payload:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    # -- Entra ID token endpoint ----------------------------------------------------------------

    def _token(self, double: ArmDouble, tenant: str, form: dict[str, str]) -> _Response:
        if self.command != "POST":
            return _aad_error(
                405, "invalid_request", "AADSTS900561: The endpoint only accepts POST requests."
            )
        if tenant != double.tenant_id:
            return _aad_error(400, "invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            return _aad_error(
                400, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type."
            )
        if form.get("client_id") != double.client_id:
            return _aad_error(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{form.get('client_id')}' was not "
                f"found in the directory '{tenant}'.",
            )
        if form.get("client_assertion_type") != JWT_BEARER:
            return _aad_error(
                400,
                "invalid_request",
                "AADSTS50027: JWT token is invalid or malformed (client_assertion_type).",
            )
        with double._lock:
            valid = {double.federated_token_file.read_text(encoding="utf-8"), *double._valid_assertions}
        if form.get("client_assertion") not in valid:
            return _aad_error(
                400,
                "invalid_client",
                "AADSTS70021: No matching federated identity record found for presented assertion. "
                "Assertion Audience: 'api://AzureADTokenExchange'.",
            )
        if form.get("scope") != ARM_SCOPE:
            return _aad_error(
                400,
                "invalid_scope",
                f"AADSTS70011: The provided value for the input parameter 'scope' is not valid. "
                f"The scope {form.get('scope')} is not valid.",
            )
        token = f"arm-double.{secrets.token_urlsafe(24)}"
        with double._lock:
            double._issued_tokens.add(token)
        body = {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": token}
        return _Response(200, body, {"Cache-Control": "no-store, no-cache"})

    # -- ARM ------------------------------------------------------------------------------------

    def _arm(
        self, double: ArmDouble, path: str, query: dict[str, str], body: Any
    ) -> tuple[_Response, list[tuple[Callable, dict]]]:
        auth = self.headers.get("Authorization")
        if not auth:
            return _error(MISSING_AUTHORIZATION), []
        token = auth.removeprefix("Bearer ")
        with double._lock:
            valid = token in double._issued_tokens or (
                double.static_token is not None and token == double.static_token
            )
        if not auth.startswith("Bearer ") or not valid:
            return _error(INVALID_TOKEN), []

        with double._lock:
            if m := _POLL_PATH.match(path):
                return self._poll(double, m["kind"], m["id"])
            if (usages := _USAGES_PATH.match(path)) or _SKUS_PATH.match(path):
                return self._compute(double, usages, query), []
            m = _CLUSTER_PATH.match(path)
            if m is None:
                return _error(_not_found(f"The requested path '{path}' is not served by this double.")), []
            if "api-version" not in query:
                return _error(MISSING_API_VERSION), []
            if not _API_VERSION.match(version := query["api-version"]):
                return _error(
                    ArmError(400, "InvalidApiVersionParameter", f"The api-version '{version}' is invalid.")
                ), []
            cluster = double._find_cluster(m["sub"], m["rg"], m["cluster"])
            if isinstance(cluster, ArmError):
                return _error(cluster), []
            if injected := _take_injection(double, self.command, cluster, m["pool"]):
                return _error(injected), []
            if m["pools"] is None:
                if self.command != "GET":
                    return _error(_unsupported(self.command)), []
                return _Response(200, double._cluster_body(cluster)), []
            if m["pool"] is None:
                if self.command != "GET":
                    return _error(_unsupported(self.command)), []
                return _Response(200, {"value": [copy.deepcopy(p) for p in cluster.pools.values()]}), []
            name = m["pool"]
            if self.command == "GET":
                return self._get_pool(double, cluster, name)
            if self.command == "PUT":
                return self._put_pool(double, cluster, name, body), []
            if self.command == "DELETE":
                return self._delete_pool(double, cluster, name), []
            return _error(_unsupported(self.command)), []

    def _compute(self, double: ArmDouble, usages: re.Match | None, query: dict[str, str]) -> _Response:
        if self.command != "GET":
            return _error(_unsupported(self.command))
        if "api-version" not in query:
            return _error(MISSING_API_VERSION)
        api = "usages" if usages else "skus"
        if injected := _take_injection(double, "GET", None, None, api):
            return _error(injected)
        if usages:
            items = list(double._usages.get(usages["location"].lower(), {}).values())
            return _Response(200, {"value": copy.deepcopy(items)})
        items = double._skus
        if flt := query.get("$filter"):
            m = _LOCATION_FILTER.match(flt)
            if m is None:
                return _error(ArmError(400, "InvalidFilter", f"The filter '{flt}' is not supported."))
            loc = m["location"].lower()
            items = [
                {
                    **sku,
                    "locations": [x for x in sku["locations"] if x.lower() == loc],
                    "locationInfo": [i for i in sku["locationInfo"] if i["location"].lower() == loc],
                }
                for sku in items
                if any(x.lower() == loc for x in sku["locations"])
            ]
        return _Response(200, {"value": copy.deepcopy(items)})

    def _poll(self, double: ArmDouble, kind: str, op_id: str) -> tuple[_Response, list]:
        op = double._operations.get(op_id)
        if op is None or (kind == "deletes") != (op.kind == "delete"):
            return _error(_not_found(f"The operation '{op_id}' was not found.")), []
        if injected := _take_injection(double, "GET", op.cluster, op.pool):
            return _error(injected), []
        hooks = double._poll(op)
        wait = _poll_wait(double, op)
        if kind == "operations":
            return _Response(200, op.body(), wait), hooks
        if op.status == "InProgress":  # Location polling: 202 until done, then 204
            return _Response(202, None, {"Location": f"{double.base_url}/deletes/{op.id}", **wait}), hooks
        return _Response(204), hooks

    def _get_pool(self, double: ArmDouble, cluster: _Cluster, name: str) -> tuple[_Response, list]:
        hooks = []
        if op := double._pending.get((id(cluster), name.lower())):
            hooks = double._poll(op)  # a GET of the resource is how style (a) polls
        pool = cluster.pools.get(name.lower())
        if pool is None:
            return _error(
                _not_found(f"Agent pool '{name}' not found in managed cluster '{cluster.name}'.")
            ), hooks
        return _Response(200, copy.deepcopy(pool), _poll_wait(double, op) if op else {}), hooks

    def _put_pool(self, double: ArmDouble, cluster: _Cluster, name: str, body: Any) -> _Response:
        requested = body.get("properties", {}) if isinstance(body, dict) else None
        if not isinstance(requested, dict):
            return _error(_invalid_content("a JSON object with 'properties' is required"))
        rule = _WINDOWS_POOL_NAME if requested.get("osType") == "Windows" else _LINUX_POOL_NAME
        if not rule.match(name):
            return _error(INVALID_POOL_NAME)
        count = requested.get("count", 1)
        if not isinstance(count, int) or not 0 <= count <= 1000:
            message = f"The value of parameter agentPoolProfile.count is invalid: {count!r}. It must be between 0 and 1000."
            return _error(invalid_parameter(message, target="agentPoolProfile.count"))
        existing = cluster.pools.get(name.lower())
        if failed := _precondition(self.headers, existing):
            return _error(failed)
        if running := double._pending.get((id(cluster), name.lower())):
            return _error(
                operation_not_allowed(
                    f"Operation is not allowed because there's an in progress {running.kind} node pool operation "
                    f"on agent pool '{name}'. Please wait for it to finish before starting a new operation.",
                    status=409,
                )
            )
        if existing is not None:
            for prop in IMMUTABLE_PROPERTIES:
                if prop in requested and requested[prop] != existing["properties"].get(prop):
                    return _error(property_change_not_allowed(prop))
        pool = double._build_pool(cluster, name, requested, existing)
        pool["properties"]["provisioningState"] = "Creating" if existing is None else "Updating"
        cluster.pools[name.lower()] = pool
        op = double._start("create" if existing is None else "update", cluster, name)
        style = self.headers.get(LRO_STYLE_HEADER) or double.lro_style
        headers = {}
        if style == ASYNC_OPERATION:
            headers["Azure-AsyncOperation"] = f"{double.base_url}/operations/{op.id}"
        return _Response(201 if existing is None else 200, copy.deepcopy(pool), headers)

    def _delete_pool(self, double: ArmDouble, cluster: _Cluster, name: str) -> _Response:
        pool = cluster.pools.get(name.lower())
        if pool is None:
            return _Response(204)  # ARM deletes are idempotent
        if failed := _precondition(self.headers, pool):
            return _error(failed)
        running = double._pending.get((id(cluster), name.lower()))
        if running is not None and running.kind == "delete":
            return _Response(202, None, {"Location": f"{double.base_url}/deletes/{running.id}"})
        system_pools = [p for p in cluster.pools.values() if p["properties"].get("mode") == "System"]
        if pool["properties"].get("mode") == "System" and len(system_pools) == 1:
            return _error(
                operation_not_allowed(
                    "There has to be at least one system agent pool. Deleting the last system agent pool "
                    f"'{name}' is not allowed."
                )
            )
        pool["properties"]["provisioningState"] = "Deleting"
        op = double._start("delete", cluster, name)
        return _Response(202, None, {"Location": f"{double.base_url}/deletes/{op.id}"})


def _take_injection(
    double: ArmDouble, method: str, cluster: _Cluster | None, pool: str | None, api: str | None = None
) -> ArmError | None:
    for injection in double._injections:
        if injection.matches(method, cluster, pool, api):
            injection.times -= 1
            double._injections = [i for i in double._injections if i.times > 0]
            return injection.error
    return None


def zone_restriction(location: str, zones: list[str]) -> dict[str, Any]:
    """A resource SKU restriction: not available in these zones for this subscription."""
    return {
        "type": "Zone",
        "values": [location],
        "restrictionInfo": {"locations": [location], "zones": list(zones)},
        "reasonCode": "NotAvailableForSubscription",
    }


def location_restriction(location: str) -> dict[str, Any]:
    """A resource SKU restriction: not available in this location for this subscription."""
    return {
        "type": "Location",
        "values": [location],
        "restrictionInfo": {"locations": [location]},
        "reasonCode": "NotAvailableForSubscription",
    }


def _poll_wait(double: ArmDouble, op: _Operation) -> dict[str, str]:
    if op.status == "InProgress" and double.poll_retry_after_ms:
        return {"retry-after-ms": str(double.poll_retry_after_ms)}
    return {}


def _precondition(headers: Any, pool: dict[str, Any] | None) -> ArmError | None:
    """If-Match / If-None-Match against the pool's eTag (the SDK's etag= / match_condition=)."""
    etag = pool["properties"].get("eTag") if pool else None
    if_match, if_none_match = headers.get("If-Match"), headers.get("If-None-Match")
    if if_match and (pool is None or (if_match != "*" and if_match.strip('"') != etag)):
        return ArmError(
            412, "PreconditionFailed", f"The eTag '{if_match}' does not match the agent pool's eTag."
        )
    if if_none_match == "*" and pool is not None:
        return ArmError(412, "PreconditionFailed", "The agent pool already exists (If-None-Match: *).")
    return None


def _unsupported(method: str) -> ArmError:
    return ArmError(
        405, "UnsupportedHttpMethod", f"The requested resource does not support http method '{method}'."
    )


def _error(error: ArmError) -> _Response:
    return _Response(error.status, error.body(), dict(error.headers))


def _aad_error(status: int, error: str, description: str) -> _Response:
    body = {
        "error": error,
        "error_description": description,
        "error_codes": [int(re.match(r"AADSTS(\d+)", description)[1])],  # type: ignore[index]
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
        "error_uri": "https://login.microsoftonline.com/error",
    }
    return _Response(status, body)
