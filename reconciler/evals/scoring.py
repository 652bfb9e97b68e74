"""Scoring: whether an answer passes its case's checks, and a suite's figures. Pure."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import jsonschema

from .suite import Case, EvalSuite

OUTPUT_LIMIT = 300  # characters of each answer kept in reports


def _strings(v) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def _json_in(text: str):
    """The answer as JSON: the whole text, or the first {...} / [...] block (models add prose)."""
    for candidate in (text.strip(), *re.findall(r"(\{.*\}|\[.*\])", text, re.DOTALL)):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise ValueError("no JSON in the answer")


def _picked(text: str, choices: list[str]) -> str | None:
    """The choice an answer picks: the first choice that opens the answer, else the only one in it."""
    t = text.strip().lower()
    for c in choices:
        if t.startswith(c.lower()):
            return c
    found = [c for c in choices if re.search(rf"\b{re.escape(c.lower())}\b", t)]
    return found[0] if len(found) == 1 else None


def check(case: Case, output: str) -> tuple[bool, str]:
    """(passed, why not) for one answer."""
    c = case.checks
    lowered = output.lower()
    for s in _strings(c.get("contains", [])):
        if s.lower() not in lowered:
            return False, f"does not contain {s!r}"
    for s in _strings(c.get("not_contains", [])):
        if s.lower() in lowered:
            return False, f"contains {s!r}"
    if "regex" in c and not re.search(c["regex"], output):
        return False, f"does not match /{c['regex']}/"
    if "equals" in c and output.strip() != c["equals"].strip():
        return False, f"is not {c['equals']!r}"
    if "json_schema" in c:
        try:
            jsonschema.validate(_json_in(output), c["json_schema"])
        except ValueError as e:
            return False, str(e)
        except jsonschema.ValidationError as e:
            return False, f"JSON does not fit the schema: {e.message}"
    if "choices" in c:
        picked = _picked(output, c["choices"])
        if picked != c["answer"]:
            return (
                False,
                f"picked {picked!r}, not {c['answer']!r}" if picked else "picked none of the choices",
            )
    return True, ""


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (p95 of 20 samples is the 19th), None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class CaseResult:
    id: str
    passed: bool
    output: str
    latency_ms: float
    tokens: int
    why: str = ""

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "passed": self.passed,
            "output": self.output[:OUTPUT_LIMIT],
            "latency_ms": round(self.latency_ms, 1),
            "tokens": self.tokens,
            **({"why": self.why} if self.why else {}),
        }


@dataclass
class SuiteResult:
    suite: EvalSuite
    workspace: str
    cases: list[CaseResult]
    load_seconds: float = 0.0
    load_tokens: int = 0
    load_latencies_ms: list[float] | None = None
    load_failed: int = 0
    error: str = ""  # the suite could not run (invalid, the model never became ready, ...)
    start_seconds: float = 0.0  # from the eval's start until every workspace served
    cases_seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def pass_rate(self) -> float:
        return self.passed / len(self.cases) if self.cases else 0.0

    def latencies(self) -> list[float]:
        return [c.latency_ms for c in self.cases]

    @property
    def tokens_per_second(self) -> float | None:
        """Under load when the suite has a load section, else over the cases, one at a time."""
        if self.load_seconds > 0:
            return self.load_tokens / self.load_seconds
        seconds = sum(c.latency_ms for c in self.cases) / 1000
        return sum(c.tokens for c in self.cases) / seconds if seconds > 0 else None

    def failures(self) -> list[str]:
        """Which thresholds do not hold (empty: all hold)."""
        if self.error:
            return [self.error]
        t, out = self.suite.thresholds, []
        if self.pass_rate < t.pass_rate:
            out.append(f"pass rate {self.pass_rate:.2f} < {t.pass_rate:.2f}")
        p95 = percentile(self.latencies() + (self.load_latencies_ms or []), 0.95)
        if t.p95_latency_ms is not None and p95 is not None and p95 > t.p95_latency_ms:
            out.append(f"p95 latency {p95:.0f} ms > {t.p95_latency_ms:g} ms")
        tps = self.tokens_per_second
        if t.min_tokens_per_second is not None and (tps is None or tps < t.min_tokens_per_second):
            out.append(f"{tps or 0:.1f} tokens/s < {t.min_tokens_per_second:g}")
        if self.load_failed:
            out.append(f"{self.load_failed} load request(s) failed")
        return out

    @property
    def thresholds_met(self) -> bool:
        return not self.failures()

    def as_dict(self) -> dict:
        lat = self.latencies() + (self.load_latencies_ms or [])
        tps = self.tokens_per_second
        return {
            "suite": self.suite.name,
            "file": self.suite.path,
            "workspace": self.workspace,
            "cases": [c.as_dict() for c in self.cases],
            "passed": self.passed,
            "pass_rate": round(self.pass_rate, 4),
            "p50_latency_ms": round(percentile(lat, 0.5), 1) if lat else None,
            "p95_latency_ms": round(percentile(lat, 0.95), 1) if lat else None,
            "tokens_per_second": round(tps, 2) if tps is not None else None,
            "thresholds_met": self.thresholds_met,
            "failures": self.failures(),
            "error": self.error or None,
            "load": {
                "requests": len(self.load_latencies_ms or []) + self.load_failed,
                "failed": self.load_failed,
                "seconds": round(self.load_seconds, 3),
                "tokens": self.load_tokens,
            }
            if self.load_latencies_ms is not None
            else None,
            "timing_seconds": {
                "start": round(self.start_seconds, 2),
                "cases": round(self.cases_seconds, 2),
                "load": round(self.load_seconds, 2),
            },
        }
