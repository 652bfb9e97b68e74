"""Autoscaling InferenceSets: the decision (pure), and the activator that holds requests at zero.

The decision is tested as a table of moments; the activator as a real server (uvicorn, httpx)
in front of small upstream servers that stand in for members, which come and go.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from reconciler.autoscale import Load, SetScale, decide, saved, wanted
from reconciler.inferenceset import Scaling
from reconciler.targets.activator import Activator
from reconciler.targets.member_metrics import read_load

ZERO_TO_THREE = Scaling(min_replicas=0, max_replicas=3, target_queue=2, scale_down_after=60)


def test_wanted_is_requests_in_flight_over_the_target_within_the_bounds():
    assert wanted(ZERO_TO_THREE, Load()) == 0
    assert wanted(ZERO_TO_THREE, Load(held=1)) == 1, "a held request starts one"
    assert wanted(ZERO_TO_THREE, Load(running=3)) == 2
    assert wanted(ZERO_TO_THREE, Load(running=4, queued=9)) == 3, "never above max"
    assert wanted(ZERO_TO_THREE, Load(arrived=1)) == 1, "short requests seen only as arrivals keep one"
    assert wanted(Scaling(1, 3), Load()) == 1, "never below min"


def test_up_is_at_once_and_down_waits_for_the_whole_window_at_the_window_peak():
    state = SetScale()
    assert decide(ZERO_TO_THREE, state, 0, Load(held=2), 0.0) == (
        1,
        "2 request(s) waiting with no replica running",
    )
    n, why = decide(ZERO_TO_THREE, state, 1, Load(running=6), 1.0)
    assert (n, why) == (3, "6 request(s) in flight, target 2 per replica")
    # a lull: nothing in flight, but the window still holds the burst
    assert decide(ZERO_TO_THREE, state, 3, Load(), 30.0) == (3, "")
    assert decide(ZERO_TO_THREE, state, 3, Load(running=2), 50.0) == (3, "")
    # the burst leaves the window; the later moment that needed one replica is still in it
    n, why = decide(ZERO_TO_THREE, state, 3, Load(), 62.0)
    assert (n, why) == (1, "at most 1 replica(s) needed in the last 1m0s")
    assert decide(ZERO_TO_THREE, state, 1, Load(), 100.0) == (1, "")
    assert decide(ZERO_TO_THREE, state, 1, Load(), 111.0) == (0, "no request for 1m0s")


def test_no_scaling_down_while_a_member_load_cannot_be_read():
    state = SetScale()
    assert decide(ZERO_TO_THREE, state, 2, Load(unread=1), 0.0) == (2, "")
    assert decide(ZERO_TO_THREE, state, 2, Load(unread=1), 100.0) == (2, "")
    assert decide(ZERO_TO_THREE, state, 2, Load(), 101.0)[0] == 0


def test_a_count_outside_new_bounds_is_brought_inside_them_and_nothing_scales_down_before_a_window():
    state = SetScale()
    assert decide(Scaling(1, 3, 2, 60), state, 5, Load(), 0.0) == (3, "bounds are 1-3")
    assert decide(Scaling(1, 3, 2, 60), state, 3, Load(), 59.0) == (3, ""), "a restart is not an idle window"
    assert decide(Scaling(1, 3, 2, 60), state, 3, Load(), 60.0)[0] == 1


def test_gpu_seconds_saved_are_against_running_max_all_the_time():
    assert saved(ZERO_TO_THREE, 0, 2, 3600) == 3 * 2 * 3600
    assert saved(ZERO_TO_THREE, 3, 2, 3600) == 0


# -- the activator ----------------------------------------------------------------------------


class _Member(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/metrics":
            body = (
                f'sglang:num_running_reqs{{model_name="m"}} {self.server.running}\n'
                f'sglang:num_queue_reqs{{model_name="m"}} {self.server.queued}\n'
            ).encode()
            self._reply(body, "text/plain")
            return
        self._reply(json.dumps({"member": self.server.name}).encode())

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(self.server.delay)
        if self.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(3):
                chunk = f"data: {i}\n\n".encode()
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        self._reply(json.dumps({"member": self.server.name, "echo": body.decode()}).encode())

    def _reply(self, body: bytes, ctype: str = "application/json"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def member(name: str, delay: float = 0.0, running: int = 0, queued: int = 0):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Member)
    server.name, server.delay, server.running, server.queued = name, delay, running, queued
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def activator(upstreams: list[str], **kw):
    holds = []
    act = Activator("phi", upstreams=lambda: list(upstreams), on_hold=lambda: holds.append(1), **kw).start()
    act.holds = holds
    try:
        yield act
    finally:
        act.stop()


def test_requests_at_zero_are_held_then_all_answered_by_the_first_member_that_comes_up():
    ups: list[str] = []
    with activator(ups) as act, ThreadPoolExecutor(6) as pool:
        asks = [
            pool.submit(httpx.post, f"{act.endpoint}/v1/chat/completions", content=f"q{i}", timeout=30)
            for i in range(6)
        ]
        deadline = time.monotonic() + 10
        while act.held < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert act.held == 6 and act.holds, "every request waits, and the daemon is told"
        text = httpx.get(f"{act.endpoint}/metrics").text
        assert "kaito_gitops_activator_held_requests 6.0" in text
        assert "kaito_gitops_activator_requests_total 6.0" in text
        with member("phi-0") as (_, url):
            ups.append(url)
            answers = [a.result() for a in asks]
        assert [r.status_code for r in answers] == [200] * 6
        assert sorted(r.json()["echo"] for r in answers) == [f"q{i}" for i in range(6)]
        assert act.held == 0 and act.in_flight == {}


def test_a_request_held_past_the_timeout_gets_503_with_the_reason():
    with activator([], hold_timeout=0.5) as act:
        r = httpx.get(f"{act.endpoint}/v1/models", timeout=10)
    assert r.status_code == 503 and r.headers["retry-after"] == "30"
    assert r.json()["error"] == {
        "message": "no replica of phi became ready within 0.5s",
        "code": "cold_start_timeout",
    }


def test_requests_go_to_the_least_busy_member_and_a_dead_one_costs_no_request():
    dead = "http://127.0.0.1:9"  # nothing listens: connection refused before anything is sent
    with (
        member("phi-0", delay=0.3) as (_, a),
        member("phi-1", delay=0.3) as (_, b),
        activator([dead, a, b]) as act,
        ThreadPoolExecutor(4) as pool,
    ):
        answers = list(
            pool.map(lambda i: httpx.post(f"{act.endpoint}/x", content=str(i), timeout=10), range(4))
        )
    assert [r.status_code for r in answers] == [200] * 4
    by = [r.json()["member"] for r in answers]
    assert sorted(by) == ["phi-0", "phi-0", "phi-1", "phi-1"], by


def test_streams_pass_through_and_a_drained_member_finishes_first():
    with member("phi-0", delay=0.5) as (_, url), activator([url]) as act:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(httpx.post, f"{act.endpoint}/x", content="slow", timeout=10)
            deadline = time.monotonic() + 5
            while not act.in_flight and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not act.drain(url), "a request is in flight: not drained yet"
            with ThreadPoolExecutor(1) as other:  # nothing new goes to a member that drains
                held = other.submit(httpx.post, f"{act.endpoint}/x", content="new", timeout=10)
                assert act.drained(url, timeout=5), "drained once its request is answered"
                assert slow.result().status_code == 200
                time.sleep(0.3)
                assert not held.done() and act.held == 1, "the new request waits for another member"
                act.forget(url)
                assert held.result().status_code == 200
        with httpx.stream("POST", f"{act.endpoint}/stream", timeout=10) as r:
            chunks = [c for c in r.iter_text() if c]
        assert "".join(chunks) == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
        assert act.in_flight == {}


def test_load_is_read_from_the_members_and_the_activator_metrics():
    with (
        member("a", running=3, queued=1) as (_, a),
        member("b", running=2) as (_, b),
        activator([]) as act,
        httpx.Client() as http,
    ):
        load = read_load(http, [a, b, "http://127.0.0.1:9"], act.endpoint)
    assert load == Load(running=5, queued=1, held=0, ready=2, requests=0, unread=1)


@pytest.mark.parametrize("text", ["not metrics {", ""])
def test_a_member_with_unreadable_metrics_is_not_counted(text, httpserver):
    httpserver.expect_request("/metrics").respond_with_data(text)
    with httpx.Client() as http:
        load = read_load(http, [httpserver.url_for("/")])
    assert (load.ready, load.unread) == ((1, 0) if text == "" else (0, 1))


def test_a_client_that_leaves_early_is_not_counted_in_flight_nor_held():
    with member("phi-0", delay=1.0) as (_, url):
        ups = [url]
        with activator(ups) as act:
            with pytest.raises(httpx.TimeoutException):
                httpx.post(f"{act.endpoint}/x", content="q", timeout=0.2)  # leaves before the headers
            deadline = time.monotonic() + 5
            while act.in_flight and time.monotonic() < deadline:
                time.sleep(0.05)
            assert act.in_flight == {}, "the member's answer is closed and not counted"
            ups.clear()  # no member: a held client that leaves is let go
            with pytest.raises(httpx.TimeoutException):
                httpx.post(f"{act.endpoint}/x", content="q", timeout=0.5)
            while act.held and time.monotonic() < deadline + 5:
                time.sleep(0.05)
            assert act.held == 0


def test_bodies_over_the_cap_are_refused_and_health_is_answered_without_waking_the_set():
    with activator([]) as act:
        r = httpx.post(
            f"{act.endpoint}/v1/chat/completions", content=b"x" * (4 * 1024 * 1024 + 1), timeout=10
        )
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        h = httpx.get(f"{act.endpoint}/health", timeout=5)
        assert h.status_code == 200 and h.json() == {"status": "ok", "ready_members": 0}
        assert act.requests == 0 and not act.holds, "neither counts as a request"
