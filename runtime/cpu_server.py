"""An OpenAI-compatible server on transformers, for machines without a GPU or SGLang.

`create_app(model_path, served_model_name, adapters={name: path})` returns a FastAPI app serving

- `POST /v1/chat/completions` and `POST /v1/completions` (`stream` false, or true: server-sent
  `chat.completion.chunk` / `text_completion` objects ending with `data: [DONE]`), with
  `max_tokens` (or `max_completion_tokens`), `temperature` (0 = greedy), `top_p`, `stop`, `seed`,
  `stream_options.include_usage`, and SGLang's extensions `top_k`, `min_tokens`, `ignore_eos`,
  `repetition_penalty`; `usage` counts the tokens really read and generated. Sampling fields a
  request leaves out come from the model's `generation_config.json`, as SGLang's default
  `--sampling-defaults model` does (else temperature 1, top_p 1, no top_k);
- `GET /v1/models` (the base model and one entry per LoRA adapter), `GET /v1/models/{id}`;
- `POST /chat`, Kaito's endpoint (see runtime.chat);
- `GET /health`: 200 `{"status": "ok"}` once the model is loaded, 503 before (and after a
  failed load, with the reason);
- `GET /metrics`: Prometheus text (requests by endpoint and status, latency histogram, prompt
  and generated tokens).

LoRA adapters are loaded once through peft (`PeftModel.from_pretrained` + `load_adapter`) and
chosen per request by `"model": "<adapter>"` (or SGLang's `"<served>:<adapter>"`); the base model
answers with the adapters disabled. There is one model on the CPU, so generation is serialised by
a lock. Errors are OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, never a
traceback. With `api_key`, every endpoint but /health and /metrics (left open for probes and
scrapers, as SGLang does) needs `Authorization: Bearer <key>`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from runtime import chat as kaito_chat
from runtime.auth import bearer_ok

log = logging.getLogger("runtime.cpu_server")

DEFAULT_MAX_TOKENS = 1024  # when a request gives no max_tokens (the context may be far longer)
OPEN_PATHS = ("/health", "/metrics")
ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/chat",
    "/health",
    "/metrics",
    "/",
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _bad(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, "invalid_request_error", code, param)


# ---------------------------------------------------------------- request fields


def _get_int(body: dict, key: str, lo: int | None = None, hi: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise _bad(f"{key} must be an integer, not {value!r}", key)
    value = int(value)
    if lo is not None and value < lo:
        raise _bad(f"{key} must be at least {lo}, not {value}", key)
    if hi is not None and value > hi:
        raise _bad(f"{key} must be at most {hi}, not {value}", key)
    return value


def _get_float(body: dict, key: str, lo: float, hi: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{key} must be a number, not {value!r}", key)
    if not lo <= value <= hi:
        raise _bad(f"{key} must be between {lo:g} and {hi:g}, not {value}", key)
    return float(value)


@dataclass
class Sampling:
    max_tokens: int | None = None
    min_tokens: int = 0
    temperature: float | None = None  # None: the model's default (generation_config), else 1.0
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False


def parse_sampling(body: dict) -> Sampling:
    """The sampling fields of an OpenAI request (plus SGLang's extensions), validated."""
    max_tokens = _get_int(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _get_int(body, "max_tokens", 1)
    n = _get_int(body, "n", 1)
    if n not in (None, 1):
        raise _bad("n > 1 is not supported by the CPU server", "n")
    if body.get("logprobs") not in (None, False, 0) or body.get("top_logprobs"):
        raise _bad("logprobs are not supported by the CPU server", "logprobs")
    if body.get("best_of") not in (None, 1):
        raise _bad("best_of is not supported by the CPU server", "best_of")
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,) if stop else ()
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        stops = tuple(s for s in stop if s)
    else:
        raise _bad("stop must be a string or a list of at most 4 strings", "stop")
    temperature = _get_float(body, "temperature", 0.0, 2.0)
    top_p = _get_float(body, "top_p", 0.0, 1.0)
    top_k = _get_int(body, "top_k", -1)
    min_tokens = _get_int(body, "min_tokens", 0) or 0
    if max_tokens is not None and min_tokens > max_tokens:
        raise _bad(f"min_tokens ({min_tokens}) is larger than max_tokens ({max_tokens})", "min_tokens")
    penalty = _get_float(body, "repetition_penalty", 0.01, 10.0)
    seed = _get_int(body, "seed", -(2**63), 2**63 - 1)
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise _bad("ignore_eos must be true or false", "ignore_eos")
    if top_p == 0.0:  # only the most likely token: greedy (transformers refuses top_p 0)
        temperature, top_p = 0.0, None
    return Sampling(
        max_tokens=max_tokens,
        min_tokens=min_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=0 if top_k == -1 else top_k,
        repetition_penalty=1.0 if penalty is None else penalty,
        stop=stops,
        seed=seed,
        ignore_eos=ignore_eos,
    )


def _message_text(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str):
                parts.append(p["text"])
            else:
                kind = p.get("type") if isinstance(p, dict) else type(p).__name__
                raise _bad(f"messages[{i}].content: only text parts are supported, not {kind!r}", "messages")
        return "".join(parts)
    raise _bad(f"messages[{i}].content must be a string or a list of text parts", "messages")


def parse_messages(body: dict) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list of {role, content} objects", "messages")
    if body.get("tools") or body.get("functions"):
        raise _bad("tool calling is not supported by the CPU server (SGLang serves it)", "tools")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise _bad("response_format other than text is not supported by the CPU server", "response_format")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _bad(f"messages[{i}] must be an object with a role", "messages")
        if m["role"] not in kaito_chat.ROLES:
            raise _bad(
                f"messages[{i}].role {m['role']!r} is not one of {', '.join(kaito_chat.ROLES)}", "messages"
            )
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": _message_text(m.get("content"), i)})
    return out


# ---------------------------------------------------------------- the model


class ModelThread:
    """One daemon thread that runs everything touching the model: loading and every generation.

    torch gives each calling thread its own OpenMP team; with generations spread over a thread
    pool, the idle teams spin on the same cores as the busy one. Measured on 2 cores, SmolLM2,
    16-token completions, 4 concurrent clients: 1.1 req/s from a thread pool, 1.7 from one thread
    (1.9 sequential); streamed, 960 ms became 580 ms.
    A daemon thread, unlike a ThreadPoolExecutor's, never holds the process at exit.
    """

    def __init__(self, name: str = "model") -> None:
        self.name = name
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.start_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.jobs.put((future, fn, args))
        with self.start_lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self.thread.start()
        return future

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(self.submit(fn, *args))

    def _run(self) -> None:
        while True:
            future, fn, args = self.jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)


