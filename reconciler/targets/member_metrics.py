"""What an InferenceSet's members and activator say on /metrics, as the autoscaler's Load.

SGLang and our CPU server export the same gauges (`sglang:num_running_reqs`,
`sglang:num_queue_reqs`); the activator exports the requests it holds. Parsed with
prometheus_client's own text parser.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..autoscale import Load
from .activator import HELD, REQUESTS

RUNNING, QUEUED = "sglang:num_running_reqs", "sglang:num_queue_reqs"
TIMEOUT = 3.0


def gauges(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """The sum over labels of each named gauge (a server with several engines reports one each)."""
    out = dict.fromkeys(names, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in out:
                out[sample.name] += sample.value
    return out


def read_load(http: httpx.Client, members: list[str], activator: str = "") -> Load:
    """Ask each member's /metrics (URLs of ready members) and the activator's. One that does not
    answer is not counted ready, and counted `unread`: the set is not scaled down on that figure."""
    running = queued = held = requests = 0.0
    ready = unread = 0
    for url in members:
        try:
            r = http.get(url.rstrip("/") + "/metrics", timeout=TIMEOUT)
            r.raise_for_status()
            g = gauges(r.text, (RUNNING, QUEUED))
        except (httpx.HTTPError, ValueError):
            unread += 1
            continue
        running, queued, ready = running + g[RUNNING], queued + g[QUEUED], ready + 1
    if activator:
        try:
            r = http.get(activator.rstrip("/") + "/metrics", timeout=TIMEOUT)
            r.raise_for_status()
            g = gauges(r.text, (HELD, REQUESTS))
            held, requests = g[HELD], g[REQUESTS]
        except (httpx.HTTPError, ValueError):
            unread += 1
    return Load(running=running, queued=queued, held=held, ready=ready, requests=requests, unread=unread)
