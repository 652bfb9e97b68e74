"""Kaito's `POST /chat`, spoken through any OpenAI-compatible backend.

Kaito's old transformers runtime (`presets/workspace/inference/text-generation/inference_api.py`)
served `POST /chat` with a body of either `{"prompt": ...}` (its `text-generation` pipeline, the
default) or `{"messages": [...]}` (its `conversational` pipeline), plus `generate_kwargs` and
`return_full_text`, and answered `{"Result": "<text>"}`. This module turns such a request into one
OpenAI `POST /v1/chat/completions` body and the OpenAI answer back into Kaito's, so the SGLang
proxy (`runtime.inference`) and the CPU server (`runtime.cpu_server`) share one implementation:

    req = parse_body(raw)                           # ChatRequestError -> 400 {"detail": ...}
    openai_body = to_openai(req, served_model_name)
    answer = from_openai(req, openai_response)      # {"Result": "..."}

Choices, where Kaito's server and an OpenAI backend differ (kept in one place, here):

- Which 400 message. Kaito ran ONE pipeline per server and checked only that pipeline's field:
  the default `text-generation` server said "Text generation parameter prompt required", a
  `conversational` server said "Conversational parameter messages required". This server does
  both, choosing by the body: a non-empty `prompt` is text generation, else a non-empty `messages`
  is conversational. When neither is usable the answer is the conversational message if the body
  asked for a conversation (a `messages` key that is present but empty/null, or Kaito's old
  `"pipeline": "conversational"` request field), and the text-generation message otherwise (what
  a client of Kaito's default server got for `{}`). If both are given, `prompt` wins, as it did on
  Kaito's default server, which ignored `messages`.
- A prompt is sent as one user message: the served models are instruct models, and the chat
  template the backend applies is what makes them answer. `return_full_text` (Kaito's default:
  true) puts the prompt in front of the answer, as the transformers pipeline did; a newline
  separates them unless the prompt already ends in whitespace (the pipeline continued the text,
  we answer it). For `messages` the result is the assistant's reply alone (Kaito returned
  `str(response[-1])`, the last message of the conversation as a Python dict repr; the reply text
  is what users wanted from it).
- `generate_kwargs`: Kaito filled in its own defaults (`max_length` 200, `do_sample` true,
  `temperature` 1.0, `top_k` 10, `top_p` 1) and so does this module. They map to OpenAI fields:
  `max_new_tokens` (or else `max_length`) -> `max_tokens` (in transformers `max_length` also counts
  the prompt; a backend cannot subtract a prompt it has not tokenised, so it is used as the budget
  of new tokens, an upper bound of what Kaito generated), `do_sample: false` -> `temperature` 0
  (greedy), `temperature`, `top_p`, `top_k` (SGLang and the CPU server accept it), `stop` /
  `stop_sequences` / `stop_strings` -> `stop`, `seed`, and two extensions both SGLang and the CPU
  server understand: `min_new_tokens` -> `min_tokens` and `repetition_penalty`. Everything else
  (`min_length`, `num_beams`, `typical_p`, `early_stopping`, `pad_token_id`, unknown keys, ...) is
  ignored, never an error, as Kaito's pydantic model with `extra = 'allow'` accepted them.
- Extension: an optional `"adapter": "<name>"` selects a LoRA adapter, sent in SGLang's
  `"model": "<served>:<adapter>"` syntax, which the CPU server accepts too. Without it the base
  model answers (Kaito merged all adapters into one for /chat; SGLang serves each on its own).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

PROMPT_REQUIRED = "Text generation parameter prompt required"
MESSAGES_REQUIRED = "Conversational parameter messages required"

# Kaito's GenerateKwargs defaults (the text-generation runtime's pydantic model).
KAITO_DEFAULTS: dict[str, Any] = {
    "max_length": 200,
    "min_length": 0,
    "do_sample": True,
    "early_stopping": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 10,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
}
ROLES = ("system", "user", "assistant", "tool", "developer")


class ChatRequestError(ValueError):
    """A /chat body Kaito would refuse: answer `status` with `{"detail": detail}`."""

    def __init__(self, detail: str, status: int = 400):
        super().__init__(detail)
        self.detail = detail
        self.status = status

    def body(self) -> dict[str, str]:
        return {"detail": self.detail}


@dataclass
class ChatRequest:
    """A validated /chat request: exactly one of `prompt` / `messages` is set."""

    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    generate_kwargs: dict[str, Any] = field(default_factory=dict)
    return_full_text: bool = True
    adapter: str | None = None

    @property
    def conversational(self) -> bool:
        return self.messages is not None


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


def parse_body(raw: bytes) -> ChatRequest:
    """parse_request for the raw bytes of an HTTP body (an empty body is `{}`)."""
    try:
        body = json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError):
        raise ChatRequestError("Request body is not valid JSON") from None
    return parse_request(body)


def parse_request(body: Any) -> ChatRequest:
    """Validate a /chat JSON body; raises ChatRequestError with Kaito's 400 messages."""
    if not isinstance(body, dict):
        raise ChatRequestError("Request body must be a JSON object")
    prompt, messages = body.get("prompt"), body.get("messages")
    if not _is_empty(prompt):
        if not isinstance(prompt, str):
            raise ChatRequestError("prompt must be a string")
        msgs = None
    elif not _is_empty(messages):
        prompt, msgs = None, _check_messages(messages)
    elif "messages" in body or body.get("pipeline") == "conversational":
        raise ChatRequestError(MESSAGES_REQUIRED)
    else:
        raise ChatRequestError(PROMPT_REQUIRED)

    gen = body.get("generate_kwargs")
    if gen is None:
        gen = {}
    if not isinstance(gen, dict):
        raise ChatRequestError("generate_kwargs must be an object")
    full = body.get("return_full_text", True)
    adapter = body.get("adapter")
    if adapter is not None and (not isinstance(adapter, str) or not adapter):
        raise ChatRequestError("adapter must be a non-empty string (a LoRA adapter's name)")
    return ChatRequest(
        prompt=prompt,
        messages=msgs,
        generate_kwargs=dict(gen),
        return_full_text=True if full is None else bool(full),
        adapter=adapter,
    )


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise ChatRequestError("messages must be a list of {role, content} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ChatRequestError(f"messages[{i}] must be an object with role and content")
        if m["role"] not in ROLES:
            raise ChatRequestError(f"messages[{i}].role must be one of {', '.join(ROLES)}, not {m['role']!r}")
        if not isinstance(m["content"], str | list):
            raise ChatRequestError(f"messages[{i}].content must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _number(kw: dict[str, Any], key: str, kind: type, lo: float | None = None) -> Any:
    """kw[key] as int/float, or None when absent, null or unusable (never an error: Kaito accepted it)."""
    value = kw.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        return None
    if isinstance(number, float) and not math.isfinite(number):
        return None
    if lo is not None and number < lo:
        return None
    return number


def openai_sampling(generate_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI (plus SGLang extension) sampling fields for Kaito's generate_kwargs."""
    kw = {**KAITO_DEFAULTS, **{k: v for k, v in generate_kwargs.items() if v is not None}}
    for key, default in KAITO_DEFAULTS.items():  # an unusable value falls back to Kaito's default
        if key != "do_sample" and _number(kw, key, type(default)) is None:
            kw[key] = default
    out: dict[str, Any] = {}
    max_tokens = _number(kw, "max_new_tokens", int, 1)
    if max_tokens is None:
        max_tokens = _number(kw, "max_length", int, 1)
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    min_tokens = _number(kw, "min_new_tokens", int, 1)
    if min_tokens is not None:
        out["min_tokens"] = min(min_tokens, max_tokens) if max_tokens else min_tokens
    do_sample = kw.get("do_sample", True)
    temperature = _number(kw, "temperature", float, 0.0)
    if do_sample is False or (isinstance(do_sample, str) and do_sample.lower() == "false"):
        out["temperature"] = 0.0
    else:
        out["temperature"] = 1.0 if temperature is None else temperature
        top_p = _number(kw, "top_p", float, 0.0)
        if top_p is not None and 0.0 < top_p <= 1.0:
            out["top_p"] = top_p
        top_k = _number(kw, "top_k", int, 1)
        if top_k is not None:
            out["top_k"] = top_k
    penalty = _number(kw, "repetition_penalty", float, 0.0)
    if penalty is not None and penalty > 0 and penalty != 1.0:
        out["repetition_penalty"] = penalty
    stop = next((kw[k] for k in ("stop", "stop_sequences", "stop_strings") if kw.get(k)), None)
    if isinstance(stop, str):
        out["stop"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) and s for s in stop):
        out["stop"] = stop[:4]
    seed = _number(kw, "seed", int)
    if seed is not None:
        out["seed"] = seed
    return out


def to_openai(req: ChatRequest, served_model_name: str) -> dict[str, Any]:
    """The `POST /v1/chat/completions` body for a /chat request."""
    if req.messages is not None:
        messages = req.messages
    else:
        messages = [{"role": "user", "content": req.prompt or ""}]
    model = f"{served_model_name}:{req.adapter}" if req.adapter else served_model_name
    return {"model": model, "messages": messages, "stream": False, **openai_sampling(req.generate_kwargs)}


def reply_text(openai_response: dict[str, Any]) -> str:
    """The assistant's text in an OpenAI chat.completion (or completion) object."""
    choices = openai_response.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    message = choice.get("message")
    if isinstance(message, dict):
        content = message.get("content")
        if isinstance(content, list):  # content parts
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content or ""
    return choice.get("text") or ""


def from_openai(req: ChatRequest, openai_response: dict[str, Any]) -> dict[str, str]:
    """Kaito's `{"Result": ...}` for the OpenAI answer to `to_openai(req, ...)`."""
    text = reply_text(openai_response)
    if req.prompt is not None and req.return_full_text:
        sep = "" if not req.prompt or req.prompt[-1].isspace() else "\n"
        text = f"{req.prompt}{sep}{text}"
    return {"Result": text}


def error_detail(body: Any, status: int) -> dict[str, str]:
    """Kaito's `{"detail": ...}` for a backend's error body (OpenAI's or SGLang's shape)."""
    message = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            message = err.get("message")
        elif isinstance(err, str):
            message = err
        message = message or body.get("message") or body.get("detail")
    if not isinstance(message, str) or not message:
        message = f"inference backend answered HTTP {status}"
    return {"detail": message}
