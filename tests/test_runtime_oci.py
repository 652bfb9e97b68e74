"""runtime.oci / runtime.adapters against a real docker-registry (basic auth) on 127.0.0.1."""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

if importlib.util.find_spec("oras") is None:
    pytest.skip("needs oras (the ML extra)", allow_module_level=True)

from support.registry import PASSWORD

from runtime import oci

ROOT = Path(__file__).resolve().parent.parent


def make_adapter(folder: Path, size: int = 200_000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(os.urandom(size))
    (folder / "tokenizer_config.json").write_text("{}")
    (folder / "progress.json").write_text("{}")
    (folder / "fine_tuning_completed.txt").write_text("done")
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"x" * 1000)
    return folder


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def run_cli(*args: str) -> tuple[int, str, str]:
    p = subprocess.run(
        [sys.executable, "-m", "runtime.adapters", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    return p.returncode, p.stdout, p.stderr


def oras_client(reg):
    import oras.client

    c = oras.client.OrasClient(hostname=reg.host, insecure=True, auth_backend="basic")
    c.auth.set_basic_auth(reg.username, reg.password)
    return c


def test_push_writes_kaitos_layout_and_pull_round_trips(registry, tmp_path):
    src = make_adapter(tmp_path / "out")
    cfg = registry.docker_config()
    image = f"{registry.host}/adapters/phi-3-sql:v1"
    res = oci.push_adapter(image, src, "phi-3-mini-4k-instruct", [cfg])
    assert res.digest.startswith("sha256:")
    assert res.files == ["adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json"]

    client = oci.client_for(image, [cfg])
    manifest, digest = oci.get_manifest(client)
    assert digest == res.digest
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["annotations"] == {"sh.kaito.model.name": "phi-3-mini-4k-instruct"}
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    blob = client.do_request(client.url(f"blobs/{layer['digest']}")).content
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        names = tar.getnames()
    assert names == [
        "data",
        "data/adapter_config.json",
        "data/adapter_model.safetensors",
        "data/tokenizer_config.json",
    ]
    config = json.loads(client.do_request(client.url(f"blobs/{manifest['config']['digest']}")).content)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()]

    dest = tmp_path / "pulled"
    pulled = oci.pull(image, dest, [cfg], expect="adapter")
    assert pulled.is_adapter and pulled.digest == res.digest
    assert sorted(p.name for p in dest.iterdir()) == sorted(res.files)
    for name in res.files:
        assert sha(dest / name) == sha(src / name)


def test_cli_push_pull_and_errors(registry, tmp_path):
    src = make_adapter(tmp_path / "out", size=50_000)
    good = registry.docker_config(tmp_path / "good.json", form="userpass")
    bad = registry.docker_config(tmp_path / "bad.json", password="wrong-password-123")
    image = f"{registry.host}/adapters/cli:v2"
    rc, out, err = run_cli(
        "push", "--image", image, "--src", str(src), "--model-name", "tiny", "--docker-config", str(good)
    )
    assert rc == 0, out + err
    pushed = json.loads(out.splitlines()[-1])
    assert pushed["event"] == "pushed" and pushed["digest"].startswith("sha256:")

    rc, out, err = run_cli(
        "pull", "--image", image, "--dest", str(tmp_path / "d"), "--docker-config", str(good)
    )
    assert rc == 0, out + err
    assert sha(tmp_path / "d" / "adapter_model.safetensors") == sha(src / "adapter_model.safetensors")

    rc, out, err = run_cli(
        "pull", "--image", image, "--dest", str(tmp_path / "e"), "--docker-config", str(bad)
    )
    last = json.loads(out.splitlines()[-1])
    assert rc == 1 and last["kind"] == "Unauthorized" and "refused the credentials" in last["error"]
    assert "wrong-password-123" not in out + err and PASSWORD not in out + err

    rc, out, _ = run_cli("pull", "--image", image, "--dest", str(tmp_path / "f"))
    assert rc == 1 and "--docker-config" in json.loads(out.splitlines()[-1])["error"]

    rc, out, _ = run_cli(
        "pull",
        "--image",
        f"{registry.host}/adapters/cli:nope",
        "--dest",
        str(tmp_path / "g"),
        "--docker-config",
        str(good),
    )
    last = json.loads(out.splitlines()[-1])
    assert rc == 1 and last["kind"] == "ImageNotFound" and "not found" in last["error"]
    assert not (tmp_path / "g").exists() or list((tmp_path / "g").iterdir()) == []

    rc, _, err = run_cli("pull", "--dest", str(tmp_path))
    assert rc == 2 and "--image" in err


def test_plain_oras_artifact_pulls(registry, tmp_path, monkeypatch):
    src = make_adapter(tmp_path / "lora-a", size=30_000)
    monkeypatch.chdir(tmp_path)
    image = f"{registry.host}/adapters/oras-files:v1"
    resp = oras_client(registry).push(
        target=image,
        files=[
            "lora-a/adapter_config.json:application/vnd.example.lora.config.v1+json",
            "lora-a/adapter_model.safetensors:application/vnd.example.lora.weights.v1",
        ],
        quiet=True,
    )
    assert resp.status_code == 201
    dest = tmp_path / "dest"
    res = oci.pull(image, dest, [registry.docker_config()], expect="adapter")
    assert res.files == ["adapter_config.json", "adapter_model.safetensors"]
    assert sha(dest / "adapter_model.safetensors") == sha(src / "adapter_model.safetensors")


def test_not_an_adapter(registry, tmp_path, monkeypatch):
    cfg = registry.docker_config()
    (tmp_path / "readme.txt").write_text("hello")
    monkeypatch.chdir(tmp_path)
    image = f"{registry.host}/data/readme:v1"
    oras_client(registry).push(target=image, files=["readme.txt"], quiet=True)
    with pytest.raises(oci.NotAnAdapter, match=r"no adapter_config\.json"):
        oci.pull(image, tmp_path / "a", [cfg], expect="adapter")
    assert list((tmp_path / "a").iterdir()) == []  # nothing moved in on failure
    res = oci.pull(image, tmp_path / "b", [cfg])  # data images pull fine
    assert res.files == ["readme.txt"] and not res.is_adapter
    (tmp_path / "empty").mkdir()
    with pytest.raises(oci.NotAnAdapter, match=r"adapter_config\.json"):
        oci.push_adapter(f"{registry.host}/x/y:z", tmp_path / "empty", "m", [cfg])


def _tar_gz(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    i.linkname = target
    return i


def test_tar_with_dotdot_is_refused_on_pull(registry, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "evil.tar.gz").write_bytes(
        _tar_gz([(_file("data/adapter_config.json"), b"{}"), (_file("../evil"), b"pwned")])
    )
    monkeypatch.chdir(work)
    image = f"{registry.host}/adapters/evil:v1"
    oras_client(registry).push(
        target=image, files=["evil.tar.gz:application/vnd.oci.image.layer.v1.tar+gzip"], quiet=True
    )
    dest = tmp_path / "pull" / "dest"
    with pytest.raises(oci.UnsafeArchive, match=r"\.\."):
        oci.pull(image, dest, [registry.docker_config()])
    assert not list(tmp_path.rglob("evil")) and list(dest.iterdir()) == []


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([(_file("/etc/cron.d/x"), b"x")], "absolute path"),
        ([(_link("data/l", "../../../etc"), None)], "links outside"),
        ([(_link("data/l", "/etc/passwd"), None)], "absolute path"),
        ([(_link("data/h", "/etc/passwd", hard=True), None)], "absolute path"),
        ([(_link("data", "/tmp"), None), (_file("data/x"), b"x")], "absolute path"),
        ([(_file("data/big1"), b"a" * 600), (_file("data/big2"), b"b" * 600)], "more than 1000 bytes"),
        # each hard link is written out as a copy: it counts against the limit like a file
        (
            [(_file("data/a"), b"a" * 600), (_link("data/h", "data/a", hard=True), None)],
            "more than 1000 bytes",
        ),
    ],
)
def test_safe_extract_refuses(tmp_path, entries, why):
    archive = tmp_path / "layer.tar.gz"
    archive.write_bytes(_tar_gz(entries))
    with pytest.raises(oci.UnsafeArchive, match=why):
        oci.safe_extract(archive, tmp_path / "dest", max_bytes=1000)


