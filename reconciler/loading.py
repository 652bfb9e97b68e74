"""Load YAML files into plain data while remembering where every key and value sits.

ruamel.yaml composes the node graph (its C parser when available, the pure-Python
YAML 1.2 parser as the arbiter when the C one refuses), and this module turns nodes
into dicts/lists/scalars itself. Doing the construction here is what lets us:

* record the line and column of every key and value (for `file:line:col` messages),
* report duplicate keys at the second occurrence instead of raising,
* bound alias expansion, so an anchor bomb is an error and never a hang,
* never execute arbitrary tags.

Nothing here touches the network; it is a pure function of bytes.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from .findings import Finding, Severity

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 50_000  # after alias expansion, per document
MAX_DEPTH = 64
MAX_DOCUMENTS = 64

Path = tuple[str | int, ...]


def path_text(path: Path) -> str:
    """`('inference', 'adapters', 0, 'strength')` -> `inference.adapters[0].strength`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


@dataclass(slots=True)
class Positions:
    """1-based (line, col) of keys and values, by path inside one document."""

    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def value(self, path: Path) -> tuple[int, int]:
        """Where the value at `path` starts; the nearest existing ancestor otherwise."""
        p = tuple(path)
        while p:
            if p in self.values:
                return self.values[p]
            p = p[:-1]
        return self.values.get((), (1, 1))

    def key(self, path: Path) -> tuple[int, int]:
        """Where the key of `path` is written; its value, or an ancestor, otherwise."""
        p = tuple(path)
        while p:
            if p in self.keys:
                return self.keys[p]
            if p in self.values:
                return self.values[p]
            p = p[:-1]
        return self.values.get((), (1, 1))


@dataclass(slots=True)
class Document:
    path: str
    index: int
    data: Any
    positions: Positions

    @property
    def kind(self) -> str:
        return self.data.get("kind", "") if isinstance(self.data, dict) else ""

    @property
    def api_version(self) -> str:
        return self.data.get("apiVersion", "") if isinstance(self.data, dict) else ""

    def finding(
        self, path: Path, rule: str, message: str, severity=Severity.ERROR, at_key: bool = False
    ) -> Finding:
        line, col = self.positions.key(path) if at_key else self.positions.value(path)
        return Finding(self.path, line, col, severity, rule, message, path_text(path))


@dataclass(slots=True)
class LoadedFile:
    path: str
    documents: list[Document]
    findings: list[Finding]


class _TooBig(Exception):
    def __init__(self, mark, reason: str, rule: str = "yaml-alias-bomb"):
        self.mark = mark
        self.reason = reason
        self.rule = rule


_parsers = threading.local()  # ruamel YAML objects keep parser state: one per thread


def _yaml(pure: bool) -> YAML:
    name = "pure" if pure else "c"
    y = getattr(_parsers, name, None)
    if y is None:
        y = YAML(typ="safe", pure=pure)
        setattr(_parsers, name, y)
    return y


# YAML 1.2 core schema, for plain (unquoted) scalars without an explicit tag.
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"^[-+]?[0-9]+$")
_INT_OCT = re.compile(r"^0o[0-7]+$")
_INT_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(inf|Inf|INF)$")
_NAN = re.compile(r"^\.(nan|NaN|NAN)$")


def _plain(v: str) -> Any:
    if v in _NULLS:
        return None
    if v in _BOOLS:
        return _BOOLS[v]
    c = v[0]
    if not (c.isdigit() or c in "+-."):
        return v
    if _INT.match(v):
        return int(v)
    if _INT_OCT.match(v):
        return int(v[2:], 8)
    if _INT_HEX.match(v):
        return int(v[2:], 16)
    if _FLOAT.match(v):
        return float(v)
    if _INF.match(v):
        return -math.inf if v.startswith("-") else math.inf
    if _NAN.match(v):
        return math.nan
    return v


def _tagged(tag: str, v: str) -> Any:
    """Explicit tags: the core ones convert, anything else is read as its text (never executed)."""
    short = tag.rsplit(":", 1)[-1] if tag.startswith("tag:yaml.org,2002:") else tag.removeprefix("!!")
    if short in ("int", "float", "bool", "null"):
        value = _plain(v)
        want = {"int": int, "float": float, "bool": bool, "null": type(None)}[short]
        if isinstance(value, want) and not (want is int and isinstance(value, bool)):
            return value
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    return v


class _Frame:
    __slots__ = (
        "anchor",
        "container",
        "is_key",
        "key",
        "mark",
        "merges",
        "path",
        "seen",
        "size_at_start",
        "skip_value",
    )

    def __init__(self, container, path, mark, anchor, size_at_start):
        self.container = container
        self.path = path
        self.mark = mark
        self.anchor = anchor
        self.size_at_start = size_at_start
        self.key = _NO_KEY
        self.is_key = False  # a collection written as a mapping key (an error)
        self.seen: dict[str, tuple[int, int]] = {}
        self.merges: list = []
        self.skip_value = False


