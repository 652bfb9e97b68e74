"""Let `import sglang` work on a machine without triton (CPU CI), for its argument parser only.

SGLang ships a stand-in for triton that it uses on macOS (`sglang/_platform_stubs.py`); we
load that file by path (so sglang/__init__ does not run first) and register its mock as
`triton`. Call install() before anything imports sglang, in a process of its own: the stub
makes torch and transformers believe triton exists.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def install() -> bool:
    if "triton" in sys.modules or importlib.util.find_spec("triton") is not None:
        return False
    spec = importlib.util.find_spec("sglang")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("sglang is not installed")
    stubs_path = os.path.join(os.path.dirname(spec.origin), "_platform_stubs.py")
    stubs_spec = importlib.util.spec_from_file_location("_sglang_platform_stubs", stubs_path)
    stubs = importlib.util.module_from_spec(stubs_spec)
    sys.modules[stubs_spec.name] = stubs
    stubs_spec.loader.exec_module(stubs)
    sys.meta_path.insert(0, stubs._TritonFinder())
    triton = stubs._make_mock("triton")
    triton.__version__ = "3.0.0"
    triton.cdiv, triton.next_power_of_2, triton.Config = stubs._cdiv, stubs._next_power_of_2, stubs._Config
    sys.modules["triton"] = triton
    return True