def test_safe_extract_keeps_inside_links(tmp_path):
    archive = tmp_path / "layer.tar.gz"
    archive.write_bytes(_tar_gz([(_file("data/a.json"), b"{}"), (_link("data/b.json", "a.json"), None)]))
    files = oci.safe_extract(archive, tmp_path / "dest")
    assert files == ["data/a.json"]
    assert (tmp_path / "dest" / "data" / "b.json").read_text() == "{}"


def test_layer_digest_is_verified(tmp_path):
    """A registry double that serves a blob whose bytes do not match the manifest's digest."""
    real = _tar_gz([(_file("data/adapter_config.json"), b"{}")])
    served = _tar_gz([(_file("data/adapter_config.json"), b'{"evil": 1}')])
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": oci.CONFIG_MEDIA_TYPE, "digest": "sha256:" + "0" * 64, "size": 2},
            "layers": [
                {
                    "mediaType": oci.LAYER_MEDIA_TYPE,
                    "digest": "sha256:" + hashlib.sha256(real).hexdigest(),
                    "size": len(served),
                }
            ],
        }
    ).encode()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            body = b"{}" if self.path == "/v2/" else manifest if "/manifests/" in self.path else served
            self.send_response(200)
            self.send_header(
                "Content-Type",
                oci.MANIFEST_MEDIA_TYPE if "/manifests/" in self.path else "application/octet-stream",
            )
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True).start()
    try:
        with pytest.raises(oci.OCIError, match="digest mismatch"):
            oci.pull(f"127.0.0.1:{srv.server_address[1]}/a/b:c", tmp_path / "d")
        assert list((tmp_path / "d").iterdir()) == []
    finally:
        srv.shutdown()
        srv.server_close()


