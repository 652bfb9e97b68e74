"""An eval run as text (terminals), Markdown (pull requests) and JSON (tools). Pure.

With a base run (`eval --base REV`), each suite's figures are shown for base and head with the
delta; the thresholds are the head's.
"""

from __future__ import annotations

from .scoring import SuiteResult

FIGURES = ("pass_rate", "p50_latency_ms", "p95_latency_ms", "tokens_per_second")


def _fmt(v, unit: str = "", digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}{unit}"


def _base_of(r: SuiteResult, base: list[SuiteResult] | None) -> SuiteResult | None:
    return next((b for b in base or [] if (b.suite.name, b.workspace) == (r.suite.name, r.workspace)), None)


def _delta(head: dict, base: dict) -> dict:
    return {
        k: (round(head[k] - base[k], 4) if head.get(k) is not None and base.get(k) is not None else None)
        for k in FIGURES
    }


def as_json(results: list[SuiteResult], seconds: float, base: list[SuiteResult] | None = None) -> dict:
    suites = []
    for r in results:
        d = r.as_dict()
        b = _base_of(r, base)
        if base is not None:
            bd = b.as_dict() if b is not None else None
            d["base"] = (
                {k: bd[k] for k in ("passed", *FIGURES, "thresholds_met", "error")}
                if bd is not None
                else None
            )
            d["delta"] = _delta(d, bd) if bd is not None else None
        suites.append(d)
    return {
        "thresholds_met": all(r.thresholds_met for r in results),
        "seconds": round(seconds, 2),
        "suites": suites,
    }


def text(results: list[SuiteResult], seconds: float, base: list[SuiteResult] | None = None) -> str:
    out = []
    for r in results:
        d = r.as_dict()
        mark = "PASS" if r.thresholds_met else "FAIL"
        out.append(
            f"{mark} {r.suite.name} on {r.workspace or '-'}: {r.passed}/{len(r.cases)} passed "
            f"(pass rate {r.pass_rate:.2f}), p50 {_fmt(d['p50_latency_ms'], ' ms')}, "
            f"p95 {_fmt(d['p95_latency_ms'], ' ms')}, {_fmt(d['tokens_per_second'], ' tokens/s', 1)}"
        )
        b = _base_of(r, base)
        if b is not None:
            bd = b.as_dict()
            out.append(
                f"    base: pass rate {bd['pass_rate']:.2f}, p50 {_fmt(bd['p50_latency_ms'], ' ms')}, "
                f"p95 {_fmt(bd['p95_latency_ms'], ' ms')}, {_fmt(bd['tokens_per_second'], ' tokens/s', 1)}"
                + (f" ({b.error})" if b.error else "")
            )
        for why in r.failures():
            out.append(f"    {why}")
        for c in r.cases:
            if not c.passed:
                out.append(f"    x {c.id}: {c.why} — {c.output[:120]!r}")
    ok = sum(r.thresholds_met for r in results)
    out.append(f"{ok} of {len(results)} suite(s) met their thresholds in {seconds:.1f} s")
    return "\n".join(out) + "\n"


def _pair(head, base, fmt) -> str:
    """`head` alone, or `base → head (delta)`."""
    if base is ...:
        return fmt(head)
    if head is None or base is None:
        return f"{fmt(base)} → {fmt(head)}"
    delta = head - base
    return f"{fmt(base)} → {fmt(head)} ({'+' if delta >= 0 else '-'}{fmt(abs(delta))})"


def markdown(results: list[SuiteResult], base: list[SuiteResult] | None = None) -> str:
    """The Eval section of a pull-request comment: one row a suite, failed cases collapsed."""
    arrow = " (base → head)" if base is not None else ""
    out = [
        f"| suite | workspace | pass rate{arrow} | p50{arrow} | p95{arrow} | tokens/s{arrow} | thresholds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        d = r.as_dict()
        b = _base_of(r, base)
        bd = b.as_dict() if b is not None else None

        def pick(key, bd=bd):
            return ... if base is None else (bd or {}).get(key)

        verdict = ":white_check_mark:" if r.thresholds_met else ":x: " + "; ".join(r.failures())
        rate = (
            f"{r.passed}/{len(r.cases)} ({r.pass_rate:.0%})"
            if base is None
            else _pair(d["pass_rate"], pick("pass_rate"), lambda v: _fmt(None if v is None else v * 100, "%"))
        )
        out.append(
            f"| `{r.suite.name}` | `{r.workspace or '-'}` | {rate} | "
            f"{_pair(d['p50_latency_ms'], pick('p50_latency_ms'), lambda v: _fmt(v, ' ms'))} | "
            f"{_pair(d['p95_latency_ms'], pick('p95_latency_ms'), lambda v: _fmt(v, ' ms'))} | "
            f"{_pair(d['tokens_per_second'], pick('tokens_per_second'), lambda v: _fmt(v, '', 1))} | "
            f"{verdict.replace('|', '/')} |"
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
