"""An eval run as text (terminals), Markdown (pull requests) and JSON (tools). Pure."""

from __future__ import annotations

from .scoring import SuiteResult


def _fmt(v, unit: str = "", digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}{unit}"


def as_json(results: list[SuiteResult], seconds: float) -> dict:
    return {
        "thresholds_met": all(r.thresholds_met for r in results),
        "seconds": round(seconds, 2),
        "suites": [r.as_dict() for r in results],
    }


def text(results: list[SuiteResult], seconds: float) -> str:
    out = []
    for r in results:
        d = r.as_dict()
        mark = "PASS" if r.thresholds_met else "FAIL"
        out.append(
            f"{mark} {r.suite.name} on {r.workspace or '-'}: {r.passed}/{len(r.cases)} passed "
            f"(pass rate {r.pass_rate:.2f}), p50 {_fmt(d['p50_latency_ms'], ' ms')}, "
            f"p95 {_fmt(d['p95_latency_ms'], ' ms')}, {_fmt(d['tokens_per_second'], ' tokens/s', 1)}"
        )
        for why in r.failures():
            out.append(f"    {why}")
        for c in r.cases:
            if not c.passed:
                out.append(f"    x {c.id}: {c.why} — {c.output[:120]!r}")
    ok = sum(r.thresholds_met for r in results)
    out.append(f"{ok} of {len(results)} suite(s) met their thresholds in {seconds:.1f} s")
    return "\n".join(out) + "\n"


def markdown(results: list[SuiteResult]) -> str:
    """The Eval section of a pull-request comment: one row a suite, failed cases collapsed."""
    out = [
        "| suite | workspace | pass rate | p50 | p95 | tokens/s | thresholds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        d = r.as_dict()
        verdict = ":white_check_mark:" if r.thresholds_met else ":x: " + "; ".join(r.failures())
        out.append(
            f"| `{r.suite.name}` | `{r.workspace or '-'}` | {r.passed}/{len(r.cases)} ({r.pass_rate:.0%}) | "
            f"{_fmt(d['p50_latency_ms'], ' ms')} | {_fmt(d['p95_latency_ms'], ' ms')} | "
            f"{_fmt(d['tokens_per_second'], '', 1)} | {verdict.replace('|', '/')} |"
        )
    for r in results:
        failed = [c for c in r.cases if not c.passed]
        if not failed:
            continue
        out += [
            "",
            f"<details><summary>{len(failed)} failed case(s) in <code>{r.suite.name}</code></summary>",
            "",
        ]
        for c in failed:
            answer = c.output[:300].replace("`", "'").replace("\n", " ")
            out.append(f"- `{c.id}`: {c.why}; answered `{answer}`")
        out += ["", "</details>"]
    return "\n".join(out) + "\n"
