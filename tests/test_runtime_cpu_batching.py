"""runtime.cpu_batching: transformers' continuous batching behind a bounded, cancellable front.

On the tiny random model (offline, seconds): a batched greedy request decodes exactly what
`model.generate` does; a request joins a batch that is already decoding; a stop or a cancel
takes a request out at once and frees its slot; a full queue says "busy" with a retry time.
The server does not use this yet (issue 15); these tests pin the behaviour it will rely on.
"""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
from support.tiny_model import build_tiny_model

pytestmark = pytest.mark.ml


@pytest.fixture(scope="module")
def model_and_batcher(tmp_path_factory):
    import torch
    from transformers import AutoModelForCausalLM

    from runtime.cpu_batching import Batcher

    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    batcher = Batcher(model, set(), {}, max_running=2, max_queued=1, max_context=256)
    yield model, batcher
    batcher.close()


def test_greedy_requests_decode_the_same_alone_or_batched(model_and_batcher):
    """(Token for token against `model.generate`: test_runtime_cpu_server's SmolLM2 test; on this
    random model near-equal logits make greedy choices hinge on the last bit of the attention.)"""
    _, b = model_and_batcher
    ids = [5, 17, 99, 3, 250]
    alone = b.generate(ids, 12, {"temperature": 0}, ignore_eos=True)
    assert alone.finish_reason == "length" and len(alone.token_ids) == 12
    out = {}
    threads = [
        threading.Thread(
            target=lambda k=k: out.setdefault(k, b.generate(ids, 12, {"temperature": 0}, ignore_eos=True))
        )
        for k in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out[0].token_ids == out[1].token_ids == alone.token_ids


def test_a_request_joins_a_batch_that_is_decoding(model_and_batcher):
    _, b = model_and_batcher
    first_started = threading.Event()
    results = {}

    def long():
        def on(tokens):
            first_started.set()
            return False

        results["long"] = b.generate([1, 2, 3], 120, {"temperature": 0}, ignore_eos=True, on_tokens=on)

    t = threading.Thread(target=long)
    t.start()
    assert first_started.wait(60)
    joined_at = time.monotonic()
    short = b.generate([7, 8, 9], 4, {"temperature": 0}, ignore_eos=True)
    short_done = time.monotonic()
    long_running = t.is_alive()
    t.join(120)
    # the short one finished while the long one was still decoding: it joined the running batch
    assert long_running, "the 4-token request waited for the 120-token one"
    assert len(short.token_ids) == 4 and len(results["long"].token_ids) == 120
    assert short_done - joined_at < 60


def test_stop_and_cancel_free_the_slot_at_once(model_and_batcher):
    _, b = model_and_batcher
    seen = []

    def on(tokens):
        seen.extend(tokens)
        return len(seen) >= 3

    r = b.generate([4, 4, 4], 200, {"temperature": 0.8, "top_p": 0.9}, ignore_eos=True, on_tokens=on)
    assert r.finish_reason == "stop" and 3 <= len(r.token_ids) < 200
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    r = b.generate([6, 6], 5000 // 25, {"temperature": 0}, ignore_eos=True, cancel=cancel)
    assert r.finish_reason == "abort"
    assert b.running == 0 and b.waiting == 0


def test_a_full_queue_is_busy_with_a_retry_time(model_and_batcher):
    from runtime.cpu_batching import Busy

    _, b = model_and_batcher
    cancel = threading.Event()
    threads = [
        threading.Thread(
            target=b.generate,
            args=([i, i], 200, {"temperature": 0}),
            kwargs={"ignore_eos": True, "cancel": cancel},
        )
        for i in range(3)  # 2 running + 1 queued: the limit
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while b.running + b.waiting < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(Busy) as e:
        b.generate([1], 4, {"temperature": 0})
    assert e.value.retry_after >= 1
    cancel.set()
    for t in threads:
        t.join(60)
    assert b.running == 0 and b.waiting == 0


# ---------------------------------------------------------------- the server, as a process


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m runtime.inference --backend cpu` on the tiny model: 2 decoding, 1 waiting."""
    from support.infer_util import offline_env, start_inference, stop, wait_http
    from support.net import free_port

    tmp = tmp_path_factory.mktemp("cbserver")
    path = build_tiny_model(tmp / "model")
    port = free_port()
    log = tmp / "server.log"
    args = ["--backend", "cpu", "--model", str(path), "--served-model-name", "tiny", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--max-running-requests", "2", "--max-queued-requests", "1"]
    proc = start_inference(args, offline_env(tmp), log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health", status=200, timeout=120, proc=proc, log=log)
        yield base
    finally:
        stop(proc)


def gauges(base: str) -> dict[str, float]:
    import httpx

    text = httpx.get(f"{base}/metrics").text
    out = {}
    for name in ("sglang:num_running_reqs", "sglang:num_queue_reqs"):
        m = re.search(rf'^{re.escape(name)}{{model_name="tiny"}} (\S+)$', text, re.M)
        out[name] = float(m.group(1)) if m else -1
    return out


def completion(base: str, n: int, **kw):
    import httpx

    body = {
        "model": "tiny",
        "prompt": "hello there",
        "max_tokens": n,
        "temperature": 0,
        "ignore_eos": True,
        **kw,
    }
    return httpx.post(f"{base}/v1/completions", json=body, timeout=120)


def test_the_server_batches_a_new_request_into_a_running_one_and_reports_it(server):
    import httpx

    with httpx.stream(
        "POST",
        f"{server}/v1/completions",
        json={
            "model": "tiny",
            "prompt": "a long one",
            "max_tokens": 400,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
        },
        timeout=120,
    ) as long:
        lines = long.iter_lines()
        next(line for line in lines if line.startswith("data: ") and '"text": ""' not in line)
        assert gauges(server)["sglang:num_running_reqs"] == 1
        short = completion(server, 4)
        assert short.status_code == 200 and short.json()["usage"]["completion_tokens"] == 4
        rest = [line for line in lines if line.startswith("data: ")]  # the long one goes on
        assert rest[-1] == "data: [DONE]" and len(rest) > 10
    deadline = time.monotonic() + 10
    while gauges(server)["sglang:num_running_reqs"] != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gauges(server) == {"sglang:num_running_reqs": 0, "sglang:num_queue_reqs": 0}


def generated(base: str) -> float:
    import httpx

    m = re.search(
        r'^kaito_inference_generation_tokens_total{model="tiny"} (\S+)$',
        httpx.get(f"{base}/metrics").text,
        re.M,
    )
    return float(m.group(1)) if m else 0.0


def test_a_client_that_goes_away_frees_its_slot(server):
    import httpx

    before = generated(server)
    with httpx.stream(
        "POST",
        f"{server}/v1/completions",
        json={
            "model": "tiny",
            "prompt": "x",
            "max_tokens": 480,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
        },
        timeout=120,
    ) as r:
        next(line for line in r.iter_lines() if line.startswith("data: ") and '"text": ""' not in line)
    # the connection is closed after the first token: the request leaves the batch
    t = time.monotonic()
    while gauges(server)["sglang:num_running_reqs"] != 0 and time.monotonic() - t < 10:
        time.sleep(0.05)
    assert gauges(server)["sglang:num_running_reqs"] == 0 and time.monotonic() - t < 5
    time.sleep(0.5)
    assert 0 < generated(server) - before < 480, "the abandoned request decoded to the end"


def test_a_full_server_answers_503_with_retry_after(server):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        busy = [pool.submit(completion, server, 480) for _ in range(3)]  # 2 decoding + 1 waiting
        deadline = time.monotonic() + 30
        while sum(gauges(server).values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        r = completion(server, 4)
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "server_busy" and "retry after" in r.json()["error"]["message"]
        assert all(f.result().status_code == 200 for f in busy)


def test_a_10_mb_prompt_or_a_completion_beyond_the_context_is_a_400(server):
    import httpx

    r = httpx.post(f"{server}/v1/completions", json={"model": "tiny", "prompt": "a" * (10 << 20)}, timeout=60)
    assert r.status_code == 400 and "limit" in r.json()["error"]["message"]
    r = completion(server, 10**7)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_batched_requests_keep_stop_strings_streaming_and_sampling(server):
    import httpx

    full = completion(server, 24).json()["choices"][0]["text"]
    stop = full[8:12]
    cut = completion(server, 24, stop=[stop]).json()["choices"][0]
    assert cut["finish_reason"] == "stop" and cut["text"] == full[: full.index(stop)]
    with httpx.stream(
        "POST",
        f"{server}/v1/completions",
        json={
            "model": "tiny",
            "prompt": "hello there",
            "max_tokens": 24,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
        },
        timeout=120,
    ) as r:
        events = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
    assert "".join(e["choices"][0]["text"] for e in events) == full
    sampled = completion(server, 16, temperature=0.9, top_p=0.9, top_k=40)
    assert sampled.status_code == 200 and sampled.json()["usage"]["completion_tokens"] == 16


def test_requests_fall_back_to_generate_when_the_batch_engine_dies(tmp_path):
    from fastapi.testclient import TestClient

    from runtime.cpu_server import create_app

    app = create_app(str(build_tiny_model(tmp_path / "model")), "tiny", load_in_background=False)
    body = {"model": "tiny", "prompt": "hello", "max_tokens": 8, "temperature": 0, "ignore_eos": True}
    with TestClient(app) as c:
        engine = app.state.engine
        assert c.post("/v1/completions", json=body).status_code == 200
        engine.batcher.manager.stop(block=True)  # what a crash of its thread leaves
        deadline = time.monotonic() + 10
        while not engine.batcher.stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.batcher.stopped
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 8
