"""Eval suites as read from `evals/*.yaml`, and what is wrong with them. Pure.

A suite names the workspaces it tests, holds cases (a prompt or chat messages, checks on the
answer) and thresholds. Checked with file:line:col like workspaces: the schema
(schema/eval.schema.json), then what a schema cannot say (a regex that does not compile, a
json_schema that is not a schema, an answer not among the choices, a workspace not in the revision).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field

import jsonschema

from ..catalog import _data_root
from ..findings import Finding
from ..loading import Document

EVALS_DIR = "evals"


def is_suite_path(path: str) -> bool:
    """Files under a folder named evals/ are eval suites, not Kubernetes objects."""
    parts = path.replace("\\", "/").split("/")
    return EVALS_DIR in parts[:-1] and parts[-1].endswith((".yaml", ".yml"))


@functools.cache
def suite_validator() -> jsonschema.protocols.Validator:
    from ..validation.schema import _inline  # validation reads suites: import it late, not in a cycle

    schema = json.loads((_data_root() / "schema" / "eval.schema.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(_inline(schema, schema.get("$defs", {})))


@dataclass(frozen=True)
class Case:
    id: str
    messages: tuple[dict, ...]
    max_tokens: int
    temperature: float
    seed: int | None
    checks: dict  # contains, not_contains, regex, equals, json_schema, choices + answer


@dataclass(frozen=True)
class Load:
    concurrency: int
    requests: int
    max_tokens: int
    prompt: str


@dataclass(frozen=True)
class Thresholds:
    pass_rate: float = 1.0
    p95_latency_ms: float | None = None
    min_tokens_per_second: float | None = None


@dataclass(frozen=True)
class EvalSuite:
    name: str  # the file's name without .yaml
    document: Document
    workspaces: tuple[tuple[str, str], ...]  # (namespace, name)
    cases: tuple[Case, ...]
    thresholds: Thresholds
    load: Load | None
    errors: tuple[Finding, ...] = field(default=(), compare=False)
    adapter: str = ""  # ask this LoRA adapter of the workspace, not the base model

    @property
    def path(self) -> str:
        return self.document.path

    @property
    def valid(self) -> bool:
        return not any(f.is_error for f in self.errors)

    @property
    def most_tokens(self) -> int:
        """The most tokens one run asks the model to write, per workspace (cases, then load)."""
        load = self.load.requests * self.load.max_tokens if self.load else 0
        return sum(c.max_tokens for c in self.cases) + load


CHECK_KEYS = ("contains", "not_contains", "regex", "equals", "json_schema", "choices", "answer")


def _case(d: dict, defaults: dict) -> Case:
    messages = list(d.get("messages") or [])
    if not messages:
        messages = [{"role": "user", "content": d.get("prompt", "")}]
        if defaults.get("system"):
            messages.insert(0, {"role": "system", "content": defaults["system"]})
    return Case(
        str(d.get("id", "")),
        tuple(messages),
        int(d.get("max_tokens", defaults.get("max_tokens", 64))),
        float(d.get("temperature", defaults.get("temperature", 0.0))),
        d.get("seed", defaults.get("seed")),
        {k: d[k] for k in CHECK_KEYS if k in d},
    )


def _semantic(doc: Document, data: dict) -> list[Finding]:
    out = []
    seen: dict[str, int] = {}
    for i, c in enumerate(data.get("cases") or []):
        at = ("cases", i)
        if c.get("id") in seen:
            out.append(doc.finding((*at, "id"), "eval-case-duplicate", f"case id {c['id']!r} is used twice"))
        seen.setdefault(c.get("id"), i)
        if "regex" in c:
            try:
                re.compile(c["regex"])
            except re.error as e:
                out.append(doc.finding((*at, "regex"), "eval-regex", f"not a regular expression: {e}"))
        if "json_schema" in c:
            try:
                jsonschema.validators.validator_for(c["json_schema"]).check_schema(c["json_schema"])
            except jsonschema.SchemaError as e:
                out.append(
                    doc.finding((*at, "json_schema"), "eval-json-schema", f"not a JSON Schema: {e.message}")
                )
        if ("answer" in c) != ("choices" in c):
            key = "answer" if "answer" in c else "choices"
            out.append(doc.finding((*at, key), "eval-choices", "choices and answer go together"))
        elif "answer" in c and c["answer"] not in c["choices"]:
            out.append(
                doc.finding(
                    (*at, "answer"),
                    "eval-choices",
                    f"{c['answer']!r} is not one of the choices {c['choices']}",
                )
            )
        if not any(k in c for k in CHECK_KEYS):
            out.append(
                doc.finding(
                    at,
                    "eval-case-unchecked",
                    "a case needs a check: contains, not_contains, regex, "
                    "equals, json_schema, or choices with answer",
                )
            )
    return out


def read_suite(doc: Document, default_namespace: str) -> EvalSuite:
    """One suite; `errors` says what is wrong (an invalid suite is reported, never run)."""
    name = doc.path.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if not isinstance(doc.data, dict):
        return EvalSuite(
            name,
            doc,
            (),
            (),
            Thresholds(),
            None,
            (doc.finding((), "eval-invalid", "an eval suite is a mapping"),),
        )
    from ..validation.schema import schema_findings

    errors = schema_findings(doc, suite_validator())
    if errors:
        return EvalSuite(name, doc, (), (), Thresholds(), None, tuple(errors))
    data = doc.data
    errors += _semantic(doc, data)
    workspaces = tuple(
        tuple(w.split("/", 1)) if "/" in w else (default_namespace, w) for w in data["workspaces"]
    )
    defaults = data.get("defaults") or {}
    t = data.get("thresholds") or {}
    load = data.get("load")
    return EvalSuite(
        name,
        doc,
        workspaces,
        tuple(_case(c, defaults) for c in data["cases"]),
        Thresholds(t.get("pass_rate", 1.0), t.get("p95_latency_ms"), t.get("min_tokens_per_second")),
        Load(
            load.get("concurrency", 4),
            load["requests"],
            load.get("max_tokens", defaults.get("max_tokens", 64)),
            load.get("prompt", "Write one sentence about the sea."),
        )
        if load
        else None,
        tuple(errors),
        data.get("adapter", ""),
    )


def unknown_workspaces(suite: EvalSuite, known: dict[tuple[str, str], set[str]]) -> list[Finding]:
    """A workspace the revision lacks, or an adapter the workspace does not serve ({key: adapters})."""
    out = []
    for i, key in enumerate(suite.workspaces):
        if key in known and suite.adapter and suite.adapter not in known[key]:
            out.append(
                suite.document.finding(
                    ("adapter",),
                    "eval-adapter-unknown",
                    f"workspace {key[0]}/{key[1]} serves no adapter {suite.adapter!r}; its adapters: "
                    + (", ".join(sorted(known[key])) or "(none)"),
                )
            )
        if key not in known:
            out.append(
                suite.document.finding(
                    ("workspaces", i),
                    "eval-workspace-unknown",
                    f"no workspace {key[0]}/{key[1]} in this revision; name one of: "
                    + (", ".join(f"{n}/{w}" for n, w in sorted(known)) or "(none)"),
                )
            )
    return out
