"""`kaito-gitops diff` against the Kubernetes API double: creations, no-op, someone's drift, a
dropped workspace; nothing is written by the diff itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kubernetes import client
from support.workspaces import smol_ws

from reconciler.cli import main
from reconciler.planning import plan_revision
from reconciler.render.common import RenderSettings
from reconciler.source.tree import disk_files
from reconciler.targets.kubernetes import KubernetesTarget
from reconciler.validation import validate_sources


def apply_folder(api: client.ApiClient, folder: Path) -> None:
    """What a daemon pass would apply for these files (with the CLI's default settings)."""
    rev = validate_sources(list(disk_files([str(folder)], 1 << 20, relative_to=str(folder.parent))))
    target = KubernetesTarget(api)
    target.refresh()
    for plan in plan_revision(rev, RenderSettings()).plans.values():
        target.apply(plan)


def test_diff_shows_what_applying_would_change_and_writes_nothing(kube_api, tmp_path, capsys):
    folder = tmp_path / "workspaces"
    folder.mkdir()
    (folder / "a.yaml").write_text(smol_ws("a"))
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # names are relative to its root
    kubeconfig = str(kube_api.write_kubeconfig(tmp_path / "kubeconfig"))
    diff = ["diff", str(folder), "--kubeconfig", kubeconfig]

    # an empty cluster: every object would be created
    assert main(diff) == 1
    out, err = capsys.readouterr()
    assert (
        "--- /dev/null\n+++ desired/StatefulSet/default/a" in out and "+++ desired/Service/default/a" in out
    )
    assert "object(s) would change in 1 workspace(s)" in err
    assert not kube_api.objects("StatefulSet"), "a diff writes nothing (dry run)"

    # applied: nothing to show
    api = client.ApiClient(kube_api.client_config())
    apply_folder(api, folder)
    assert main(diff) == 0
    out, err = capsys.readouterr()
    assert out == "" and err.strip().startswith("0 object(s)"), out

    # someone scales the StatefulSet by hand: the diff shows our apply putting it back
    client.AppsV1Api(api).patch_namespaced_stateful_set("a", "default", {"spec": {"replicas": 3}})
    assert main(diff) == 1
    out, _ = capsys.readouterr()
    assert "--- live/StatefulSet/default/a" in out
    assert "-  replicas: 3\n+  replicas: 1\n" in out, out
    assert client.AppsV1Api(api).read_namespaced_stateful_set("a", "default").spec.replicas == 3

    # the file is gone: every object of the workspace would be pruned
    (folder / "a.yaml").unlink()
    (folder / "b.yaml").write_text(smol_ws("b"))
    assert main(diff) == 1
    out, _ = capsys.readouterr()
    assert (
        "# pruned: workspace default/a is not in the files\n--- live/StatefulSet/default/a\n+++ /dev/null"
        in out
    )
    assert "+++ desired/StatefulSet/default/b" in out


def test_diff_says_when_the_cluster_cannot_be_reached(tmp_path, capsys):
    folder = tmp_path / "workspaces"
    folder.mkdir()
    (folder / "a.yaml").write_text(smol_ws("a"))
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: t}}]\n"
    )
    assert main(["diff", str(folder), "--kubeconfig", str(cfg)]) == 2
    _, err = capsys.readouterr()
    assert "cannot reach the cluster" in err and "Traceback" not in err


def test_diff_shows_the_other_objects_created_drifted_and_pruned(kube_api, tmp_path, capsys):
    from reconciler.planning import plan_revision as plan

    folder = tmp_path / "workspaces"
    folder.mkdir()
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: serving}\ndata: {mode: fast}\n"
    (folder / "cm.yaml").write_text(cm)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    kubeconfig = str(kube_api.write_kubeconfig(tmp_path / "kubeconfig"))
    diff = ["diff", str(folder), "--kubeconfig", kubeconfig]
    assert main(diff) == 1
    out, err = capsys.readouterr()
    assert "--- /dev/null\n+++ desired/ConfigMap/default/serving" in out and "1 other object(s)" in err
    assert kube_api.objects("ConfigMap") == [], "a dry run"
    api = client.ApiClient(kube_api.client_config())
    target = KubernetesTarget(api)
    rev = validate_sources(list(disk_files([str(folder)], 1 << 20, relative_to=str(tmp_path))))
    target.apply_objects(plan(rev).objects, set(), prune=True)
    assert main(diff) == 0
    capsys.readouterr()
    client.CoreV1Api(api).patch_namespaced_config_map("serving", "default", {"data": {"mode": "slow"}})
    assert main(diff) == 1
    out, _ = capsys.readouterr()
    assert "-  mode: slow\n+  mode: fast\n" in out, out
    (folder / "cm.yaml").unlink()
    (folder / "a.yaml").write_text(smol_ws("a"))
    assert main(diff) == 1
    out, _ = capsys.readouterr()
    assert (
        "# pruned: ConfigMap default/serving is not in the files\n--- live/ConfigMap/default/serving" in out
    )