@dataclass
class Generation:
    token_ids: list[int]
    text: str
    finish_reason: str
    prompt_tokens: int


class _Detokenizer:
    """Incremental text of the generated tokens: never emits half a character or a stop string's start."""

    def __init__(self, tokenizer: Any, stops: Iterable[str]):
        self.tok = tokenizer
        self.stops = tuple(stops)
        self.ids: list[int] = []
        self.sent = 0
        self.stopped = False
        self.text = ""

    def _decode(self) -> str:
        return self.tok.decode(self.ids, skip_special_tokens=True)

    def add(self, ids: list[int]) -> str:
        if self.stopped:
            return ""
        self.ids.extend(ids)
        text = self._decode()
        cut = self._stop_at(text)
        if cut is not None:
            self.stopped = True
            self.text = text[:cut]
            return self._flush(len(self.text))
        self.text = text
        end = len(text)
        while end > self.sent and text[end - 1] == "\ufffd":  # a multi-byte character not finished yet
            end -= 1
        end -= self._partial_stop(text[:end])
        return self._flush(end)

    def finish(self) -> str:
        return self._flush(len(self.text))

    def _flush(self, end: int) -> str:
        if end <= self.sent:
            return ""
        out = self.text[self.sent : end]
        self.sent = end
        return out

    def _stop_at(self, text: str) -> int | None:
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return min(hits) if hits else None

    def _partial_stop(self, text: str) -> int:
        """Length of the longest tail of text that starts a stop string (held back until known)."""
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best


