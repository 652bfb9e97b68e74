"""Every SGLang command line kaito-gitops can generate parses with SGLang's own parser.

The planner renders `python -m runtime.inference ...`; runtime.inference turns that into
`python -m sglang.launch_server ...`. Both steps run here, and the result goes through
SGLang 0.5.23's parser (installed --no-deps; triton stubbed) in a separate process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from planfixtures import ROOT, every_preset_on_every_sku, example_and_fixture_state

from runtime.inference_args import parse, sglang_command

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sglang") is None, reason="sglang not installed (scripts/setup.sh ... sglang)"
)

SUPPORT = ROOT / "tests" / "support"


def sglang_parse(argvs: list[list[str]], tmp_path: Path) -> list[dict]:
    env = {
        **os.environ,
        "PYTHONPATH": str(SUPPORT),
        "SGLANG_CACHE_DIR": str(tmp_path / "sglang-cache"),
        "HOME": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, str(SUPPORT / "sglang_check.py")],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


CLUSTER_CONFIG = (
    "sglang:\n  enable-cache-report: true\nvllm:\n  max-num-seqs: 64\n  tensor-parallel-size: 1\n"
    "  max-model-len: 2048\n  gpu-memory-utilization: 0.85\n"
)


def to_sglang(container_command: list[str], adapters_dir: Path) -> list[str]:
    args = container_command[3:]  # after python -m runtime.inference
    if "--adapters-dir" in args:
        args[args.index("--adapters-dir") + 1] = str(adapters_dir)
    if "--config-file" in args:  # a ConfigMap that lives only in the cluster, read at start
        cfg = adapters_dir.parent / "inference_config.yaml"
        cfg.write_text(CLUSTER_CONFIG)
        args[args.index("--config-file") + 1] = str(cfg)
    opts, _ = parse(args, env={"POD_INDEX": "1"})
    cmd = sglang_command(opts, api_key="sk-test")
    assert cmd[1:3] == ["-m", "sglang.launch_server"]
    if "--config-file" in args:  # what the user pinned comes last, so SGLang's parser keeps it
        last = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
        assert (last["--context-length"], last["--mem-fraction-static"], last["--tp-size"]) == (
            "2048",
            "0.85",
            "1",
        )
    return cmd[3:]


@pytest.fixture
def adapters_dir(tmp_path):
    for name in ("sql", "docs"):
        (tmp_path / "adapters" / name).mkdir(parents=True)
        (tmp_path / "adapters" / name / "adapter_config.json").write_text("{}")
    return tmp_path / "adapters"


def commands(state):
    for plan in state.plans.values():
        if plan.kind != "inference" or not plan.command:
            continue
        yield plan, list(plan.command)


def test_example_and_fixture_commands_parse(tmp_path, adapters_dir):
    pairs = [(p, to_sglang(c, adapters_dir)) for p, c in commands(example_and_fixture_state())]
    results = sglang_parse([argv for _, argv in pairs], tmp_path)
    for (plan, argv), res in zip(pairs, results, strict=True):
        assert res["ok"], f"{plan.key}: {res['error']}\n{argv}"
        if plan.sizing is not None:
            assert (res["tp"], res["pp"], res["dp"], res["nnodes"]) == (
                plan.sizing.tp,
                plan.sizing.pp,
                plan.sizing.dp,
                plan.sizing.nodes,
            )
    by_name = {p.key[1]: r for (p, _), r in zip(pairs, results, strict=True)}
    assert sorted(by_name["qwen-coder"]["lora_paths"]) == sorted(
        [f"docs={adapters_dir}/docs", f"sql={adapters_dir}/sql"]
    )


def test_every_preset_on_every_sku_parses(tmp_path, adapters_dir):
    pairs = [(p, to_sglang(c, adapters_dir)) for p, c in commands(every_preset_on_every_sku())]
    assert len(pairs) > 400
    results = sglang_parse([argv for _, argv in pairs], tmp_path)
    bad = [(p.key, r["error"]) for (p, _), r in zip(pairs, results, strict=True) if not r["ok"]]
    assert not bad, bad[:5]


def test_a_typo_is_caught_even_where_argparse_would_accept_a_prefix(tmp_path):
    results = sglang_parse(
        [["--model-path", "m", "--lora-path", "a=/x"], ["--model-path", "m", "--tp-size", "two"]], tmp_path
    )
    assert not results[0]["ok"] and "--lora-path" in results[0]["error"]
    assert not results[1]["ok"]


def test_flags_file_matches_the_installed_sglang(tmp_path):
    """presets/sglang-flags.yaml (used offline by validation) is what the pinned SGLang accepts."""
    from reconciler.configs import sglang_flags

    env = {
        **os.environ,
        "PYTHONPATH": str(SUPPORT),
        "SGLANG_CACHE_DIR": str(tmp_path / "c"),
        "HOME": str(tmp_path),
    }
    code = (
        "from triton_stub import install; install()\n"
        "import argparse, json\nfrom sglang.srt.server_args import ServerArgs\n"
        "p = argparse.ArgumentParser(); ServerArgs.add_cli_args(p)\n"
        "print(json.dumps(sorted(o[2:] for a in p._actions for o in a.option_strings if o.startswith('--'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    installed = set(json.loads(proc.stdout.strip().splitlines()[-1])) - {"help"}  # argparse's own
    assert set(sglang_flags()) == installed
