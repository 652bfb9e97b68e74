"""Findings: what validation and planning tell a user, always with a place in a file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """One message about one place in one file.

    `line` and `col` are 1-based, as editors and GitHub show them. `field` is the
    dotted path of the offending key (``inference.adapters[0].strength``), empty for
    file-level problems.
    """

    path: str
    line: int
    col: int
    severity: Severity
    rule: str
    message: str
    field: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def text(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return (
            f"{self.path}:{self.line}:{self.col}: {self.severity.value}: {where}{self.message} [{self.rule}]"
        )

    def github(self) -> str:
        # Workflow commands: properties are comma-separated, so escape what would break them.
        def prop(v: str) -> str:
            return (
                v.replace("%", "%25")
                .replace("\r", "%0D")
                .replace("\n", "%0A")
                .replace(":", "%3A")
                .replace(",", "%2C")
            )

        def data(v: str) -> str:
            return v.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

        level = "error" if self.is_error else "warning"
        where = f"{self.field}: " if self.field else ""
        return (
            f"::{level} file={prop(self.path)},line={self.line},col={self.col},title={prop(self.rule)}::"
            f"{data(where + self.message)}"
        )

    def as_dict(self) -> dict:
        d = asdict(self)
        d["severity"] = self.severity.value
        return d


def format_findings(findings: list[Finding], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([f.as_dict() for f in findings], indent=2)
    if fmt == "github":
        return "\n".join(f.github() for f in findings)
    return "\n".join(f.text() for f in findings)
