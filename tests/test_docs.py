"""The docs stay true: every rule id the code can emit is documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# where the rule id sits in each way of making a finding
RULE_ARG = {"Finding": 4, "finding": 1, "_f": 2, "ConfigIssue": 2, "_TooBig": 2}


def code_rule_ids() -> set[str]:
    ids: set[str] = set()
    for p in (ROOT / "reconciler").rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            pos = RULE_ARG.get(name)
            if pos is None or len(node.args) <= pos:
                continue
            arg = node.args[pos]
            candidates = (
                [arg]
                if isinstance(arg, ast.Constant)
                else [n for n in ast.walk(arg) if isinstance(n, ast.Constant)]
            )  # e.g. `"a" if x else "b"`
            for c in candidates:
                if isinstance(c.value, str) and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", c.value):
                    ids.add(c.value)
    return ids


def test_every_rule_is_documented():
    ids = code_rule_ids()
    assert len(ids) > 60, "the scan should find the rules"
    doc = (ROOT / "docs" / "validation.md").read_text()
    documented = set(re.findall(r"`([a-z0-9]+(?:-[a-z0-9]+)+)`", doc))
    missing = ids - documented
    assert not missing, f"add these rules to docs/validation.md: {sorted(missing)}"
