"""Asking a deployed endpoint: the eval suites' cases, one at a time, and their load, concurrently.

Speaks the OpenAI chat API every kaito-gitops endpoint serves (the CPU server, SGLang). httpx,
one client per run; a request that fails is a failed case (or a failed load request), with the
server's own message, never a traceback.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from ..evals.scoring import CaseResult, check
from ..evals.suite import Case, Load

TIMEOUT = httpx.Timeout(300.0, connect=5.0)


class Probe:
    def __init__(
        self, endpoint: str, timeout: httpx.Timeout = TIMEOUT, adapter: str = "", headers=None, verify=True
    ):
        """`headers` and `verify`: how to reach an endpoint behind the API server's service proxy."""
        self.endpoint = endpoint.rstrip("/")
        self.adapter = adapter
        self.client = httpx.Client(
            timeout=timeout, limits=httpx.Limits(max_connections=256), headers=headers, verify=verify
        )
        self._model: str | None = None

    def close(self) -> None:
        self.client.close()

    def model(self) -> str:
        """The model to ask: the base model's name as the server lists it, or SGLang's
        `<served>:<adapter>` for one of its LoRA adapters (the CPU server takes the same)."""
        if self._model is None:
            data = self.client.get(f"{self.endpoint}/v1/models").raise_for_status().json()
            self._model = data["data"][0]["id"]
            if self.adapter:
                self._model = f"{self._model}:{self.adapter}"
        return self._model

    def _chat(
        self, messages: list[dict], max_tokens: int, temperature: float, seed: int | None
    ) -> tuple[str, int]:
        body = {
            "model": self.model(),
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if temperature > 0:  # greedy decoding is deterministic already; a seed would leave the batch
            body["seed"] = 0 if seed is None else seed
        resp = self.client.post(f"{self.endpoint}/v1/chat/completions", json=body)
        if resp.status_code != 200:
            try:
                why = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                why = resp.text[:200]
            raise RuntimeError(f"HTTP {resp.status_code}: {why}")
        data = resp.json()
        return data["choices"][0]["message"]["content"] or "", int(
            (data.get("usage") or {}).get("completion_tokens", 0)
        )

    def run_case(self, case: Case) -> CaseResult:
        t0 = time.perf_counter()
        try:
            output, tokens = self._chat(list(case.messages), case.max_tokens, case.temperature, case.seed)
        except (httpx.HTTPError, RuntimeError, ValueError, KeyError) as e:
            return CaseResult(
                case.id, False, "", (time.perf_counter() - t0) * 1000, 0, f"request failed: {e}"
            )
        passed, why = check(case, output)
        return CaseResult(case.id, passed, output, (time.perf_counter() - t0) * 1000, tokens, why)

    def run_load(self, load: Load) -> tuple[float, int, list[float], int]:
        """(seconds, completion tokens, latencies in ms, failed requests) of `requests` requests,
        `concurrency` at a time."""

        def one(_: int) -> tuple[float, int] | None:
            t0 = time.perf_counter()
            try:
                _, tokens = self._chat([{"role": "user", "content": load.prompt}], load.max_tokens, 0.0, None)
            except (httpx.HTTPError, RuntimeError, ValueError, KeyError):
                return None
            return (time.perf_counter() - t0) * 1000, tokens

        self.model()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=load.concurrency, thread_name_prefix="eval-load") as pool:
            results = list(pool.map(one, range(load.requests)))
        seconds = time.perf_counter() - t0
        done = [r for r in results if r is not None]
        return seconds, sum(t for _, t in done), [ms for ms, _ in done], len(results) - len(done)