def sampling_defaults(generation_config: Any) -> dict[str, float]:
    """temperature / top_p / top_k that the model's generation_config.json sets explicitly.

    Only keys the file sets count (`to_diff_dict`), not transformers' built-in defaults such as
    top_k 50, which SGLang does not apply either.
    """
    if generation_config is None:
        return {}
    try:
        explicit = generation_config.to_diff_dict()
    except Exception:  # an odd config object: fall back to OpenAI's defaults
        return {}
    return {
        k: float(explicit[k])
        for k in ("temperature", "top_p", "top_k")
        if isinstance(explicit.get(k), int | float) and not isinstance(explicit.get(k), bool)
    }


class Engine:
    """The model, its tokenizer and adapters; `generate` is serialised by a lock."""

    def __init__(
        self,
        model_path: str,
        served_model_name: str,
        adapters: dict[str, str] | None = None,
        *,
        aliases: Iterable[str] = (),
        revision: str | None = None,
        dtype: str | None = None,
        download_dir: str | None = None,
        model_cache_dir: str | None = None,
        context_length: int | None = None,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        check_memory: bool = True,
        trust_remote_code: bool = False,
        batching: bool = True,
        max_running: int = 8,
        max_queued: int = 64,
    ):
        self.model_path = model_path
        self.batching, self.max_running, self.max_queued = batching, max_running, max_queued
        self.batcher: Any = None  # runtime.cpu_batching.Batcher of greedy requests, when batching applies
        self._sampler: Any = None  # the Batcher of sampled requests, made on the first one
        self._sampler_lock = threading.Lock()
        self.served_model_name = served_model_name
        self.adapters = dict(adapters or {})
        self.aliases = {served_model_name, model_path, *aliases}
        self.revision = revision
        self.dtype = dtype
        self.download_dir = download_dir
        self.model_cache_dir = model_cache_dir
        self.context_length = context_length
        self.default_max_tokens = default_max_tokens
        self.check_memory = check_memory
        self.trust_remote_code = trust_remote_code
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.error: str | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.max_context = 0
        self.eos_ids: set[int] = set()
        self.sampling_defaults: dict[str, float] = {}
        self.created = int(time.time())
        self.load_seconds: float | None = None

    # -- loading

    def load(self) -> None:
        with self.lock:  # nothing generates before the model is whole
            if not self.ready.is_set():  # an app started twice (tests) loads once
                self._load()

    def _load(self) -> None:
        started = time.monotonic()
        # one request at a time: the Rust tokenizers' thread pool would only compete with torch's threads
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from runtime import weights

        path = weights.resolve_model(
            self.model_path,
            self.revision,
            download_dir=self.download_dir,
            cache_dir=self.model_cache_dir,
            trust_remote_code=self.trust_remote_code,
        )
        if self.check_memory:
            mem = weights.check_memory(path, dtype=self._dtype_name())
            log.info("memory: %s needed, %s available", weights.gib(mem.needed), weights.gib(mem.available))
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        dtype = self._dtype_name()
        kwargs["dtype"] = getattr(torch, dtype) if dtype and dtype != "auto" else "auto"
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=self.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        model.eval()
        if self.adapters:
            from peft import PeftModel

            items = list(self.adapters.items())
            name, apath = items[0]
            model = PeftModel.from_pretrained(model, apath, adapter_name=name)
            for name, apath in items[1:]:
                model.load_adapter(apath, adapter_name=name)
            model.eval()
            log.info("LoRA adapters loaded: %s", ", ".join(self.adapters))
        cfg = model.config
        self.max_context = int(
            self.context_length
            or getattr(cfg, "max_position_embeddings", None)
            or min(getattr(tokenizer, "model_max_length", 4096), 1 << 20)
        )
        self.sampling_defaults = sampling_defaults(getattr(model, "generation_config", None))
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos: set[int] = set()
        for value in (gen_eos, getattr(cfg, "eos_token_id", None), tokenizer.eos_token_id):
            if isinstance(value, int):
                eos.add(value)
            elif isinstance(value, list | tuple):
                eos.update(v for v in value if isinstance(v, int))
        self.eos_ids = eos
        if tokenizer.pad_token_id is None and eos:
            tokenizer.pad_token_id = min(eos)
        self.tokenizer, self.model = tokenizer, model
        if self.batching and not self.adapters:
            # LoRA layers live inside the base model's modules and peft switches them globally, so
            # a server with adapters decodes through peft, one request at a time (see batchable)
            from runtime.cpu_batching import Batcher

            self.batcher = Batcher(
                model,
                self.eos_ids,
                self.sampling_defaults,
                max_running=self.max_running,
                max_queued=self.max_queued,
                max_context=self.max_context,
                greedy=True,
            )
        self.load_seconds = time.monotonic() - started
        self.ready.set()
        log.info("model %s loaded from %s in %.1f s", self.served_model_name, path, self.load_seconds)

    def _dtype_name(self) -> str | None:
        from runtime import weights

        return weights.canonical_dtype(self.dtype) if self.dtype else None

    # -- requests

    def require_ready(self) -> None:
        if not self.ready.is_set():
            message = f"model failed to load: {self.error}" if self.error else "the model is still loading"
            raise OpenAIError(503, message, "server_error", "model_not_ready")

    def select(self, name: Any) -> str | None:
        """The adapter a request's `model` names (None: the base model); 404 for unknown names."""
        if name is None or name == "":
            return None
        if not isinstance(name, str):
            raise _bad("model must be a string", "model")
        if name in self.aliases:
            return None
        if name in self.adapters:
            return name
        base, sep, adapter = name.rpartition(":")
        if sep and base in self.aliases and (adapter in self.adapters or not adapter):
            return adapter or None
        raise OpenAIError(
            404, f"The model `{name}` does not exist.", "invalid_request_error", "model_not_found", "model"
        )

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            raise _bad("this model has no chat template; use /v1/completions", "messages")
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tok(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, prompt: Any) -> list[int]:
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt)["input_ids"])
        if (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        ):
            vocab = len(self.tokenizer)
            if any(t < 0 or t >= vocab for t in prompt):
                raise _bad(f"prompt token ids must be in [0, {vocab})", "prompt")
            return list(prompt)
        raise _bad("prompt must be a string, a list of one string, or a list of token ids", "prompt")

    def budget(self, prompt_len: int, sampling: Sampling) -> int:
        """max_tokens for this request, or a 400 when the prompt and completion do not fit the context."""
        room = self.max_context - prompt_len
        if room <= 0 or (sampling.max_tokens is not None and sampling.max_tokens > room):
            asked = sampling.max_tokens or 1
            raise _bad(
                f"This model's maximum context length is {self.max_context} tokens. However, you requested "
                f"{prompt_len + asked} tokens ({prompt_len} in the prompt, {asked} in the completion).",
                "messages",
                "context_length_exceeded",
            )
        if sampling.max_tokens is not None:
            return sampling.max_tokens
        return min(room, self.default_max_tokens)

    def batchable(self, adapter: str | None, sampling: Sampling) -> bool:
        """Whether this request joins the continuous batch. Not: an adapter (peft), a seed (one RNG
        for the whole batch), min_tokens or a repetition penalty (no per-request processor)."""
        return (
            self.batcher is not None
            and not self.batcher.stopped
            and adapter is None
            and sampling.seed is None
            and (sampling.min_tokens == 0 or sampling.ignore_eos)
            and sampling.repetition_penalty == 1.0
        )

    def resolved(self, sampling: Sampling) -> dict[str, Any]:
        """temperature, top_p, top_k: the request's, else the model's generation_config (as SGLang)."""
        d = self.sampling_defaults
        return {
            "temperature": d.get("temperature", 1.0)
            if sampling.temperature is None
            else sampling.temperature,
            "top_p": d.get("top_p", 1.0) if sampling.top_p is None else sampling.top_p,
            "top_k": int(d.get("top_k", 0)) if sampling.top_k is None else sampling.top_k,
        }

    def batch_for(self, sampling: Sampling) -> Any:
        """Greedy requests decode in one batch, sampled ones in another (see runtime.cpu_batching)."""
        if self.resolved(sampling)["temperature"] <= 0:
            return self.batcher
        with self._sampler_lock:
            if self._sampler is None:
                from runtime.cpu_batching import Batcher

                self._sampler = Batcher(
                    self.model,
                    self.eos_ids,
                    self.sampling_defaults,
                    max_running=self.max_running,
                    max_queued=self.max_queued,
                    max_context=self.max_context,
                )
            return self._sampler

    def batches(self) -> list[Any]:
        return [b for b in (self.batcher, self._sampler) if b is not None]

    def busy(self, retry_after: int) -> OpenAIError:
        return OpenAIError(
            503,
            f"the server is busy ({self.max_running} requests decoding, {self.max_queued} waiting); "
            f"retry after {retry_after}s",
            "server_error",
            "server_busy",
            headers={"Retry-After": str(retry_after)},
        )

    def generate_batched(
        self,
        ids: list[int],
        max_new: int,
        sampling: Sampling,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Generate in the shared batch: blocks this (request) thread, not the model's."""
        from runtime.cpu_batching import Busy

        detok = _Detokenizer(self.tokenizer, sampling.stop)
        params = self.resolved(sampling)

        def on_tokens(new: list[int]) -> bool:
            delta = detok.add(new)
            if delta and on_text is not None:
                on_text(delta)
            return detok.stopped

        try:
            res = self.batch_for(sampling).generate(
                ids, max_new, params, ignore_eos=sampling.ignore_eos, on_tokens=on_tokens, cancel=cancel
            )
        except Busy as exc:
            raise self.busy(exc.retry_after) from None
        tail = detok.finish()
        if tail and on_text is not None:
            on_text(tail)
        reason = "stop" if detok.stopped else res.finish_reason
        return Generation(res.token_ids, detok.text, reason, len(ids))

    def generate(
        self,
        ids: list[int],
        max_new: int,
        sampling: Sampling,
        adapter: str | None,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Generate up to `max_new` tokens (what `budget` allows), blocking, one request at a time.

        `on_text` receives text as it is decoded.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        detok = _Detokenizer(self.tokenizer, sampling.stop)
        cancel = cancel or threading.Event()
        prompt_len = len(ids)

        tok, stops = self.tokenizer, sampling.stop

        class Stops(StoppingCriteria):
            # runs before the streamer sees the newest token, so it decodes on its own
            def __call__(self, input_ids, scores, **kwargs):
                hit = cancel.is_set()
                if stops and not hit:
                    text = tok.decode(input_ids[0, prompt_len:].tolist(), skip_special_tokens=True)
                    hit = any(s in text for s in stops)
                return torch.full((input_ids.shape[0],), hit, dtype=torch.bool, device=input_ids.device)

        class Streamer(BaseStreamer):
            def __init__(self) -> None:
                self.prompt_seen = False

            def put(self, value):
                if not self.prompt_seen:  # generate() first hands over the prompt
                    self.prompt_seen = True
                    return
                delta = detok.add([int(t) for t in value.reshape(-1).tolist()])
                if delta and on_text is not None:
                    on_text(delta)

            def end(self):
                pass

        kwargs: dict[str, Any] = {
            "input_ids": torch.tensor([ids], dtype=torch.long),
            "attention_mask": torch.ones((1, len(ids)), dtype=torch.long),
            "max_new_tokens": max_new,
            "stopping_criteria": StoppingCriteriaList([Stops()]),
            "streamer": Streamer(),
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        min_new = max_new if sampling.ignore_eos else min(sampling.min_tokens, max_new)
        if min_new:
            kwargs["min_new_tokens"] = min_new
        params = self.resolved(sampling)
        if params["temperature"] > 0:
            kwargs.update(do_sample=True, **params)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = sampling.repetition_penalty
        with self.lock:
            if cancel.is_set():
                return Generation([], "", "abort", prompt_len)
            model = self.model
            if adapter is not None:
                model.set_adapter(adapter)
                ctx: Any = contextlib.nullcontext()
            elif self.adapters:
                ctx = model.disable_adapter()
            else:
                ctx = contextlib.nullcontext()
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            with torch.inference_mode(), ctx:
                out = model.generate(**kwargs)
        new = [int(t) for t in out[0, prompt_len:].tolist()]
        tail = detok.finish()
        if tail and on_text is not None:
            on_text(tail)
        if detok.stopped:
            reason = "stop"
        elif cancel.is_set():
            reason = "abort"
        elif new and new[-1] in self.eos_ids and not sampling.ignore_eos:
            reason = "stop"
        else:
            reason = "length" if len(new) >= max_new else "stop"
        return Generation(new, detok.text, reason, prompt_len)


# ---------------------------------------------------------------- metrics + auth (pure ASGI)


class _Metrics:
    def __init__(self, model: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kaito_inference_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kaito_inference_request_duration_seconds",
            "Time from request to the last byte of the response",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "kaito_inference_prompt_tokens", "Prompt tokens read", ["model"], registry=self.registry
        )
        self.generated_tokens = Counter(
            "kaito_inference_generation_tokens", "Tokens generated", ["model"], registry=self.registry
        )
        self.loaded = Gauge(
            "kaito_inference_model_loaded", "1 once the model is loaded", ["model"], registry=self.registry
        )
        self.loaded.labels(model).set(0)
        # the names SGLang exports, so autoscaling reads either backend the same way
        self.running = Gauge(
            "sglang:num_running_reqs", "Requests decoding", ["model_name"], registry=self.registry
        )
        self.queued = Gauge(
            "sglang:num_queue_reqs", "Requests waiting for a slot", ["model_name"], registry=self.registry
        )
        self.running.labels(model).set(0)
        self.queued.labels(model).set(0)

    def count_tokens(self, model: str, gen: Generation) -> None:
        self.prompt_tokens.labels(model).inc(gen.prompt_tokens)
        self.generated_tokens.labels(model).inc(len(gen.token_ids))


class _Middleware:
    """Bearer-key check and request metrics around every HTTP request (streams included)."""

    def __init__(self, app: Any, metrics: _Metrics, api_key: str | None):
        self.app, self.metrics, self.api_key = app, metrics, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = (
            path
            if path in ENDPOINTS
            else ("/v1/models/{model}" if path.startswith("/v1/models/") else "other")
        )
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._observe(endpoint, status["code"], started)

        if (
            self.api_key
            and path not in OPEN_PATHS
            and scope.get("method") != "OPTIONS"
            and not self._authorized(scope)
        ):
            err = OpenAIError(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
            await err.response()(scope, receive, send_wrapper)
            return
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            self._observe(endpoint, 500, started)
            raise

    def _authorized(self, scope) -> bool:
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                return bearer_ok(value.decode("latin-1"), self.api_key or "")
        return False

    def _observe(self, endpoint: str, status: int, started: float) -> None:
        self.metrics.requests.labels(endpoint, str(status)).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


# ---------------------------------------------------------------- the app


def _head(id_prefix: str, kind: str, model: str) -> dict[str, Any]:
    """The fields every object of one OpenAI response shares (each chunk of a stream too)."""
    return {
        "id": f"{id_prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
    }


def _usage(gen: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": len(gen.token_ids),
        "total_tokens": gen.prompt_tokens + len(gen.token_ids),
    }


def _sse(obj: dict | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


MAX_BODY_BYTES = 4 << 20  # far beyond any context this server holds; read no more than this


async def _json_body(request: Request) -> dict:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _bad(
            f"the request body is {int(declared):,} bytes; the limit is {MAX_BODY_BYTES:,}",
            code="body_too_large",
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _bad(f"the request body is over {MAX_BODY_BYTES:,} bytes", code="body_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    return body


def create_app(
    model_path: str,
    served_model_name: str | None = None,
    adapters: dict[str, str] | None = None,
    *,
    api_key: str | None = None,
    aliases: Iterable[str] = (),
    revision: str | None = None,
    dtype: str | None = None,
    download_dir: str | None = None,
    model_cache_dir: str | None = None,
    context_length: int | None = None,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    check_memory: bool = True,
    trust_remote_code: bool = False,
    load_in_background: bool = True,
    on_load_error: Callable[[BaseException], None] | None = None,
    batching: bool = True,
    max_running: int = 8,
    max_queued: int = 64,
) -> FastAPI:
    """The CPU server for `model_path` (a folder, or anything runtime.weights.resolve_model takes).

    The model loads when the app starts (its lifespan): in a background thread by default, so
    /health answers 503 meanwhile; `load_in_background=False` loads before serving.
    `on_load_error` is called (from the loading thread) when loading fails.
    """
    served = served_model_name or model_path
    engine = Engine(
        model_path,
        served,
        adapters,
        aliases=aliases,
        revision=revision,
        dtype=dtype,
        download_dir=download_dir,
        model_cache_dir=model_cache_dir,
        context_length=context_length,
        default_max_tokens=default_max_tokens,
        check_memory=check_memory,
        trust_remote_code=trust_remote_code,
        batching=batching,
        max_running=max_running,
        max_queued=max_queued,
    )
    metrics = _Metrics(served)
    worker = ModelThread()
    # threads that only wait for their request's tokens (asyncio's default pool has cores + 4)
    waiters = concurrent.futures.ThreadPoolExecutor(
        2 * (max_running + max_queued), thread_name_prefix="cb-wait"
    )

    def load() -> None:
        try:
            engine.load()
            metrics.loaded.labels(served).set(1)
        except BaseException as exc:  # report every failure, never a traceback to clients
            engine.error = f"{type(exc).__name__}: {exc}"
            log.error(
                "loading %s failed: %s",
                model_path,
                engine.error,
                exc_info=not isinstance(exc, OSError | MemoryError),
            )
            if on_load_error is not None:
                on_load_error(exc)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if load_in_background:
            worker.submit(load)
        else:
            await worker.run(load)
        yield
        for batch in engine.batches():  # stop the decode threads before the interpreter exits
            await asyncio.to_thread(batch.close)
        engine.batcher = engine._sampler = None  # an app started again decodes on the generate path
        waiters.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="kaito-gitops CPU inference server", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.state.metrics = metrics
    app.add_middleware(_Middleware, metrics=metrics, api_key=api_key)

    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(kaito_chat.ChatRequestError)
    async def chat_error(request: Request, exc: kaito_chat.ChatRequestError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        err = OpenAIError(500, f"internal error: {type(exc).__name__}", "server_error", "internal_error")
        return err.response()

    @app.get("/")
    async def home() -> dict:
        return {"message": "Server is running"}

    @app.get("/health")
    async def health() -> JSONResponse:
        if engine.ready.is_set():
            return JSONResponse({"status": "ok"})
        if engine.error:
            return JSONResponse({"status": "error", "detail": engine.error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if engine.batcher is not None:
            metrics.running.labels(served).set(sum(b.running for b in engine.batches()))
            metrics.queued.labels(served).set(sum(b.waiting for b in engine.batches()))
        else:
            metrics.running.labels(served).set(1 if engine.lock.locked() else 0)
            metrics.queued.labels(served).set(max(0, worker.jobs.qsize()))

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def model_card(name: str, parent: str | None) -> dict:
        card = {"id": name, "object": "model", "created": engine.created, "owned_by": "kaito-gitops"}
        card.update(root=name, parent=parent)
        if parent is None and engine.max_context:
            card["max_model_len"] = engine.max_context
        return card

    @app.get("/v1/models")
    async def list_models() -> dict:
        cards = [model_card(served, None)] + [model_card(a, served) for a in engine.adapters]
        return {"object": "list", "data": cards}

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str) -> dict:
        if model == served:
            return model_card(served, None)
        if model in engine.adapters:
            return model_card(model, served)
        raise OpenAIError(
            404, f"The model `{model}` does not exist.", "invalid_request_error", "model_not_found", "model"
        )

    async def run(ids: list[int], max_new: int, sampling: Sampling, adapter: str | None) -> Generation:
        if engine.batchable(adapter, sampling):
            cancel = threading.Event()
            try:  # a request thread that only waits: the batch runs on the manager's thread
                gen = await asyncio.get_running_loop().run_in_executor(
                    waiters, engine.generate_batched, ids, max_new, sampling, None, cancel
                )
            finally:
                cancel.set()  # the client went away mid-request: leave the batch
        else:
            gen = await worker.run(engine.generate, ids, max_new, sampling, adapter)
        metrics.count_tokens(served, gen)
        return gen

    def stream(
        ids: list[int],
        max_new: int,
        sampling: Sampling,
        adapter: str | None,
        head: dict,
        choice: Callable[[str | None, str | None], dict],
        with_usage: bool,
    ) -> StreamingResponse:
        """Server-sent `head` + one choice per event: choice(None, None) first, then choice(text, None)
        for each piece of text, choice(None, finish_reason) last, then the usage if asked for."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        batched = engine.batchable(adapter, sampling)
        if batched and engine.batch_for(sampling).full():
            raise engine.busy(engine.batch_for(sampling).retry_after())

        def work() -> None:
            try:
                emit = lambda t: loop.call_soon_threadsafe(queue.put_nowait, ("text", t))  # noqa: E731
                if batched:
                    gen = engine.generate_batched(ids, max_new, sampling, emit, cancel)
                else:
                    gen = engine.generate(ids, max_new, sampling, adapter, emit, cancel)
                metrics.count_tokens(served, gen)
                loop.call_soon_threadsafe(queue.put_nowait, ("done", gen))
            except OpenAIError as exc:
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
            except Exception as exc:
                log.exception("streaming generation failed")
                err = OpenAIError(
                    500, f"internal error: {type(exc).__name__}", "server_error", "internal_error"
                )
                loop.call_soon_threadsafe(queue.put_nowait, ("error", err))

        def chunk(text: str | None, finish: str | None) -> bytes:
            out = {**head, "choices": [choice(text, finish)]}
            if with_usage:  # OpenAI's shape: null on every chunk but the final usage one
                out["usage"] = None
            return _sse(out)

        async def events() -> AsyncIterator[bytes]:
            if batched:
                threading.Thread(target=work, name="cb-request", daemon=True).start()
            else:
                worker.submit(work)
            try:
                yield chunk(None, None)
                while True:
                    kind, item = await queue.get()
                    if kind == "text":
                        yield chunk(item, None)
                    elif kind == "error":
                        yield _sse(item.body())
                        break
                    else:
                        yield chunk(None, item.finish_reason)
                        if with_usage:
                            yield _sse({**head, "choices": [], "usage": _usage(item)})
                        break
                yield _sse("[DONE]")
            finally:
                cancel.set()  # the client went away, or we are done: stop generating

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    def include_usage(body: dict) -> bool:
        opts = body.get("stream_options")
        return isinstance(opts, dict) and bool(opts.get("include_usage"))

    async def chat_completion(body: dict) -> dict | StreamingResponse:
        engine.require_ready()
        adapter = engine.select(body.get("model"))
        messages = parse_messages(body)
        sampling = parse_sampling(body)
        ids = engine.chat_ids(messages)
        max_new = engine.budget(len(ids), sampling)
        model_name = body.get("model") or served
        if body.get("stream"):

            def choice(text: str | None, finish: str | None) -> dict:
                if finish is not None:
                    delta: dict = {}
                elif text is None:  # the first chunk
                    delta = {"role": "assistant", "content": ""}
                else:
                    delta = {"content": text}
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

            head = _head("chatcmpl", "chat.completion.chunk", model_name)
            return stream(ids, max_new, sampling, adapter, head, choice, include_usage(body))
        gen = await run(ids, max_new, sampling, adapter)
        message = {"role": "assistant", "content": gen.text}
        return {
            **_head("chatcmpl", "chat.completion", model_name),
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": gen.finish_reason}
            ],
            "usage": _usage(gen),
            "system_fingerprint": None,
        }

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Any:
        return await chat_completion(await _json_body(request))

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Any:
        body = await _json_body(request)
        engine.require_ready()
        adapter = engine.select(body.get("model"))
        if "prompt" not in body:
            raise _bad("prompt is required", "prompt")
        if body.get("suffix"):
            raise _bad("suffix is not supported by the CPU server", "suffix")
        sampling = parse_sampling(body)
        ids = engine.prompt_ids(body["prompt"])
        max_new = engine.budget(len(ids), sampling)
        echo = bool(body.get("echo"))
        prefix = engine.tokenizer.decode(ids, skip_special_tokens=True) if echo else ""
        model_name = body.get("model") or served
        head = _head("cmpl", "text_completion", model_name)
        if body.get("stream"):

            def choice(text: str | None, finish: str | None) -> dict:
                if text is None and finish is None:  # the first chunk carries the echoed prompt
                    text = prefix
                return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}

            return stream(ids, max_new, sampling, adapter, head, choice, include_usage(body))
        gen = await run(ids, max_new, sampling, adapter)
        return {
            **head,
            "choices": [
                {"index": 0, "text": prefix + gen.text, "logprobs": None, "finish_reason": gen.finish_reason}
            ],
            "usage": _usage(gen),
            "system_fingerprint": None,
        }

    @app.post("/chat")
    async def kaito_chat_endpoint(request: Request) -> JSONResponse:
        req = kaito_chat.parse_body(await request.body())
        try:
            engine.require_ready()
            answer = await chat_completion(kaito_chat.to_openai(req, served))
        except OpenAIError as exc:
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        assert isinstance(answer, dict)
        return JSONResponse(kaito_chat.from_openai(req, answer))

    return app
