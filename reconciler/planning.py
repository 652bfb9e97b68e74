"""Plan: from validated workspaces to the desired state (objects, node pools, GPUs, cost).

A pure function of a validated Revision and render settings. The daemon applies it, the
pull-request review shows it, and `kaito-gitops plan/render` print or write it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from .catalog import Catalog, Model, Sku, load_catalog
from .companions import KubeObject, ObjectKey, desired_body
from .configs import TRAINING_KEY, merge_training_config, server_config_for
from .inferenceset import member
from .render import inference as render_inference
from .render import tuning as render_tuning
from .render.common import ANNOTATION_OBJECT_HASH, RenderSettings, stamp
from .render.nodepool import NodePoolSpec, node_pool
from .sizing import DoesNotFit, InferenceSizing, Overrides, TuningSizing, size_inference, size_tuning
from .validation import Revision, WorkspaceKey
from .workspace import ConfigMap, Workspace


@dataclass(frozen=True)
class WorkspacePlan:
    workspace: Workspace
    model: Model | None
    sku: Sku | None
    sizing: InferenceSizing | TuningSizing | None
    node_pool: NodePoolSpec | None  # None: bring your own nodes (or no catalog size to provision)
    objects: tuple[dict, ...]  # in apply order
    nodes: int
    gpus_per_node: int
    command: tuple[str, ...]
    notes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()  # why this workspace cannot be applied as planned
    provisioned: bool = False  # we provide its nodes (an instanceType, and not bring-your-own)

    @property
    def key(self) -> WorkspaceKey:
        return self.workspace.key

    @property
    def kind(self) -> str:
        return self.workspace.kind

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def price_per_hour(self) -> float | None:
        if self.sku is None or self.sku.price_per_hour is None:
            return None
        return round(self.nodes * self.sku.price_per_hour, 3)

    def object_hashes(self) -> dict[tuple[str, str], str]:
        return {
            (o["kind"], o["metadata"]["name"]): o["metadata"]["annotations"][ANNOTATION_OBJECT_HASH]
            for o in self.objects
        }


@dataclass(frozen=True)
class ObjectPlan:
    """One companion object as it will be applied."""

    source: KubeObject
    body: dict

    @property
    def key(self) -> ObjectKey:
        return self.source.key

    @property
    def rank(self) -> int:
        return self.source.rank

    @property
    def object_hash(self) -> str:
        return self.body["metadata"]["annotations"][ANNOTATION_OBJECT_HASH]


def plan_objects(rev: Revision, cache: dict | None = None) -> dict[ObjectKey, ObjectPlan]:
    """Every valid companion object, in apply order (kind rank, then key).

    With `cache` (kept by the caller), an object read from the same document as last time (the
    validation cache hands back the same Document for an unchanged file) keeps its plan."""
    valid = rev.valid_objects()
    order = sorted(valid.values(), key=lambda o: (o.rank, o.key))
    out, used = {}, {}
    for o in order:
        ckey = (id(o.document), o.key)
        hit = cache.get(ckey) if cache is not None else None
        plan = hit[1] if hit is not None and hit[0] is o.document else ObjectPlan(o, desired_body(o))
        out[o.key] = plan
        used[ckey] = (o.document, plan)  # the document is held, so its id is not reused meanwhile
    if cache is not None:
        cache.clear()
        cache.update(used)
    return out


@dataclass
class DesiredState:
    plans: dict[WorkspaceKey, WorkspacePlan] = field(default_factory=dict)
    objects: dict[ObjectKey, ObjectPlan] = field(default_factory=dict)  # the companions, in apply order
    sets: dict = field(default_factory=dict)  # (ns, name) -> inferenceset.InferenceSet; members are in plans
    # a set with no replica in git (replicas 0, scaled up on demand): one member's plan, not applied,
    # so plans and comments can show its hardware and its cost at max
    set_templates: dict = field(default_factory=dict)

    @property
    def gpus(self) -> int:
        return sum(p.gpus for p in self.plans.values())

    @property
    def price_per_hour(self) -> float:
        return round(sum(p.price_per_hour or 0 for p in self.plans.values()), 3)


def plan_workspace(
    ws: Workspace,
    *,
    catalog: Catalog,
    configmaps: dict[WorkspaceKey, ConfigMap],
    settings: RenderSettings,
    byo_sku: Sku | None = None,
) -> WorkspacePlan:
    """Size and render one (valid) workspace.

    `byo_sku` describes bring-your-own nodes when the daemon has read their GPU labels;
    without it such a workspace is planned for one GPU per node and says so.
    """
    model = catalog.model(ws.preset.name) if ws.preset and ws.preset.name else None
    named = catalog.sku(ws.resource.instance_type) if ws.resource.instance_type else None
    provisioned = bool(ws.resource.instance_type) and not settings.byo_nodes
    sku = named if provisioned else (byo_sku or named)
    notes: list[str] = []
    problems: list[str] = []
    if not provisioned:
        notes.append("bring-your-own nodes: pods go to nodes matching labelSelector; no node pool is created")
    if ws.inference is not None:
        server, config_in_cluster = server_config_for(ws, configmaps)
        overrides = server.overrides if server else Overrides()
        sizing: InferenceSizing | TuningSizing | None = None
        if model is not None and sku is not None and ws.inference.template is None:
            result = size_inference(model, sku, overrides)
            if isinstance(result, DoesNotFit):
                problems.append(result.reason)
            else:
                sizing = result
                notes.extend(result.notes)
        gpus_per_node = sku.gpu_count if sku else 1
        nodes = sizing.nodes if isinstance(sizing, InferenceSizing) else (ws.resource.count or 1)
        if sizing is None and model is None and ws.inference.template is None:
            notes.append(
                f"{ws.preset.name if ws.preset else '?'} is not in the catalog: served best effort, "
                f"{nodes} node(s), tensor parallel over each node's GPUs unless inference_config.yaml "
                "says otherwise"
            )
        if config_in_cluster:
            notes.append(f"ConfigMap {ws.inference.config} is read from the cluster when the pod starts")
        objects = render_inference.render(
            ws,
            model=model,
            sizing=sizing if isinstance(sizing, InferenceSizing) else None,
            server=server,
            settings=settings,
            provisioned=provisioned,
            gpus_per_node=gpus_per_node,
            nodes=nodes,
            config_in_cluster=config_in_cluster,
        )
        command_source = objects[-1]["spec"]["template"]["spec"]["containers"][0].get("command", [])
    else:
        assert ws.tuning is not None
        cm = configmaps.get((ws.namespace, ws.tuning.config)) if ws.tuning.config else None
        text = cm.data.get(TRAINING_KEY) if cm else None
        training = merge_training_config(ws.tuning.method or "qlora", text)
        if ws.tuning.config and cm is None:
            notes.append(
                f"ConfigMap {ws.tuning.config} is not in the repository: tuning uses the "
                f"{ws.tuning.method} defaults"
            )
        sizing = None
        if model is not None and sku is not None and ws.tuning.method in ("lora", "qlora"):
            result = size_tuning(model, sku, ws.tuning.method)
            if isinstance(result, DoesNotFit):
                problems.append(result.reason)
            else:
                sizing = result
                notes.extend(result.notes)
        nodes, gpus_per_node = 1, (sku.gpu_count if sku else 1)
        objects = render_tuning.render(ws, model, sku, sizing, training, settings, provisioned)
        command_source = objects[-1]["spec"]["template"]["spec"]["containers"][0]["command"]
    pool = node_pool(ws, sku, nodes, model) if provisioned and sku is not None else None
    return WorkspacePlan(
        workspace=ws,
        model=model,
        sku=sku,
        sizing=sizing,
        node_pool=pool,
        # copies: no structure is shared between objects (or with module constants)
        objects=tuple(stamp(plain_copy(o)) for o in objects),
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        command=tuple(command_source),
        notes=tuple(dict.fromkeys(notes)),
        problems=tuple(problems),
        provisioned=provisioned,
    )


def plain_copy(value):
    """A deep copy of JSON-like data (dicts, lists, scalars), several times faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_copy(v) for v in value]
    return value