_NO_KEY = object()
_MERGE = object()


class _Builder:
    """Builds plain data from parser events, recording the position of every key and value.

    Aliases share the anchored value instead of copying it; the expanded size is still
    counted, so an anchor bomb stops at MAX_NODES without using memory or time.
    """

    def __init__(self, doc_path: str):
        self.path = doc_path
        self.positions = Positions()
        self.findings: list[Finding] = []
        self.size = 0
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.open_anchors: set[str] = set()
        self.stack: list[_Frame] = []
        self.root: Any = None

    @staticmethod
    def _pos(mark) -> tuple[int, int]:
        return (mark.line + 1, mark.column + 1)

    def _grow(self, n: int, mark) -> None:
        self.size += n
        if self.size > MAX_NODES:
            raise _TooBig(mark, f"more than {MAX_NODES:,} values after expanding anchors and aliases")

    def _child_path(self) -> Path | None:
        """Path of the value about to be added; None when it is a mapping key."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.container, list):
            return (*top.path, len(top.container))
        if top.key is _NO_KEY:
            return None
        if top.key is _MERGE or top.skip_value:
            return (*top.path, "<<")
        return (*top.path, top.key)

    def _add(self, value: Any, mark, is_scalar_key_text: str | None = None) -> None:
        """Attach a finished value to its parent (or as the root)."""
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        if isinstance(top.container, list):
            top.container.append(value)
            return
        if top.key is _NO_KEY:  # this value is a key
            pos = self._pos(mark)
            if is_scalar_key_text is None:
                self.findings.append(
                    Finding(
                        self.path,
                        pos[0],
                        pos[1],
                        Severity.ERROR,
                        "yaml-key-type",
                        "mapping keys must be plain strings",
                        path_text(top.path),
                    )
                )
                top.key, top.skip_value = "", True
                return
            key = is_scalar_key_text
            if key == "<<":
                top.key = _MERGE
                return
            if key in top.seen:
                self.findings.append(
                    Finding(
                        self.path,
                        pos[0],
                        pos[1],
                        Severity.ERROR,
                        "yaml-duplicate-key",
                        f"duplicate key '{key}' (first written at line {top.seen[key][0]}); YAML keys must be unique",
                        path_text((*top.path, key)),
                    )
                )
            top.seen[key] = pos
            self.positions.keys[(*top.path, key)] = pos
            top.key = key
            return
        if top.skip_value:
            top.skip_value = False
        elif top.key is _MERGE:
            top.merges.append(value)
        else:
            top.container[top.key] = value
        top.key = _NO_KEY

    def _key_text(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        return "null" if value is None else str(value)

    def event(self, ev) -> None:
        kind = type(ev).__name__
        if kind == "ScalarEvent":
            self._grow(1, ev.start_mark)
            if ev.tag and ev.tag != "!":
                value = _tagged(ev.tag, ev.value)
            elif ev.style in (None, "") and ev.implicit[0]:
                value = _plain(ev.value)
            else:
                value = ev.value
            if ev.anchor:
                self.anchors[ev.anchor] = (value, 1)
            path = self._child_path()
            if path is not None:
                self.positions.values[path] = self._pos(ev.start_mark)
                self._add(value, ev.start_mark)
            else:  # a mapping key
                self._add(value, ev.start_mark, self._key_text(value) if ev.style in (None, "") else ev.value)
        elif kind in ("MappingStartEvent", "SequenceStartEvent"):
            self._grow(1, ev.start_mark)
            if len(self.stack) >= MAX_DEPTH:
                raise _TooBig(ev.start_mark, f"nesting deeper than {MAX_DEPTH} levels", "yaml-too-deep")
            path = self._child_path()
            as_key = path is None
            if as_key:
                path = (*self.stack[-1].path, "?")
            else:
                self.positions.values[path] = self._pos(ev.start_mark)
            container: Any = {} if kind == "MappingStartEvent" else []
            frame = _Frame(container, path, ev.start_mark, ev.anchor, self.size - 1)
            frame.is_key = as_key
            if ev.anchor:
                self.open_anchors.add(ev.anchor)
            self.stack.append(frame)
        elif kind in ("MappingEndEvent", "SequenceEndEvent"):
            frame = self.stack.pop()
            value = frame.container
            for src in frame.merges:  # `<<: *base` fills keys the mapping does not set itself
                for m in src if isinstance(src, list) else [src]:
                    if isinstance(m, dict):
                        for k, v in m.items():
                            value.setdefault(k, v)
            if frame.anchor:
                self.open_anchors.discard(frame.anchor)
                self.anchors[frame.anchor] = (value, self.size - frame.size_at_start)
            self._add(value, frame.mark)
        elif kind == "AliasEvent":
            if ev.anchor in self.open_anchors:
                raise _TooBig(ev.start_mark, f"alias *{ev.anchor} refers to itself (a recursive alias)")
            if ev.anchor not in self.anchors:
                raise _TooBig(
                    ev.start_mark, f"invalid YAML: found undefined alias '{ev.anchor}'", "yaml-syntax"
                )
            value, size = self.anchors[ev.anchor]
            self._grow(size, ev.start_mark)
            path = self._child_path()
            if path is not None:
                self.positions.values[path] = self._pos(ev.start_mark)
                self._add(value, ev.start_mark)
            else:
                self._add(
                    value,
                    ev.start_mark,
                    self._key_text(value) if not isinstance(value, dict | list) else None,
                )


def _events(text: str) -> list:
    """All parser events; the C parser first, the YAML 1.2 pure parser as arbiter."""
    try:
        return list(_yaml(pure=False).parse(text))
    except YAMLError:
        # libyaml is YAML 1.1 and stricter in places (`{image: reg/x:1}`); the pure
        # parser decides, and its error, if any, is the one we report.
        return list(_yaml(pure=True).parse(text))


def _error_position(err: YAMLError) -> tuple[int, int]:
    if isinstance(err, MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        if mark is not None:
            return (mark.line + 1, mark.column + 1)
    return (1, 1)


def _syntax_message(err: YAMLError, text: str) -> tuple[str, str]:
    if isinstance(err, MarkedYAMLError):
        line, _col = _error_position(err)
        lines = text.splitlines()
        src = lines[line - 1] if 0 < line <= len(lines) else ""
        if "\t" in src[: len(src) - len(src.lstrip())] or "'\\t'" in str(err.problem):
            return "yaml-tab", "tab character used for indentation; YAML indents with spaces only"
        problem = (err.problem or "").strip()
        context = (err.context or "").strip()
        msg = problem if not context else f"{problem} ({context})"
        return "yaml-syntax", f"invalid YAML: {msg}" if msg else "invalid YAML"
    return "yaml-syntax", f"invalid YAML: {err}"


def _decode(path: str, raw: bytes) -> tuple[str | None, Finding | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        before = raw[: e.start]
        line = before.count(b"\n") + 1
        col = e.start - (before.rfind(b"\n") + 1) + 1
        return None, Finding(
            path,
            line,
            col,
            Severity.ERROR,
            "yaml-encoding",
            f"file is not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); save it as UTF-8",
        )
    if text.startswith("\ufeff"):
        text = text[1:]
    return text, None


def load_text(path: str, raw: bytes, max_bytes: int = MAX_FILE_BYTES) -> LoadedFile:
    """Parse one file's bytes into documents. Never raises for bad input."""
    if len(raw) > max_bytes:
        return LoadedFile(
            path,
            [],
            [
                Finding(
                    path,
                    1,
                    1,
                    Severity.ERROR,
                    "yaml-too-large",
                    f"file is larger than {max_bytes:,} bytes (split it, or raise --max-file-bytes)",
                )
            ],
        )
    text, bad = _decode(path, raw)
    if bad is not None:
        return LoadedFile(path, [], [bad])
    assert text is not None
    try:
        events = _events(text)
    except YAMLError as err:
        line, col = _error_position(err)
        rule, msg = _syntax_message(err, text)
        return LoadedFile(path, [], [Finding(path, line, col, Severity.ERROR, rule, msg)])
    docs: list[Document] = []
    findings: list[Finding] = []
    builder: _Builder | None = None
    index = -1
    skipping = False
    for ev in events:
        kind = type(ev).__name__
        if kind == "DocumentStartEvent":
            index += 1
            builder, skipping = _Builder(path), False
            if index >= MAX_DOCUMENTS:
                findings.append(
                    Finding(
                        path,
                        ev.start_mark.line + 1,
                        1,
                        Severity.ERROR,
                        "yaml-too-many-documents",
                        f"file holds more than {MAX_DOCUMENTS} YAML documents",
                    )
                )
                break
            continue
        if kind == "DocumentEndEvent":
            if builder is not None and not skipping:
                findings.extend(builder.findings)
                if builder.root is not None:
                    docs.append(Document(path, index, builder.root, builder.positions))
            builder = None
            continue
        if builder is None or skipping or kind in ("StreamStartEvent", "StreamEndEvent"):
            continue
        try:
            builder.event(ev)
        except _TooBig as tb:
            message = (
                tb.reason if tb.rule == "yaml-syntax" else f"document {index + 1} cannot be read: {tb.reason}"
            )
            findings.append(
                Finding(path, tb.mark.line + 1, tb.mark.column + 1, Severity.ERROR, tb.rule, message)
            )
            skipping = True
    return LoadedFile(path, docs, findings)
