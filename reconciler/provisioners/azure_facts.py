"""Read-only ARM calls the planner makes before merge: the cluster's location and zones, the
vCPU quota per VM family there, and which sizes the subscription may use there.

Everything here needs only the Reader role on the subscription. Answers are kept for `ttl`
seconds (one daemon pass, or a burst of pull-request reviews, reads each once). A read that is
refused, throttled or unreachable becomes an "unknown, because ..." in the facts: a plan or a
review never waits long on ARM and never fails because of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from ..capacity import AzureFacts, FamilyQuota, SkuOffer
from ..logs import error_text

log = structlog.get_logger("kaito_gitops.azure")

MAX_WAIT = 5.0  # the longest Retry-After a read waits out once; longer ones make the facts unknown
READER_HINT = "grant it the Reader role on the subscription (docs/install.md, 'Azure permissions')"


class _Unknown(Exception):
    """A read that did not give an answer, with a sentence saying why."""


class AzureFactsReader:
    def __init__(
        self,
        containers: Any,
        compute: Any,
        subscription: str,
        resource_group: str,
        cluster: str,
        *,
        ttl: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.containers, self.compute = containers, compute
        self.subscription, self.resource_group, self.cluster = subscription, resource_group, cluster
        self.ttl = ttl
        self._sleep = sleep
        self._lock = threading.Lock()
        self._cached: tuple[float, AzureFacts] | None = None
        self._everywhere: tuple[float, dict] | None = None
        self._quiet_until = 0.0  # ARM asked us to wait (429 Retry-After)
        self.calls = 0

    @classmethod
    def from_config(cls, cfg) -> AzureFactsReader:
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.containerservice import ContainerServiceClient

        from .aks import arm_scope, credential_for

        endpoint = cfg.arm_endpoint.rstrip("/")
        kw = {
            "base_url": endpoint,
            "credential_scopes": [arm_scope(endpoint, cfg.arm_audience)],
            "retry_total": 0,  # this module decides how long to wait (see MAX_WAIT)
        }
        credential = credential_for(cfg)
        return cls(
            ContainerServiceClient(credential, cfg.aks_subscription, **kw),
            ComputeManagementClient(credential, cfg.aks_subscription, **kw),
            cfg.aks_subscription,
            cfg.aks_resource_group,
            cfg.aks_cluster,
        )

    # -- the one entry point -----------------------------------------------------------------
    def facts(self, sizes: list[tuple[str, ...]] | None = None) -> AzureFacts:
        """What Azure says now (or within `ttl`). `sizes`: VM sizes the plan needs (each with its
        other names); one not usable in the cluster's location makes the reader look up where
        else it is offered."""
        with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached[0] < self.ttl:
                facts = self._cached[1]
            else:
                facts = self._read()
                self._cached = (now, facts)
            if sizes and facts.offers is not None:
                self._add_elsewhere(facts, sizes)
            return facts

    # -- reads ----------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        if time.monotonic() < self._quiet_until:
            wait = round(self._quiet_until - time.monotonic())
            raise _Unknown(f"ARM throttled these reads; asking again in {wait}s")
        for attempt in (1, 2):
            self.calls += 1
            try:
                return fn()
            except HttpResponseError as e:
                status = e.status_code or 0
                code = (e.error.code if e.error else "") or ""
                if status == 429:
                    wait = _retry_after(e)
                    if attempt == 1 and wait <= MAX_WAIT:
                        self._sleep(wait)
                        continue
                    self._quiet_until = time.monotonic() + wait
                    raise _Unknown(
                        f"ARM throttled reading {what} (429); it asks to wait {wait:.0f}s"
                    ) from None
                if status == 403:
                    raise _Unknown(
                        f"the identity kaito-gitops runs as may not read {what} in subscription "
                        f"{self.subscription} ({code or 'Forbidden'}); {READER_HINT}"
                    ) from None
                if status >= 500 and attempt == 1:
                    continue
                raise _Unknown(f"reading {what} failed: {status} {code}".rstrip()) from None
            except (ServiceRequestError, ServiceResponseError) as e:
                raise _Unknown(f"ARM unreachable while reading {what}: {error_text(e)[:200]}") from None
        raise _Unknown(f"reading {what} failed twice")

    def _read(self) -> AzureFacts:
        try:
            cluster = self._call(
                f"cluster {self.resource_group}/{self.cluster}",
                lambda: self.containers.managed_clusters.get(self.resource_group, self.cluster),
            )
        except _Unknown as e:
            return AzureFacts(location="", quota_unknown=str(e), offers_unknown=str(e))
        location = cluster.location
        zones = sorted({z for p in cluster.agent_pool_profiles or [] for z in (p.availability_zones or [])})
        facts = AzureFacts(location=location, cluster_zones=tuple(zones))
        try:
            usages = self._call(
                f"compute quota in {location}", lambda: list(self.compute.usage.list(location))
            )
            facts.quotas = {
                u.name.value.lower(): FamilyQuota(u.name.value, int(u.current_value), int(u.limit))
                for u in usages
                if u.name and u.name.value
            }
        except _Unknown as e:
            facts.quota_unknown = str(e)
        try:
            skus = self._call(
                f"VM sizes offered in {location}",
                lambda: list(self.compute.resource_skus.list(filter=f"location eq '{location}'")),
            )
            facts.offers = {o.name.lower(): o for o in (_offer(s, location) for s in skus) if o}
        except _Unknown as e:
            facts.offers_unknown = str(e)
        log.info(
            "azure facts read",
            location=location,
            zones=zones,
            families=len(facts.quotas or {}),
            sizes=len(facts.offers or {}),
            unknown=[x for x in (facts.quota_unknown, facts.offers_unknown) if x],
        )
        return facts

    def _add_elsewhere(self, facts: AzureFacts, sizes: list[tuple[str, ...]]) -> None:
        offers = facts.offers or {}

        def usable_here(size: str) -> bool:
            o = offers.get(size.lower())
            if o is None or o.restricted:
                return False
            usable = set(o.zones) - set(o.restricted_zones)
            return (
                bool(usable & set(facts.cluster_zones)) if facts.cluster_zones and o.zones else bool(usable)
            )

        missing = {n.lower() for names in sizes if not any(map(usable_here, names)) for n in names}
        missing -= set(facts.elsewhere)
        if not missing:
            return
        now = time.monotonic()
        if not self._everywhere or now - self._everywhere[0] > max(self.ttl, 3600):
            try:
                skus = self._call("VM sizes in every region", lambda: list(self.compute.resource_skus.list()))
            except _Unknown as e:
                log.info("cannot say where sizes are offered", why=str(e))
                return
            self._everywhere = (now, _where_offered(skus))
        for size in missing:
            here = facts.location.lower()
            facts.elsewhere[size] = [x for x in self._everywhere[1].get(size, []) if x[0].lower() != here]


def _retry_after(e: HttpResponseError) -> float:
    headers = e.response.headers if e.response is not None else {}
    for name, scale in (("Retry-After", 1.0), ("retry-after-ms", 0.001)):
        try:
            value = float(headers.get(name, "")) * scale
        except ValueError:
            continue
        if value > 0:
            return value
    return 10.0


def _offer(sku, location: str) -> SkuOffer | None:
    if (sku.resource_type or "").lower() != "virtualmachines" or not sku.name:
        return None
    caps = {c.name: c.value for c in sku.capabilities or []}
    zones: list[str] = []
    for info in sku.location_info or []:
        if (info.location or "").lower() == location.lower():
            zones += info.zones or []
    restricted, restricted_zones = False, []
    for r in sku.restrictions or []:
        info = r.restriction_info
        where = [x.lower() for x in ((info.locations if info else None) or r.values or [])]
        if where and location.lower() not in where:
            continue  # a restriction of another location
        if (r.type or "").lower() == "location":
            restricted = True
        elif (r.type or "").lower() == "zone" and info is not None:
            restricted_zones += info.zones or []
    try:
        vcpus = int(caps.get("vCPUs", "0"))
    except ValueError:
        vcpus = 0
    return SkuOffer(
        sku.name, sku.family or "", vcpus, tuple(sorted(zones)), tuple(sorted(restricted_zones)), restricted
    )


def _where_offered(skus) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """size -> [(location, usable zones)] where this subscription may create it."""
    out: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for sku in skus:
        for loc in sku.locations or []:
            offer = _offer(sku, loc)
            if offer is None or offer.restricted:
                continue
            usable = tuple(z for z in offer.zones if z not in offer.restricted_zones)
            if offer.zones and not usable:
                continue
            out.setdefault(offer.name.lower(), []).append((loc, usable))
    for v in out.values():
        v.sort()
    return out


def configured(cfg) -> bool:
    """Whether the settings name an AKS cluster whose subscription can be read."""
    return bool(cfg.aks_subscription and cfg.aks_resource_group and cfg.aks_cluster)
