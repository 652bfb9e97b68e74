"""A real OCI registry for tests: Debian's `docker-registry` bound to 127.0.0.1 on a free port.

Each registry gets its own config file and storage folder (never the packaged config, which
listens on all interfaces), optional htpasswd basic auth (bcrypt cost 4, so each request stays
cheap), and is ready once `GET /v2/` answers. Use `running_registry(...)` as a context manager,
or the session's `registry` fixture (tests/conftest.py).
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.net import free_port

BINARY = "/usr/bin/docker-registry"
USER = "kaito"
PASSWORD = "s3cret-pw"


@dataclass
class Registry:
    host: str  # "127.0.0.1:PORT"
    root: Path
    username: str | None = None
    password: str | None = None

    def docker_config(
        self, path: Path | None = None, *, form: str = "auth", password: str | None = None
    ) -> Path:
        """Write a dockerconfigjson for this registry; form "auth" (base64) or "userpass"."""
        path = path or self.root / "docker-config.json"
        pw = self.password if password is None else password
        if form == "auth":
            entry = {"auth": base64.b64encode(f"{self.username}:{pw}".encode()).decode()}
        else:
            entry = {"username": self.username, "password": pw}
        path.write_text(json.dumps({"auths": {self.host: entry}}))
        return path


def available() -> bool:
    return shutil.which(BINARY) is not None or Path(BINARY).exists()


@contextlib.contextmanager
def running_registry(root: Path, *, auth: bool = True, timeout: float = 10.0) -> Iterator[Registry]:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [
        "version: 0.1",
        "log: {level: error}",
        "storage:",
        f"  filesystem: {{rootdirectory: {root / 'data'}}}",
        "  delete: {enabled: true}",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "  secret: test-only-secret",
    ]
    if auth:
        import bcrypt

        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        (root / "htpasswd").write_text(f"{USER}:{hashed}\n")
        lines += ["auth:", f"  htpasswd: {{realm: test-realm, path: {root / 'htpasswd'}}}"]
    config = root / "registry.yml"
    config.write_text("\n".join(lines) + "\n")
    log = open(root / "registry.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
                break
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    break
                raise
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"docker-registry did not start: {(root / 'registry.log').read_text()}"
                    ) from None
                time.sleep(0.05)
        yield Registry(f"127.0.0.1:{port}", root, USER if auth else None, PASSWORD if auth else None)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def auth_registry_session(tmp_path_factory) -> Iterator[Registry]:
    """The body of the `registry` fixture: a registry with basic auth (user `kaito`), skipped without the binary."""
    if not available():
        pytest.skip(f"{BINARY} is not installed (apt-get install docker-registry)")
    with running_registry(tmp_path_factory.mktemp("registry"), auth=True) as reg:
        yield reg
