"""`python -m runtime.inference`: Kaito's /chat translation, backend choice, and the SGLang launcher.

SGLang cannot serve on a machine without a GPU, so the launcher runs against a stand-in
(tests/support/infer_fake_sglang.py) started through $KAITO_SGLANG_LAUNCHER in place of
`python -m sglang.launch_server`. The stand-in records the argv it received, which must be
exactly what runtime.inference_args.sglang_command builds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
from support.infer_util import FAKE_SGLANG, offline_env, run_inference, start_inference, stop, wait_http
from support.net import free_port
from support.wait import wait_until

from runtime import chat
from runtime.inference import choose_backend, exit_status, internal_port
from runtime.inference_args import parse, sglang_command

API_KEY = "sk-test-9f8e7d6c5b4a"


# ---------------------------------------------------------------- runtime.chat


def test_prompt_maps_to_one_user_message_with_kaito_defaults():
    req = chat.parse_request({"prompt": "Tell me a joke"})
    body = chat.to_openai(req, "phi-3")
    assert body["model"] == "phi-3"
    assert body["messages"] == [{"role": "user", "content": "Tell me a joke"}]
    assert body["stream"] is False
    # Kaito's GenerateKwargs defaults: max_length 200, do_sample, temperature 1.0, top_k 10, top_p 1
    assert body["max_tokens"] == 200
    assert body["temperature"] == 1.0
    assert body["top_k"] == 10
    assert body["top_p"] == 1.0
    assert "min_tokens" not in body and "repetition_penalty" not in body


def test_generate_kwargs_mapping_and_unknown_keys_ignored():
    req = chat.parse_request(
        {
            "messages": [{"role": "user", "content": "hi"}],
            "generate_kwargs": {
                "max_length": 50,
                "max_new_tokens": 12,
                "min_new_tokens": 3,
                "min_length": 7,
                "temperature": 0.3,
                "top_p": 0.9,
                "top_k": 40,
                "typical_p": 0.5,
                "num_beams": 4,
                "early_stopping": True,
                "repetition_penalty": 1.2,
                "pad_token_id": 0,
                "stop": "###",
                "seed": 7,
                "some_new_knob": {"x": 1},
            },
        }
    )
    body = chat.to_openai(req, "m")
    assert body["max_tokens"] == 12  # max_new_tokens wins over max_length
    assert body["min_tokens"] == 3
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.3, 0.9, 40)
    assert body["repetition_penalty"] == 1.2
    assert body["stop"] == ["###"]
    assert body["seed"] == 7
    for ignored in (
        "num_beams",
        "typical_p",
        "min_length",
        "early_stopping",
        "pad_token_id",
        "some_new_knob",
    ):
        assert ignored not in body


def test_do_sample_false_is_greedy_and_bad_values_are_ignored():
    body = chat.to_openai(
        chat.parse_request(
            {"prompt": "x", "generate_kwargs": {"do_sample": False, "max_length": "many", "top_k": None}}
        ),
        "m",
    )
    assert body["temperature"] == 0.0
    assert "top_k" not in body and "top_p" not in body
    assert body["max_tokens"] == 200  # the unusable value fell back to Kaito's default


def test_chat_400_messages():
    def detail(body):
        with pytest.raises(chat.ChatRequestError) as e:
            chat.parse_request(body)
        assert e.value.status == 400
        return e.value.body()["detail"]

    assert detail({}) == chat.PROMPT_REQUIRED == "Text generation parameter prompt required"
    assert detail({"prompt": "", "return_full_text": False}) == chat.PROMPT_REQUIRED
    assert detail({"messages": []}) == chat.MESSAGES_REQUIRED == "Conversational parameter messages required"
    assert detail({"messages": None}) == chat.MESSAGES_REQUIRED
    assert detail({"pipeline": "conversational"}) == chat.MESSAGES_REQUIRED
    assert "role" in detail({"messages": [{"content": "no role"}]})
    assert detail([1, 2]) == "Request body must be a JSON object"


def test_prompt_wins_over_messages_and_answers():
    req = chat.parse_request({"prompt": "Q?", "messages": [{"role": "user", "content": "ignored"}]})
    assert not req.conversational
    answer = {"choices": [{"message": {"role": "assistant", "content": "A."}}]}
    assert chat.from_openai(req, answer) == {"Result": "Q?\nA."}
    req = chat.parse_request({"prompt": "Q? ", "return_full_text": False})
    assert chat.from_openai(req, answer) == {"Result": "A."}
    req = chat.parse_request({"prompt": "Q? "})
    assert chat.from_openai(req, answer) == {"Result": "Q? A."}
    req = chat.parse_request({"messages": [{"role": "user", "content": "Q?"}], "return_full_text": True})
    assert chat.from_openai(req, answer) == {"Result": "A."}  # the reply only, for conversations
    req = chat.parse_request({"prompt": "x", "adapter": "tuned"})
    assert chat.to_openai(req, "base")["model"] == "base:tuned"


def test_error_detail_shapes():
    assert chat.error_detail({"error": {"message": "bad"}}, 400) == {"detail": "bad"}
    assert chat.error_detail({"object": "error", "message": "sglang says"}, 400) == {"detail": "sglang says"}
    assert chat.error_detail({"error": "Unauthorized"}, 401) == {"detail": "Unauthorized"}
    assert chat.error_detail(None, 502) == {"detail": "inference backend answered HTTP 502"}


# ---------------------------------------------------------------- choices


def test_backend_choice():
    opts, _ = parse(["--model", "m", "--backend", "sglang"], env={})
    assert choose_backend(opts, env={}, gpu=False)[0] == "cpu"
    assert choose_backend(opts, env={"KAITO_SGLANG_LAUNCHER": "x"}, gpu=False)[0] == "sglang"
    cpu, _ = parse(["--model", "m", "--backend", "cpu"], env={})
    assert choose_backend(cpu, env={}, gpu=True)[0] == "cpu"
    assert exit_status(-15) == 143 and exit_status(3) == 3
    opts5001, _ = parse(["--model", "m", "--port", "5001"], env={})
    assert internal_port(opts5001, env={}) == 5002


def test_dry_run_prints_redacted_command(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    env = offline_env(tmp_path, KAITO_SGLANG_LAUNCHER=f"{sys.executable} {FAKE_SGLANG}")
    dry_run = ["--model", "org/m", "--api-key-file", str(key_file), "--dry-run"]
    out = run_inference(dry_run, env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert API_KEY not in out.stdout + out.stderr
    assert "--api-key" not in out.stdout, "the key never reaches SGLang's command line"
    # without a GPU and without a stand-in, --backend sglang falls back to the CPU server
    env.pop("KAITO_SGLANG_LAUNCHER")
    if not os.path.exists("/dev/nvidia0"):
        out = run_inference(dry_run, env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("cpu server")
        assert API_KEY not in out.stdout + out.stderr


# ---------------------------------------------------------------- the launcher, against a stand-in SGLang


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_record(path: Path, key: str, timeout: float = 20) -> dict:
    return wait_until(
        lambda: next((r for r in _records(path) if key in r), None),
        timeout,
        lambda: f"a {key!r} record in {path} (now: {_records(path)})",
    )


def _launch(tmp_path: Path, extra_args: list[str], extra_env: dict[str, str] | None = None):
    port, inner = free_port(), free_port()
    record = tmp_path / "record.jsonl"
    log = tmp_path / "inference.log"
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY)
    adapters = tmp_path / "adapters"
    (adapters / "tuned").mkdir(parents=True)
    (adapters / "tuned" / "adapter_config.json").write_text("{}")
    args = [
        "--model",
        "org/Model-7B",
        "--served-model-name",
        "model-7b",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--api-key-file",
        str(key_file),
        "--adapters-dir",
        str(adapters),
        "--context-length",
        "4096",
        *extra_args,
    ]
    env = offline_env(
        tmp_path,
        KAITO_SGLANG_LAUNCHER=f"{sys.executable} {FAKE_SGLANG}",
        KAITO_SGLANG_PORT=str(inner),
        FAKE_SGLANG_RECORD=str(record),
        FAKE_SGLANG_SHOW_FILE=str(key_file),  # the stand-in prints the key: the launcher must redact it
        KAITO_STOP_GRACE_SECONDS="10",
        **(extra_env or {}),
    )
    env.pop("POD_INDEX", None)
    env.update(extra_env or {})
    proc = start_inference(["--backend", "sglang", *args], env, log)
    return proc, args, port, inner, record, log


def test_sglang_proxy_end_to_end(tmp_path):
    ready = tmp_path / "ready"
    proc, args, port, inner, record, log = _launch(tmp_path, [], {"FAKE_SGLANG_READY_FILE": str(ready)})
    base = f"http://127.0.0.1:{port}"
    try:
        # SGLang got exactly sglang_command's argv (bound to loopback, on the internal port, no key)
        started = _wait_record(record, "argv")
        opts, _ = parse(args, env={})
        expected = sglang_command(dataclasses.replace(opts, host="127.0.0.1"), port=inner)
        assert started["argv"] == expected[3:]
        assert expected[1:3] == ["-m", "sglang.launch_server"]
        assert "--lora-paths" in started["argv"] and "--enable-metrics" in started["argv"]

        # /health follows SGLang's /health: 503 while it says 503, then 200
        r = wait_http(f"{base}/health", proc=proc, log=log)
        assert r.status_code == 503
        ready.write_text("")
        assert wait_http(f"{base}/health", status=200, proc=proc, log=log).json() == {"status": "ok"}

        auth = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=base, timeout=30) as c:
            # /chat -> one /v1/chat/completions call, Kaito's answer back
            r = c.post(
                "/chat",
                json={"prompt": "What is GitOps?", "generate_kwargs": {"do_sample": False}},
                headers=auth,
            )
            assert r.status_code == 200, r.text
            assert r.json() == {"Result": "What is GitOps?\necho: What is GitOps?"}
            sent = [x["request"] for x in _records(record) if "request" in x][-1]
            assert sent["model"] == "model-7b" and sent["temperature"] == 0.0 and sent["max_tokens"] == 200
            r = c.post(
                "/chat",
                json={"messages": [{"role": "user", "content": "hi"}], "adapter": "tuned"},
                headers=auth,
            )
            assert r.json() == {"Result": "echo: hi"}
            assert [x["request"] for x in _records(record) if "request" in x][-1]["model"] == "model-7b:tuned"
            assert c.post("/chat", json={}, headers=auth).json() == {"detail": chat.PROMPT_REQUIRED}
            assert c.post("/chat", json={"messages": []}, headers=auth).status_code == 400
            # the proxy checks the key: without it nothing reaches SGLang
            sent_before = len([x for x in _records(record) if "request" in x])
            r = c.post("/chat", json={"prompt": "x"})
            assert r.status_code == 401 and r.json() == {"detail": "Unauthorized"}
            assert (
                c.post("/chat", json={"prompt": "x"}, headers={"Authorization": "Bearer wrong"}).status_code
                == 401
            )
            # a key that is not ASCII is a wrong key, not an error
            r = c.post("/chat", json={"prompt": "x"}, headers={"Authorization": "Bearer sk-é".encode()})
            assert r.status_code == 401
            assert len([x for x in _records(record) if "request" in x]) == sent_before
            assert c.post("/chat", content=b"{not json", headers=auth).json() == {
                "detail": "Request body is not valid JSON"
            }

            # every other path goes through unchanged
            r = c.post(
                "/v1/chat/completions",
                json={"model": "model-7b", "messages": [{"role": "user", "content": "a b c"}]},
                headers=auth,
            )
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: a b c"
            # an adapter named the Kaito way reaches SGLang in its own syntax
            r = c.post(
                "/v1/chat/completions",
                json={"model": "tuned", "messages": [{"role": "user", "content": "x"}]},
                headers=auth,
            )
            assert r.status_code == 200
            assert [x["request"] for x in _records(record) if "request" in x][-1]["model"] == "model-7b:tuned"
            # a "model" that is not a string is no adapter name: it reaches SGLang as sent (once a 500)
            r = c.post(
                "/v1/chat/completions",
                json={"model": ["tuned"], "messages": [{"role": "user", "content": "x"}]},
                headers=auth,
            )
            assert r.status_code == 200, r.text
            assert [x["request"] for x in _records(record) if "request" in x][-1]["model"] == ["tuned"]
            assert c.post("/v1/chat/completions", json={"messages": []}).status_code == 401
            models = c.get("/v1/models", headers=auth).json()
            assert [m["id"] for m in models["data"]] == ["model-7b", "tuned"]
            assert c.get("/metrics").text.startswith("sglang:")
            body = {
                "model": "model-7b",
                "stream": True,
                "messages": [{"role": "user", "content": "one two three"}],
            }
            with c.stream("POST", "/v1/chat/completions", json=body, headers=auth) as s:
                assert s.headers["content-type"].startswith("text/event-stream")
                lines = [line for line in s.iter_lines() if line]
            assert lines[-1] == "data: [DONE]"
            chunks = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
            assert (
                "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks)
                == "echo: one two three"
            )

        # SIGTERM reaches SGLang; the launcher exits with SGLang's status
        child_pid = started["pid"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert {"signal": "SIGTERM"} in _records(record)
        with pytest.raises(ProcessLookupError):
            os.kill(child_pid, 0)
    finally:
        stop(proc)
    text = log.read_text()
    assert API_KEY not in text, "the API key leaked into the logs"
    assert text.count("token from") == 2 and text.count("<redacted>") >= 2  # SGLang's stdout and stderr
    assert "server_args=" in text and "api_key=None" in text  # SGLang runs keyless behind the proxy


def test_launcher_exits_when_sglang_dies(tmp_path):
    proc, _, port, _, record, log = _launch(tmp_path, [], {"FAKE_SGLANG_EXIT_CODE": "3"})
    try:
        wait_http(f"http://127.0.0.1:{port}/health", status=200, proc=proc, log=log)
        child = _wait_record(record, "argv")["pid"]
        os.kill(child, signal.SIGKILL)
        assert proc.wait(20) == 128 + signal.SIGKILL
    finally:
        stop(proc)
    assert "exited unexpectedly" in log.read_text()


def test_sigterm_status_is_sglangs(tmp_path):
    proc, _, port, _, _record, log = _launch(tmp_path, [], {"FAKE_SGLANG_EXIT_CODE": "3"})
    try:
        wait_http(f"http://127.0.0.1:{port}/health", status=200, proc=proc, log=log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 3
    finally:
        stop(proc)


def test_worker_rank_serves_only_health(tmp_path):
    multi = [
        "--nnodes",
        "2",
        "--tp-size",
        "8",
        "--dist-init-addr",
        "ws-0.ws-headless.ns.svc.cluster.local:20000",
    ]
    proc, args, port, inner, record, log = _launch(tmp_path, multi, {"POD_INDEX": "1"})
    try:
        r = wait_http(f"http://127.0.0.1:{port}/health", proc=proc, log=log)
        assert r.status_code == 200 and r.json()["node_rank"] == 1
        started = _wait_record(record, "argv")
        opts, _ = parse(args, env={"POD_INDEX": "1"})
        assert opts.node_rank == 1
        expected = sglang_command(dataclasses.replace(opts, host="127.0.0.1"), port=inner)
        assert started["argv"] == expected[3:]
        assert started["argv"][started["argv"].index("--node-rank") + 1] == "1"
        r = httpx.post(f"http://127.0.0.1:{port}/chat", json={"prompt": "x"})
        assert r.status_code == 404 and "rank 0" in r.json()["detail"]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 404
        # SGLang opened no HTTP port on this rank
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{inner}/health", timeout=2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        stop(proc)
    text = log.read_text()
    assert API_KEY not in text and text.count("token from") == 2


def test_cpu_backend_exits_when_the_model_cannot_load(tmp_path):
    env = offline_env(tmp_path)
    port = free_port()
    args = [
        "--backend",
        "cpu",
        "--model",
        str(tmp_path / "missing"),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    out = run_inference(args, env)
    assert out.returncode == 1, out.stderr
    assert "model folder" in out.stderr and "does not exist" in out.stderr
    assert "Traceback" not in out.stderr


def test_sglang_goes_when_the_launcher_is_killed(tmp_path):
    proc, _, port, _, record, log = _launch(tmp_path, [])
    try:
        wait_http(f"http://127.0.0.1:{port}/health", status=200, proc=proc, log=log)
        proc.kill()  # no chance to forward anything: the kernel tells SGLang (PR_SET_PDEATHSIG)
        proc.wait(10)
        assert _wait_record(record, "signal") == {"signal": "SIGTERM"}
    finally:
        stop(proc)