def plan_cache_key(
    ws: Workspace, configmaps: dict[WorkspaceKey, ConfigMap], settings: RenderSettings, byo_sku: Sku | None
) -> str:
    """Everything a plan depends on but the revision: equal keys give equal plans."""
    names = [
        n
        for n in ((ws.inference.config if ws.inference else None), (ws.tuning.config if ws.tuning else None))
        if n
    ]
    cms = {
        n: (configmaps[(ws.namespace, n)].data if (ws.namespace, n) in configmaps else None) for n in names
    }
    unrevised = repr(replace(settings, revision=""))  # every setting counts, whatever is added later
    return json.dumps(
        [ws.path, ws.namespace, ws.document.data, cms, unrevised, repr(byo_sku)], sort_keys=True, default=str
    )


def plan_revision(
    rev: Revision,
    settings: RenderSettings | None = None,
    catalog: Catalog | None = None,
    byo: dict[WorkspaceKey, Sku] | None = None,
    cache: dict | None = None,
    object_cache: dict | None = None,
) -> DesiredState:
    """Plan every valid workspace of a revision. Invalid ones are left out (they keep their last good state).

    With `cache` (a dict kept by the caller), a workspace whose file, ConfigMaps and settings did
    not change keeps its previous plan, revision annotation included: that annotation says when
    the objects last changed, which is exactly what reusing the plan preserves.
    """
    catalog = catalog or load_catalog()
    settings = settings or RenderSettings()
    state = DesiredState(objects=plan_objects(rev, object_cache), sets={s.key: s for s in rev.inference_sets})
    used: dict[str, WorkspacePlan] = {}
    for key, ws in sorted(rev.valid_workspaces().items()):
        byo_sku = (byo or {}).get(key)
        ckey = plan_cache_key(ws, rev.configmaps, settings, byo_sku) if cache is not None else ""
        plan = cache.get(ckey) if cache is not None else None
        if plan is None:
            plan = plan_workspace(
                ws, catalog=catalog, configmaps=rev.configmaps, settings=settings, byo_sku=byo_sku
            )
        state.plans[key] = used[ckey] = plan
    for s in rev.inference_sets:  # no replica in git: one member's plan, to show, never to apply
        if s.name and s.replicas == 0 and s.key not in rev.held_sets:
            ws = member(s, 0)
            state.set_templates[s.key] = plan_workspace(
                ws,
                catalog=catalog,
                configmaps=rev.configmaps,
                settings=settings,
                byo_sku=(byo or {}).get(ws.key),
            )
    if cache is not None:
        cache.clear()
        cache.update(used)
    return state
