"""runtime.data fetch: URL and address policy at fetch time, pinning, redirects, size cap, retries.

A real HTTP server on 127.0.0.1 plays the data host. Tests that need a *name* use an injected
resolver (no DNS here); the CLI uses socket.getaddrinfo.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runtime import data
from runtime.urlpolicy import URLRefused

ROOT = Path(__file__).resolve().parent.parent
BODY = b"instruction,response\nsay hi,hi\n" * 100


class Server:
    """Routes: path -> list of (status, headers, body); the last entry repeats."""

    def __init__(self):
        self.routes: dict[str, list[tuple[int, dict, bytes]]] = {}
        self.hits: list[tuple[str, str]] = []  # (path, Host header)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                outer.hits.append((self.path, self.headers.get("Host", "")))
                seq = outer.routes.get(path) or [(404, {}, b"not found")]
                status, headers, body = seq.pop(0) if len(seq) > 1 else seq[0]
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers and headers.get("X-No-Length") is None:
                    self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def allow(self) -> list[str]:
        return [f"127.0.0.1:{self.port}"]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def quiet(*a, **k):
    pass


def run_cli(*args: str) -> tuple[int, list[dict], str]:
    p = subprocess.run(
        [sys.executable, "-m", "runtime.data", "fetch", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    logs = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return p.returncode, logs, p.stderr


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("file:///etc/passwd", "only http and https"),
        ("http://localhost:1/x", "this machine"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://user:pw@example.com/data.csv", "credentials"),
        ("http://[::ffff:127.0.0.1]/x", "loopback"),
        ("http://[2002:a9fe:a9fe::1]/x", "169.254.169.254 is a link-local"),  # 6to4
        ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/x", "127.0.0.1 is a loopback"),  # Teredo
    ],
)
def test_hostile_urls_refused_before_any_connection(tmp_path, url, why):
    with pytest.raises(URLRefused, match=why):
        data.fetch([url], tmp_path, logger=quiet)
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_with_reason_and_exit_1(tmp_path):
    rc, logs, _ = run_cli("--dest", str(tmp_path), "http://169.254.169.254/latest/meta-data")
    assert rc == 1
    assert logs[-1]["event"] == "refused" and "link-local" in logs[-1]["error"]
    rc, logs, _ = run_cli("--dest", str(tmp_path), "file:///etc/passwd")
    assert rc == 1 and "only http and https" in logs[-1]["error"]
    rc, _, err = run_cli("--dest", str(tmp_path))  # no URL: usage
    assert rc == 2 and "URL" in err


def test_name_resolving_to_loopback_is_refused_after_resolution(tmp_path, server):
    server.routes["/data.csv"] = [(200, {}, BODY)]
    resolved = []

    def resolve(host, port):
        resolved.append(host)
        return ["127.0.0.1"]

    url = f"http://data.example.com:{server.port}/data.csv"
    with pytest.raises(URLRefused, match=r"data\.example\.com resolves to 127\.0\.0\.1.*loopback"):
        data.fetch([url], tmp_path, resolve=resolve, logger=quiet)
    assert resolved == ["data.example.com"]
    assert server.hits == []  # never connected


def test_every_resolved_address_is_checked(tmp_path):
    """A public-looking first answer does not hide a private second one (rebinding across records)."""
    with pytest.raises(URLRefused, match=r"10\.0\.0\.7 is a private address"):
        data.fetch(
            ["https://mirror.example.org/d.jsonl"],
            tmp_path,
            logger=quiet,
            resolve=lambda h, p: ["93.184.216.34", "10.0.0.7"],
        )


def test_connects_to_the_vetted_address_with_the_name_in_host_header(tmp_path, server):
    server.routes["/d.csv"] = [(200, {}, BODY)]
    calls = []

    def resolve(host, port):
        calls.append((host, port))
        return ["127.0.0.1"]

    [f] = data.fetch(
        [f"http://files.test:{server.port}/d.csv"],
        tmp_path,
        resolve=resolve,
        allow_hosts=[f"files.test:{server.port}"],
        logger=quiet,
    )
    assert calls == [("files.test", server.port)]  # resolved once, by us
    assert server.hits == [("/d.csv", f"files.test:{server.port}")]
    assert f.path.read_bytes() == BODY and f.sha256 == hashlib.sha256(BODY).hexdigest()


def test_allow_host_is_exact_about_the_port(tmp_path, server):
    with pytest.raises(URLRefused, match="loopback"):
        data.fetch([f"{server.base}/d.csv"], tmp_path, allow_hosts=["127.0.0.1:1"], logger=quiet)


def test_allow_host_skips_only_the_host_checks():
    allow = {("localhost", None)}
    assert data.vet_url("http://localhost:8080/d.csv", allow).allowed
    with pytest.raises(URLRefused, match="this machine"):
        data.vet_url("http://localhost:8080/d.csv")
    for url, why in [
        ("http://user:pw@localhost/d.csv", "credentials"),
        ("ftp://localhost/d.csv", "only http and https"),
        ("http://localhost/d .csv", "spaces"),
    ]:
        with pytest.raises(URLRefused, match=why):
            data.vet_url(url, allow)


def test_cli_fetches_from_allowed_local_mirror_and_logs_sha256(tmp_path, server):
    server.routes["/files/train.csv"] = [(200, {}, BODY)]
    server.routes["/other/train.csv"] = [(200, {}, b"x,y\n1,2\n")]
    rc, logs, err = run_cli(
        "--dest",
        str(tmp_path),
        f"{server.base}/files/train.csv?sig=SECRET#frag",
        f"{server.base}/other/train.csv",
        "--allow-host",
        f"127.0.0.1:{server.port}",
    )
    assert rc == 0, err
    fetched = [entry for entry in logs if entry["event"] == "fetched"]
    assert [Path(e["file"]).name for e in fetched] == ["train.csv", "train-1.csv"]
    assert fetched[0]["sha256"] == hashlib.sha256(BODY).hexdigest() and fetched[0]["size"] == len(BODY)
    assert (tmp_path / "train.csv").read_bytes() == BODY
    assert "SECRET" not in json.dumps(logs)  # query strings (pre-signed tokens) are never logged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-1.csv", "train.csv"]


def test_redirects_are_followed_and_each_hop_rechecked(tmp_path, server):
    server.routes["/a"] = [(302, {"Location": "/b/final.jsonl"}, b"")]
    server.routes["/b/final.jsonl"] = [(200, {}, BODY)]
    [f] = data.fetch([f"{server.base}/a"], tmp_path, allow_hosts=server.allow, logger=quiet)
    assert f.path.name == "a" and f.size == len(BODY)

    server.routes["/evil"] = [(302, {"Location": "http://169.254.169.254/latest/meta-data"}, b"")]
    with pytest.raises(URLRefused, match=r"169\.254\.169\.254.*redirected from"):
        data.fetch([f"{server.base}/evil"], tmp_path / "x", allow_hosts=server.allow, logger=quiet)

    server.routes["/loop"] = [(302, {"Location": "/loop"}, b"")]
    with pytest.raises(data.FetchError, match="more than 5 redirects"):
        data.fetch([f"{server.base}/loop"], tmp_path / "y", allow_hosts=server.allow, logger=quiet)


@pytest.mark.parametrize("declared", [True, False])
def test_size_cap_aborts_and_leaves_no_partial_file(tmp_path, server, declared):
    big = b"0123456789" * 20_000  # 200 kB
    headers = {} if declared else {"X-No-Length": "1"}
    server.routes["/big.bin"] = [(200, headers, big)]
    with pytest.raises(data.FetchError, match="limit"):
        data.fetch(
            [f"{server.base}/big.bin"], tmp_path, max_bytes=50_000, allow_hosts=server.allow, logger=quiet
        )
    assert list(tmp_path.iterdir()) == []


def test_retries_5xx_then_succeeds(tmp_path, server):
    server.routes["/flaky.csv"] = [(503, {}, b"busy"), (502, {}, b"busy"), (200, {}, BODY)]
    events = []
    [f] = data.fetch(
        [f"{server.base}/flaky.csv"],
        tmp_path,
        retries=3,
        backoff=0.01,
        allow_hosts=server.allow,
        logger=lambda ev, **kw: events.append(ev),
    )
    assert f.path.read_bytes() == BODY
    assert len(server.hits) == 3 and events.count("retry") == 2


def test_4xx_is_not_retried_and_5xx_gives_up(tmp_path, server):
    server.routes["/gone.csv"] = [(404, {}, b"no")]
    with pytest.raises(data.FetchError, match="HTTP 404"):
        data.fetch(
            [f"{server.base}/gone.csv"], tmp_path, backoff=0.01, allow_hosts=server.allow, logger=quiet
        )
    assert len(server.hits) == 1
    server.routes["/down.csv"] = [(500, {}, b"err")]
    with pytest.raises(data.FetchError, match=r"HTTP 500.*gave up after 3 attempts"):
        data.fetch(
            [f"{server.base}/down.csv"],
            tmp_path,
            retries=2,
            backoff=0.01,
            allow_hosts=server.allow,
            logger=quiet,
        )
    assert list(tmp_path.iterdir()) == []


def test_file_names():
    taken: set[str] = set()
    assert data.file_name("https://h/x/data.parquet?sv=1&sig=2#f", taken) == "data.parquet"
    assert data.file_name("https://h/y/data.parquet", taken) == "data-1.parquet"
    assert data.file_name("https://h/", taken) == "data"
    assert data.file_name("https://h/a/..%2F..%2Fetc%2Fpasswd", taken) == "passwd"
    assert data.file_name("https://h/.hidden", taken) == "hidden"


def test_https_pins_the_vetted_address_and_verifies_the_name(tmp_path):
    """TLS goes to the resolved address, with SNI and certificate checks against the host name."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("files.test")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: sni.append(name)
    srv = Server()
    srv.httpd.handle_error = lambda *a: None  # the refused handshake below is expected
    srv.httpd.socket = server_ctx.wrap_socket(srv.httpd.socket, server_side=True)
    srv.routes["/d.jsonl"] = [(200, {}, BODY)]
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    try:
        [f] = data.fetch(
            [f"https://files.test:{srv.port}/d.jsonl"],
            tmp_path,
            resolve=lambda h, p: ["127.0.0.1"],
            allow_hosts=[f"files.test:{srv.port}"],
            ssl_context=client_ctx,
            logger=quiet,
        )
        assert f.path.read_bytes() == BODY and sni == ["files.test"]
        assert srv.hits == [("/d.jsonl", f"files.test:{srv.port}")]
        with pytest.raises(data.FetchError, match=r"TLS with other\.test failed"):
            data.fetch(
                [f"https://other.test:{srv.port}/d.jsonl"],
                tmp_path / "x",
                resolve=lambda h, p: ["127.0.0.1"],
                allow_hosts=[f"other.test:{srv.port}"],
                ssl_context=client_ctx,
                logger=quiet,
            )
    finally:
        srv.close()