def test_registry_credentials(tmp_path):
    auth = base64.b64encode(b"alice:pa:ss").decode()
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "auths": {
                    "https://myreg.azurecr.io/v2/": {"auth": auth},
                    "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
                    "localhost:5000": {"username": "carol", "password": "pw2"},
                }
            }
        )
    )
    c = oci.registry_credentials("myreg.azurecr.io", [cfg])
    assert (c.username, c.password) == ("alice", "pa:ss") and "pa:ss" not in repr(c)
    assert oci.registry_credentials("docker.io", [cfg]).username == "bob"
    assert oci.registry_credentials("127.0.0.1:5000", [cfg]).username == "carol"
    assert oci.registry_credentials("ghcr.io", [cfg]) is None
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"auths": {"ghcr.io": {"auth": "bm9jb2xvbg=="}}}))  # "nocolon"
    with pytest.raises(oci.OCIError, match="not base64 of user:password") as e:
        oci.registry_credentials("ghcr.io", [bad])
    assert "nocolon" not in str(e.value)
    with pytest.raises(oci.OCIError, match="does not exist"):
        oci.registry_credentials("ghcr.io", [tmp_path / "missing.json"])


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("myreg.azurecr.io/adapters/phi-3:1.0", ("myreg.azurecr.io", "adapters/phi-3", "1.0", None)),
        ("127.0.0.1:5000/a/b", ("127.0.0.1:5000", "a/b", "latest", None)),
        ("ubuntu", ("docker.io", "library/ubuntu", "latest", None)),
        ("localhost/x@sha256:" + "a" * 64, ("localhost", "x", None, "sha256:" + "a" * 64)),
    ],
)
def test_parse_reference(ref, expected):
    r = oci.parse_reference(ref)
    assert (r.registry, r.repository, r.tag, r.digest) == expected


@pytest.mark.parametrize("ref", ["https://x.io/a:b", "x.io/A/B:c", "x.io/a:b c", "x.io/a@sha256:zz"])
def test_parse_reference_rejects(ref):
    with pytest.raises(oci.OCIError):
        oci.parse_reference(ref)
