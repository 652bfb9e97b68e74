"""Every SGLang command line kaito-gitops can generate parses with SGLang's own parser.

The planner renders `python -m runtime.inference ...`; runtime.inference turns that into
`python -m sglang.launch_server ...`. Both steps run here, and the result goes through
SGLang 0.5.23's parser (installed --no-deps; triton stubbed) in a separate process, one for the
module (importing SGLang takes seconds).
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


class SGLangParser:
    """support/sglang_check.py in its own process, asked one JSON line at a time."""

    def __init__(self, tmp: Path):
        env = {
            **os.environ,
            "PYTHONPATH": str(SUPPORT),
            "SGLANG_CACHE_DIR": str(tmp / "sglang-cache"),
            "HOME": str(tmp),
        }
        self.log = tmp / "sglang_check.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(SUPPORT / "sglang_check.py")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )

    def _ask(self, request: dict):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"sglang_check.py exited with {self.proc.wait(30)}: {self.log.read_text()[-3000:]}"
        return json.loads(line)

    def parse(self, argvs: list[list[str]]) -> list[dict]:
        """SGLang's verdict on each argument list (what follows `python -m sglang.launch_server`)."""
        return self._ask({"parse": argvs})

    def flags(self) -> set[str]:
        """Every --flag SGLang's parser knows, without the dashes."""
        return set(self._ask({"flags": True}))

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def sglang(tmp_path_factory):
    parser = SGLangParser(tmp_path_factory.mktemp("sglang"))
    yield parser
    parser.close()


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


def test_example_and_fixture_commands_parse(sglang, adapters_dir):
    pairs = [(p, to_sglang(c, adapters_dir)) for p, c in commands(example_and_fixture_state())]
    results = sglang.parse([argv for _, argv in pairs])
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


def test_every_preset_on_every_sku_parses(sglang, adapters_dir):
    pairs = [(p, to_sglang(c, adapters_dir)) for p, c in commands(every_preset_on_every_sku())]
    assert len(pairs) > 400
    results = sglang.parse([argv for _, argv in pairs])
    bad = [(p.key, r["error"]) for (p, _), r in zip(pairs, results, strict=True) if not r["ok"]]
    assert not bad, bad[:5]


def test_a_typo_is_caught_even_where_argparse_would_accept_a_prefix(sglang):
    results = sglang.parse(
        [["--model-path", "m", "--lora-path", "a=/x"], ["--model-path", "m", "--tp-size", "two"]]
    )
    assert not results[0]["ok"] and "--lora-path" in results[0]["error"]
    assert not results[1]["ok"]


def test_flags_file_matches_the_installed_sglang(sglang):
    """presets/sglang-flags.yaml (used offline by validation) is what the pinned SGLang accepts."""
    from reconciler.configs import sglang_flags

    assert set(sglang_flags()) == sglang.flags() - {"help"}  # argparse's own
