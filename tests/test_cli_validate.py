"""`kaito-gitops validate`: formats, exit codes, --base against a real git history, the shipped schema."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import git
import jsonschema
import pytest

from reconciler.cli import main

ROOT = Path(__file__).resolve().parent.parent
GOOD = (ROOT / "example-repo" / "local" / "smollm2.yaml").read_text()
BAD = GOOD.replace("instanceType:", "instancetype:")


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "good.yaml").write_text(GOOD)
    (tmp_path / "ws" / "notes.txt").write_text("not yaml")
    (tmp_path / "ws" / ".hidden").mkdir()
    (tmp_path / "ws" / ".hidden" / "x.yaml").write_text("a: [\n")
    return tmp_path


def test_exit_0_when_clean(files, capsys):
    assert main(["validate", "ws"]) == 0
    assert "1 file(s), 1 workspace(s): 0 error(s)" in capsys.readouterr().err


def test_exit_1_and_text_lines_on_errors(files, capsys):
    (files / "ws" / "bad.yaml").write_text(BAD.replace("name: smollm2", "name: other"))
    assert main(["validate", "ws"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(
        "ws/bad.yaml:10:3: error: resource.instancetype: unknown field 'instancetype'"
    )
    assert out.splitlines()[0].endswith("[schema-unknown-field]")


def test_json_and_github_formats(files, capsys):
    (files / "ws" / "bad.yaml").write_text(BAD.replace("name: smollm2", "name: other"))
    assert main(["validate", "ws", "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert {
        "path": "ws/bad.yaml",
        "line": 10,
        "col": 3,
        "severity": "error",
        "rule": "schema-unknown-field",
    }.items() <= data[0].items()
    assert main(["validate", "ws", "--format", "github"]) == 1
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("::error file=ws/bad.yaml,line=10,col=3,title=schema-unknown-field::")


def test_exit_2_on_usage_problems(files, capsys):
    assert main(["validate", "no-such-dir"]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["validate", "--format", "xml"])
    assert e.value.code == 2


def test_console_script_runs_without_traceback(files):
    exe = (
        shutil.which("kaito-gitops", path=str(Path(sys.executable).parent))
        or f"{sys.executable} -m reconciler"
    )
    (files / "ws" / "bomb.yaml").write_text(
        "a: &a ["
        + ",".join(["x"] * 9)
        + "]\n"
        + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
        )
    )
    proc = subprocess.run([*exe.split(), "validate", "ws"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "[yaml-alias-bomb]" in proc.stdout


def test_base_revision_reports_replacements(tmp_path, monkeypatch, capsys):
    repo = git.Repo.init(tmp_path, initial_branch="main")
    repo.config_writer().set_value("user", "name", "t").set_value("user", "email", "t@e").release()
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "a.yaml").write_text(GOOD)
    repo.index.add(["ws/a.yaml"])
    repo.index.commit("add")
    (tmp_path / "ws" / "a.yaml").write_text(GOOD.replace("smollm2-135m-instruct", "phi-4-mini-instruct"))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "ws", "--base", "HEAD"]) == 0  # a warning, not an error
    out = capsys.readouterr().out
    assert "ws/a.yaml:15:3: warning: inference.preset: changing inference.preset requires replacement" in out
    assert main(["validate", "ws", "--base", "nope"]) == 2


@pytest.mark.parametrize("where", [".kaito/ws", "ws"])
@pytest.mark.parametrize("extra", [[], ["."]])
def test_base_reads_what_the_working_tree_reads(tmp_path, monkeypatch, capsys, where, extra):
    """A hidden folder named on the command line, or '.' beside another path, reads the same at --base."""
    repo = git.Repo.init(tmp_path, initial_branch="main")
    repo.config_writer().set_value("user", "name", "t").set_value("user", "email", "t@e").release()
    folder = tmp_path / where
    folder.mkdir(parents=True)
    (folder / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD.replace("name: smollm2\n", "name: other\n", 1))
    repo.index.add([f"{where}/a.yaml", "b.yaml"])
    repo.index.commit("add")
    (folder / "a.yaml").write_text(GOOD.replace("smollm2-135m-instruct", "phi-4-mini-instruct"))
    monkeypatch.chdir(tmp_path)
    assert main(["plan", where, *extra, "--base", "HEAD", "--format", "json"]) == 0
    changes = {c["name"]: c["action"] for c in json.loads(capsys.readouterr().out)["workspaces"]}
    assert changes["smollm2"] == "replace", changes  # not "add": the base had it too
    if extra:
        assert changes["other"] == "unchanged", changes


def test_schema_is_a_valid_2020_12_schema_and_closed():
    schema = json.loads((ROOT / "schema" / "workspace.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    ws = schema["$defs"]["Workspace"]
    assert ws["additionalProperties"] is False and "spec" not in ws["properties"]
    assert set(ws["properties"]) >= {"resource", "inference", "tuning"}


CHECK_JSONSCHEMA = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which(
    "check-jsonschema"
)


@pytest.mark.skipif(CHECK_JSONSCHEMA is None, reason="check-jsonschema not installed (dev extra)")
def test_schema_works_with_check_jsonschema(tmp_path):
    schema = ROOT / "schema" / "workspace.schema.json"
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    ok = subprocess.run(
        [CHECK_JSONSCHEMA, "--schemafile", str(schema), str(good)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    ko = subprocess.run(
        [CHECK_JSONSCHEMA, "--schemafile", str(schema), str(bad)], capture_output=True, text=True
    )
    assert ko.returncode == 1 and "instancetype" in ko.stdout
    # a ConfigMap beside the workspaces validates against the same schema
    cm = tmp_path / "cm.yaml"
    cm.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {inference_config.yaml: 'sglang: {}'}\n"
    )
    assert (
        subprocess.run(
            [CHECK_JSONSCHEMA, "--schemafile", str(schema), str(cm)], capture_output=True
        ).returncode
        == 0
    )


def test_example_repo_validates():
    from reconciler.source.tree import disk_files
    from reconciler.validation import validate_sources

    rev = validate_sources(list(disk_files([str(ROOT / "example-repo")], 1 << 20)))
    assert not rev.has_errors, [f.text() for f in rev.findings]
    names = {ws.name for ws in rev.workspaces}
    assert names == {"tuning-phi-3", "phi-3-mini", "smollm2"}
