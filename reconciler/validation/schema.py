"""Schema layer: jsonschema errors turned into messages at the offending key or value."""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterator

import jsonschema
from jsonschema.exceptions import ValidationError

from ..catalog import schema_text, settings_schema_text
from ..findings import Finding
from ..loading import Document


@functools.cache
def workspace_schema() -> dict:
    return json.loads(schema_text())


def _inline(node, defs: dict):
    """Replace every {"$ref": "#/$defs/X"} by X itself (the schema has no cycles).

    Resolving references on every validation is most of jsonschema's cost here;
    inlining them once makes validating a workspace about a third faster.
    """
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and len(node) == 1:
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


@functools.cache
def _validators() -> dict[str, jsonschema.protocols.Validator]:
    """One compiled validator per top-level kind."""
    schema = workspace_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    out = {}
    for kind in ("Workspace", "InferenceSet", "ConfigMap"):
        sub = {"$schema": schema["$schema"], **_inline(schema["$defs"][kind], schema["$defs"])}
        out[kind] = cls(sub)
    return out


_TYPE_NAMES = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "empty",
}


def _type_of(v) -> str:
    if v is None:
        return "empty"
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, int):
        return "a whole number"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "a mapping"
    return type(v).__name__


def _message(err: ValidationError) -> tuple[str, str]:
    """(rule, message) for one jsonschema error."""
    v = err.validator
    if err.schema is False or v is None:
        return "schema-version", f"'{err.path[-1] if err.path else ''}' is only available in kaito.sh/v1beta1"
    if v == "type":
        want = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        names = " or ".join(_TYPE_NAMES.get(t, t) for t in want)
        msg = f"must be {names}, not {_type_of(err.instance)}"
        if "string" in want and isinstance(err.instance, int | float) and not isinstance(err.instance, bool):
            msg += f'; quote it: "{err.instance}"'
        return "schema-type", msg
    if v == "enum":
        return (
            "schema-enum",
            f"{err.instance!r} is not allowed; use one of: {', '.join(map(str, err.validator_value))}",
        )
    if v == "const":
        return "schema-enum", f"must be {err.validator_value!r}, not {err.instance!r}"
    if v == "pattern":
        if "propertyNames" in err.relative_schema_path or "propertyNames" in err.absolute_schema_path:
            return "schema-pattern", f"{err.instance!r} is not a valid namespace name (a DNS-1123 label)"
        if err.path and err.path[-1] == "method":
            return "schema-enum", f"{err.instance!r} is not a tuning method; use lora or qlora"
        return "schema-pattern", f"{err.instance!r} does not match {err.validator_value}"
    if v == "minimum":
        return "schema-range", f"must be at least {err.validator_value}, not {err.instance}"
    if v == "maximum":
        return "schema-range", f"must be at most {err.validator_value}, not {err.instance}"
    if v == "exclusiveMinimum":
        return "schema-range", f"must be more than {err.validator_value}, not {err.instance}"
    if v == "minProperties":
        return "schema-required", "must set at least one field"
    if v == "propertyNames":
        return "schema-pattern", f"{err.instance!r} is not a valid namespace name (a DNS-1123 label)"
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return "schema-required", f"missing required field '{missing}'"
    return "schema", err.message


def _unknown_keys(err: ValidationError) -> Iterator[tuple[str, str]]:
    allowed = list(err.schema.get("properties", {}))
    for key in err.instance:
        if key in allowed:
            continue
        lowered = {a.lower(): a for a in allowed}
        near = lowered.get(key.lower()) or next(
            iter(difflib.get_close_matches(key, allowed, n=1, cutoff=0.7)), None
        )
        hint = f"; did you mean '{near}'?" if near else f"; allowed here: {', '.join(allowed)}"
        yield key, f"unknown field '{key}'{hint}"


def check_schema(doc: Document) -> list[Finding]:
    """Validate one Workspace, InferenceSet or ConfigMap document against schema/workspace.schema.json."""
    kind = doc.kind if doc.kind in ("ConfigMap", "InferenceSet") else "Workspace"
    return schema_findings(doc, _validators()[kind])


@functools.cache
def settings_validator() -> jsonschema.protocols.Validator:
    """schema/kaito-gitops.schema.json: the repository's .kaito-gitops.yaml."""
    schema = json.loads(settings_schema_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(_inline(schema, schema.get("$defs", {})))


def schema_findings(doc: Document, validator: jsonschema.protocols.Validator) -> list[Finding]:
    """One finding per schema error, at the offending key or value."""
    findings: list[Finding] = []
    for err in validator.iter_errors(doc.data):
        path = tuple(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            for key, msg in _unknown_keys(err):
                findings.append(doc.finding((*path, key), "schema-unknown-field", msg, at_key=True))
            continue
        rule, msg = _message(err)
        if rule == "schema-version":
            findings.append(doc.finding(path, rule, msg, at_key=True))
        elif rule == "schema-required":
            findings.append(doc.finding(path, rule, msg, at_key=bool(path)))
        else:
            findings.append(doc.finding(path, rule, msg))
    return findings


__all__ = ["check_schema", "schema_findings", "settings_validator", "workspace_schema"]
