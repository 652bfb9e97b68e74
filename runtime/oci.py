"""Push and pull adapter images in Kaito's layout, with oras-py and dockerconfigjson credentials.

Kaito's adapter image (`pkg/workspace/image/README.md`, `pusher.sh`): one tar+gzip layer holding
`data/adapter_config.json` and `data/adapter_model.safetensors`, an OCI image config, and the
manifest annotation `sh.kaito.model.name: <preset>`. Any OCI image with `/data/...` works too.

Pull understands three shapes: tar layers (Kaito's, `docker build` of `FROM scratch` images, ORAS
directory layers) are extracted safely and what is under `data/` moves up into the destination;
plain ORAS artifacts (one layer per file, named by `org.opencontainers.image.title`; oras labels
plain files `...layer.v1.tar` too, so a titled layer that is not a tar archive is a file) are
written as files. Every layer's sha256 is checked while it streams.

Credentials come only from the docker config files given (never `~/.docker`, never written to
disk or logs). oras-py's `Registry` does the HTTP; its request method is replaced so that basic
credentials are sent up front, bearer-token registries (ghcr.io, ACR, Docker Hub) get a token
for each scope they ask for, and failures come back fast instead of after oras-py's minutes of
retries.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import oras.auth
import oras.container
import oras.defaults
import oras.provider
import oras.utils
import requests

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MODEL_NAME_ANNOTATION = "sh.kaito.model.name"
TITLE_ANNOTATION = "org.opencontainers.image.title"
LAYER_TITLE = "layer.tar.gz"  # what Kaito's pusher.sh names its layer
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")

DEFAULT_MAX_BYTES = 64 * 1024**3  # uncompressed; tuning input images can be large
MAX_MEMBERS = 100_000
EXTRA_FILE_MAX = 16 * 1024**2
# Files an output folder holds that are not part of the adapter.
NOT_PUSHED = {"progress.json", "fine_tuning_completed.txt", "training_args.bin", "trainer_state.json"}
EXTRA_SUFFIXES = {".json", ".md", ".txt", ".jinja", ".model", ".yaml", ".yml"}

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


class OCIError(RuntimeError):
    """A push or pull failed; the message says why."""


class ImageNotFound(OCIError):
    pass


class Unauthorized(OCIError):
    pass


class NotAnAdapter(OCIError):
    pass


class UnsafeArchive(OCIError):
    pass


# --------------------------------------------------------------------------------------
# References and credentials
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    registry: str  # as written, e.g. "myregistry.azurecr.io", "127.0.0.1:5000", "docker.io"
    repository: str  # e.g. "adapters/phi-3-sql"
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        return "registry-1.docker.io" if self.registry in DOCKER_HUB_ALIASES else self.registry

    @property
    def reference(self) -> str:
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_reference(ref: str) -> ImageRef:
    """`registry/repo[:tag][@sha256:...]`; no registry means Docker Hub (`library/` for one name)."""
    if not isinstance(ref, str) or not ref.strip() or any(c.isspace() for c in ref):
        raise OCIError(f"image reference {ref!r} is empty or contains spaces")
    if "://" in ref:
        raise OCIError(f"image reference {ref!r} must not have a scheme (write host/repository:tag)")
    rest, digest = ref, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise OCIError(f"image reference {ref!r}: digest must be sha256:<64 hex digits>")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise OCIError(f"image reference {ref!r}: {tag!r} is not a valid tag")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, repo = first.lower(), remainder
    else:
        registry, repo = DOCKER_HUB, rest
        if "/" not in repo:
            repo = f"library/{repo}"
    if registry in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
    if not _REPO_RE.match(repo):
        raise OCIError(f"image reference {ref!r}: {repo!r} is not a valid repository name (lowercase)")
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry, repo, tag, digest)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


def _registry_key(key: str) -> str:
    k = key.strip().lower()
    for prefix in ("https://", "http://"):
        if k.startswith(prefix):
            k = k[len(prefix) :]
    k = k.split("/", 1)[0]
    if k in DOCKER_HUB_ALIASES:
        return DOCKER_HUB
    return k


def _hosts_equal(a: str, b: str) -> bool:
    def norm(h: str) -> str:
        return h.replace("localhost", "127.0.0.1")

    return norm(a) == norm(b)


def registry_credentials(registry: str, docker_configs: Iterable[str | os.PathLike]) -> Credentials | None:
    """The username/password for `registry` from the first docker config that has an entry for it."""
    want = _registry_key(registry)
    for cfg in docker_configs:
        path = Path(cfg)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise OCIError(f"docker config {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise OCIError(f"docker config {path} is not readable JSON ({type(e).__name__})") from None
        auths = data.get("auths") if isinstance(data, dict) else None
        if not isinstance(auths, dict):
            raise OCIError(f"docker config {path} has no 'auths' object")
        for key, entry in auths.items():
            if not _hosts_equal(_registry_key(key), want) or not isinstance(entry, dict):
                continue
            user, pw = entry.get("username"), entry.get("password")
            if entry.get("auth"):
                try:
                    decoded = base64.b64decode(str(entry["auth"]), validate=False).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    raise OCIError(
                        f"docker config {path}: the 'auth' for {key} is not base64 of user:password"
                    ) from None
                if ":" not in decoded:
                    raise OCIError(
                        f"docker config {path}: the 'auth' for {key} is not base64 of user:password"
                    )
                user, pw = decoded.split(":", 1)
            if user and pw is not None:
                return Credentials(str(user), str(pw))
            raise OCIError(
                f"docker config {path}: the entry for {key} has neither 'auth' nor username/password"
            )
    return None


def is_local_registry(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in ("127.0.0.1", "localhost", "[::1]", "::1")


# --------------------------------------------------------------------------------------
# The client: oras-py's Registry with a stricter request method
# --------------------------------------------------------------------------------------


class RegistryClient(oras.provider.Registry):
    """oras-py `Registry` for one image, with our credentials, timeouts and retry policy."""

    def __init__(
        self,
        ref: ImageRef,
        credentials: Credentials | None = None,
        insecure: bool | None = None,
        timeout: float = 60.0,
        attempts: int = 3,
        backoff: float = 0.5,
    ):
        self.ref = ref
        insecure = is_local_registry(ref.api_host) if insecure is None else insecure
        self._timeout = (min(timeout, 15.0), timeout)
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._credentials = credentials
        backend = self._choose_backend(ref.api_host, insecure)
        super().__init__(hostname=ref.api_host, insecure=insecure, auth_backend=backend)
        self.auth._auth_config = {"auths": {}}  # never read ~/.docker/config.json
        if credentials is not None:
            self.auth.set_basic_auth(credentials.username, credentials.password)
        self.backend = backend
        c = oras.container.Container("x", registry=ref.api_host)
        repo = PurePosixPath(ref.repository)
        c.namespace = str(repo.parent) if str(repo.parent) != "." else None
        c.repository = repo.name
        c.tag = ref.tag or "latest"
        c.digest = ref.digest
        self.container = c

    def _choose_backend(self, host: str, insecure: bool) -> str:
        """Probe `GET /v2/`: a Bearer challenge means token auth, anything else basic."""
        url = f"{'http' if insecure else 'https'}://{host}/v2/"
        last: Exception | None = None
        for attempt in range(self._attempts):
            try:
                with requests.get(url, timeout=self._timeout, allow_redirects=False) as r:
                    challenge = r.headers.get("WWW-Authenticate", "")
                    return "token" if challenge.lower().startswith("bearer") else "basic"
            except requests.exceptions.SSLError as e:
                raise OCIError(
                    f"TLS to registry {host} failed ({e.__class__.__name__}); for a plain-http "
                    "registry pass --insecure"
                ) from None
            except requests.RequestException as e:
                last = e
                time.sleep(self._backoff * (2**attempt))
        raise OCIError(f"cannot reach registry {host}: {type(last).__name__}") from None

    def _auth_header(self) -> dict:
        if isinstance(self.auth, oras.auth.TokenAuth):
            return self.auth.get_auth_header()
        if self._credentials is not None or getattr(self.auth, "_basic_auth", None):
            return self.auth.get_auth_header()
        return {}

    def _send(self, method, url, data, headers, json_body, stream) -> requests.Response:
        h = dict(headers or {})
        h.update(self._auth_header())
        kw = {
            "data": data,
            "json": json_body,
            "stream": stream,
            "verify": self._tls_verify,
            "timeout": self._timeout,
        }
        resp = self.session.request(method, url, headers=h, **kw)
        if resp.status_code in (401, 403) and (
            isinstance(self.auth, oras.auth.TokenAuth) or getattr(self.auth, "_basic_auth", None)
        ):
            h2, changed = self.auth.authenticate_request(resp, h, refresh=True)
            if changed:
                resp.close()
                resp = self.session.request(method, url, headers=h2, **kw)
        return resp

    def do_request(self, url, method="GET", data=None, headers=None, json=None, stream=False):  # type: ignore[override]
        last: Exception | None = None
        for attempt in range(self._attempts):
            try:
                resp = self._send(method, url, data, headers, json, stream)
            except requests.exceptions.SSLError as e:
                raise OCIError(
                    f"TLS to registry {self.ref.api_host} failed ({e.__class__.__name__})"
                ) from None
            except (requests.ConnectionError, requests.Timeout) as e:
                last = e
            else:
                if resp.status_code < 500 or attempt == self._attempts - 1:
                    return resp
                resp.close()
                last = None
            time.sleep(self._backoff * (2**attempt))
        raise OCIError(f"cannot reach registry {self.ref.api_host}: {type(last).__name__}")

    # -- helpers -----------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self.prefix}://{self.ref.api_host}/v2/{self.ref.repository}/{path}"

    def raise_for(self, resp: requests.Response, what: str) -> None:
        if resp.status_code < 300:
            return
        detail = _registry_errors(resp)
        if resp.status_code in (401, 403):
            hint = (
                "the registry refused the credentials"
                if self._credentials is not None
                else "the registry needs credentials; pass --docker-config with an entry for it"
            )
            raise Unauthorized(f"{what} {self.ref}: unauthorized (HTTP {resp.status_code}): {hint}{detail}")
        if resp.status_code == 404:
            raise ImageNotFound(f"{what} {self.ref}: image not found (HTTP 404){detail}")
        raise OCIError(f"{what} {self.ref}: HTTP {resp.status_code}{detail}")


def _registry_errors(resp: requests.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
        msgs = [f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors if isinstance(e, dict)]
        return f" ({'; '.join(m for m in msgs if m)})" if msgs else ""
    except Exception:
        return ""


def client_for(
    image: str | ImageRef, docker_configs: Sequence[str | os.PathLike] = (), insecure: bool | None = None
) -> RegistryClient:
    ref = parse_reference(image) if isinstance(image, str) else image
    creds = registry_credentials(ref.registry, docker_configs) if docker_configs else None
    return RegistryClient(ref, creds, insecure)


# --------------------------------------------------------------------------------------
# Push
# --------------------------------------------------------------------------------------


@dataclass
class PushResult:
    image: str
    digest: str  # manifest digest
    size: int  # compressed layer bytes
    files: list[str]


def adapter_files(src: Path) -> list[Path]:
    """The files of an adapter folder that go into the image: the adapter plus small extras."""
    src = Path(src)
    if not (src / ADAPTER_CONFIG).is_file():
        raise NotAnAdapter(f"{src} is not an adapter: it has no {ADAPTER_CONFIG}")
    weights = [w for w in ADAPTER_WEIGHTS if (src / w).is_file()]
    if not weights:
        raise NotAnAdapter(f"{src} is not an adapter: it has no adapter_model.safetensors")
    chosen = [src / ADAPTER_CONFIG, *(src / w for w in weights)]
    for p in sorted(src.iterdir()):
        if p in chosen or p.name.startswith(".") or p.name in NOT_PUSHED or p.is_symlink() or not p.is_file():
            continue
        if p.suffix.lower() in EXTRA_SUFFIXES and p.stat().st_size <= EXTRA_FILE_MAX:
            chosen.append(p)
    return chosen


def build_layer(files: Sequence[Path], out: Path) -> tuple[str, int, str]:
    """Write a reproducible tar+gzip with `data/<name>` entries; returns (digest, size, diff_id)."""
    raw = hashlib.sha256()

    class _Hashing(io.RawIOBase):
        def __init__(self, inner):
            self.inner = inner

        def writable(self):
            return True

        def write(self, b):
            raw.update(b)
            return self.inner.write(b)

    with open(out, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
        sink = _Hashing(gz)
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            d = tarfile.TarInfo("data")
            d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(d)
            for p in files:
                info = tarfile.TarInfo(f"data/{p.name}")
                info.size, info.mode, info.mtime = p.stat().st_size, 0o644, 0
                with open(p, "rb") as fh:
                    tar.addfile(info, fh)
    digest = "sha256:" + oras.utils.get_file_hash(str(out))
    return digest, out.stat().st_size, "sha256:" + raw.hexdigest()


def _upload_blob(
    client: RegistryClient, data_path: Path | None, content: bytes | None, digest: str, size: int
):
    head = client.do_request(client.url(f"blobs/{digest}"), "HEAD")
    if head.status_code == 200:
        return
    if head.status_code in (401, 403):
        client.raise_for(head, "push to")
    start = client.do_request(
        client.url("blobs/uploads/"),
        "POST",
        headers={"Content-Type": "application/octet-stream", "Content-Length": "0"},
    )
    if start.status_code != 202:
        client.raise_for(start, "push to")
        raise OCIError(
            f"push to {client.ref}: the registry did not start an upload (HTTP {start.status_code})"
        )
    location = client._get_location(start, client.container)
    if not location:
        raise OCIError(f"push to {client.ref}: the registry gave no upload location")
    body = content if content is not None else Path(data_path).read_bytes()  # type: ignore[arg-type]
    put = client.do_request(
        oras.utils.append_url_params(location, {"digest": digest}),
        "PUT",
        data=body,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
    )
    if put.status_code not in (201, 202, 204):
        client.raise_for(put, "push to")
        raise OCIError(f"push to {client.ref}: blob upload answered HTTP {put.status_code}")


def push_adapter(
    image: str,
    src: str | os.PathLike,
    model_name: str,
    docker_configs: Sequence[str | os.PathLike] = (),
    insecure: bool | None = None,
) -> PushResult:
    """Push the adapter in `src` as Kaito's adapter image; returns the manifest digest."""
    src = Path(src)
    files = adapter_files(src)
    client = client_for(image, docker_configs, insecure)
    with tempfile.TemporaryDirectory(prefix="kaito-push-") as tmp:
        layer_path = Path(tmp) / "layer.tar.gz"
        digest, size, diff_id = build_layer(files, layer_path)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {MODEL_NAME_ANNOTATION: model_name}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        _upload_blob(client, layer_path, None, digest, size)
        _upload_blob(client, None, config_bytes, config_digest, len(config_bytes))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config_bytes)},
        "layers": [
            {
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": digest,
                "size": size,
                "annotations": {TITLE_ANNOTATION: LAYER_TITLE},
            }
        ],
        "annotations": {MODEL_NAME_ANNOTATION: model_name},
    }
    body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest = "sha256:" + hashlib.sha256(body).hexdigest()
    resp = client.do_request(
        client.url(f"manifests/{client.ref.tag or manifest_digest}"),
        "PUT",
        data=body,
        headers={"Content-Type": MANIFEST_MEDIA_TYPE},
    )
    if resp.status_code not in (200, 201):
        client.raise_for(resp, "push to")
        raise OCIError(f"push to {client.ref}: manifest upload answered HTTP {resp.status_code}")
    return PushResult(str(client.ref), manifest_digest, size, [p.name for p in files])


# --------------------------------------------------------------------------------------
# Pull
# --------------------------------------------------------------------------------------


@dataclass
class PullResult:
    image: str
    digest: str
    files: list[str]  # relative to the destination
    bytes: int
    is_adapter: bool
    annotations: dict = field(default_factory=dict)


ACCEPT = ", ".join([MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE, DOCKER_MANIFEST, DOCKER_LIST])


def get_manifest(client: RegistryClient, reference: str | None = None) -> tuple[dict, str]:
    """(manifest, digest) for the image; an index resolves to its linux/amd64 (or first) manifest."""
    reference = reference or client.ref.reference
    for _ in range(2):
        resp = client.do_request(client.url(f"manifests/{reference}"), "GET", headers={"Accept": ACCEPT})
        client.raise_for(resp, "pull")
        body = resp.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise OCIError(f"pull {client.ref}: manifest digest {digest} does not match {reference}")
        try:
            manifest = json.loads(body)
        except json.JSONDecodeError:
            raise OCIError(f"pull {client.ref}: the registry returned a manifest that is not JSON") from None
        media = manifest.get("mediaType") or resp.headers.get("Content-Type", "")
        if media in (INDEX_MEDIA_TYPE, DOCKER_LIST) or "manifests" in manifest:
            entries = manifest.get("manifests") or []
            if not entries:
                raise OCIError(f"pull {client.ref}: the image index lists no manifests")
            best = next(
                (
                    m
                    for m in entries
                    if (m.get("platform") or {}).get("architecture") == "amd64"
                    and (m.get("platform") or {}).get("os") == "linux"
                ),
                entries[0],
            )
            reference = best["digest"]
            continue
        return manifest, digest
    raise OCIError(f"pull {client.ref}: nested image indexes are not supported")


def _download(client: RegistryClient, desc: dict, out: Path, max_bytes: int) -> int:
    digest, size = desc.get("digest", ""), int(desc.get("size", -1))
    if not _DIGEST_RE.match(str(digest)):
        raise OCIError(f"pull {client.ref}: layer digest {digest!r} is not a sha256 digest")
    if size > max_bytes:
        raise OCIError(
            f"pull {client.ref}: layer {digest[:19]} is {size} bytes, over the {max_bytes}-byte limit"
        )
    resp = client.do_request(client.url(f"blobs/{digest}"), "GET", stream=True)
    with resp:
        client.raise_for(resp, "pull")
        h = hashlib.sha256()
        n = 0
        with open(out, "wb") as f:
            for chunk in resp.iter_content(1 << 20):
                n += len(chunk)
                if n > max_bytes or (size >= 0 and n > size):
                    raise OCIError(f"pull {client.ref}: layer {digest[:19]} is larger than the manifest says")
                h.update(chunk)
                f.write(chunk)
    got = "sha256:" + h.hexdigest()
    if got != digest:
        raise OCIError(f"pull {client.ref}: layer digest mismatch (manifest {digest}, downloaded {got})")
    if size >= 0 and n != size:
        raise OCIError(f"pull {client.ref}: layer {digest[:19]} has {n} bytes, the manifest says {size}")
    return n


def _is_tar(media_type: str) -> bool:
    return "tar" in media_type and "zstd" not in media_type


def _within(root: Path, p: Path) -> bool:
    return p == root or root in p.parents


def _safe_name(name: str) -> PurePosixPath | None:
    """Normalise a member name; None for the archive root. Raises on absolute paths and `..`."""
    if name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name) or "\\" in name:
        raise UnsafeArchive(f"archive entry {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeArchive(f"archive entry {name!r} escapes the destination ('..')")
    return PurePosixPath(*parts) if parts else None


def safe_extract(
    archive: str | os.PathLike, dest: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[str]:
    """Extract a tar (gzip or not) into `dest`, refusing anything that could land outside it.

    Refused: absolute names, `..`, links whose target leaves `dest`, writes through links that
    leave `dest`, more than `max_bytes` of content or MAX_MEMBERS entries. Devices and FIFOs are
    skipped, modes are reduced to rwx bits, owners are not restored. OCI whiteouts delete.
    """
    root = Path(dest).resolve()
    root.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    total = 0
    count = 0

    def add_bytes(n: int) -> None:
        nonlocal total
        total += n
        if total > max_bytes:
            raise UnsafeArchive(f"archive expands to more than {max_bytes} bytes")

    try:
        tar = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed by the with below
    except tarfile.TarError as e:
        raise UnsafeArchive(f"layer is not a readable tar archive ({e})") from None
    with tar:
        for m in tar:
            count += 1
            if count > MAX_MEMBERS:
                raise UnsafeArchive(f"archive has more than {MAX_MEMBERS} entries")
            rel = _safe_name(m.name)
            if rel is None:
                continue
            target = root / rel
            parent = target.parent
            if not _within(root, parent.resolve() if parent.exists() else parent):
                raise UnsafeArchive(
                    f"archive entry {m.name!r} would be written through a link outside the destination"
                )
            base = rel.name
            if base.startswith(".wh."):  # OCI whiteouts
                victim = parent / base[4:]
                if base == ".wh..wh..opq":
                    for child in parent.iterdir() if parent.is_dir() else ():
                        _remove(child)
                elif victim.exists() or victim.is_symlink():
                    _remove(victim)
                continue
            if m.isdir():
                if target.is_symlink() or (target.exists() and not target.is_dir()):
                    _remove(target)
                target.mkdir(parents=True, exist_ok=True)
                if not _within(root, target.resolve()):
                    raise UnsafeArchive(f"archive entry {m.name!r} escapes the destination")
                continue
            if m.issym() or m.islnk():
                link = m.linkname
                if m.issym():
                    if link.startswith("/"):
                        raise UnsafeArchive(
                            f"archive entry {m.name!r} is a link to an absolute path ({link!r})"
                        )
                    resolved = Path(os.path.normpath(parent.resolve() / link))
                else:
                    lrel = _safe_name(link)
                    resolved = root / lrel if lrel else root
                if not _within(root, resolved):
                    raise UnsafeArchive(f"archive entry {m.name!r} links outside the destination ({link!r})")
                parent.mkdir(parents=True, exist_ok=True)
                if target.exists() or target.is_symlink():
                    _remove(target)
                if m.issym():
                    os.symlink(link, target)
                    if not _within(root, Path(os.path.realpath(target))):
                        target.unlink()
                        raise UnsafeArchive(
                            f"archive entry {m.name!r} links outside the destination ({link!r})"
                        )
                else:
                    src = resolved.resolve()
                    if not _within(root, src) or not src.is_file():
                        raise UnsafeArchive(
                            f"archive entry {m.name!r} is a hard link to {link!r}, not a file inside it"
                        )
                    add_bytes(src.stat().st_size)  # the copy is written out in full
                    shutil.copyfile(src, target)
                    written.append(str(rel))
                continue
            if not m.isfile():
                continue  # devices, FIFOs
            add_bytes(m.size)
            parent.mkdir(parents=True, exist_ok=True)
            if not _within(root, parent.resolve()):
                raise UnsafeArchive(
                    f"archive entry {m.name!r} would be written through a link outside the destination"
                )
            if target.exists() or target.is_symlink():
                _remove(target)
            src = tar.extractfile(m)
            if src is None:
                continue
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with src, os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.chmod(target, (m.mode & 0o777) | 0o600)
            written.append(str(rel))
    return written


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def _move_into(src: Path, dest: Path) -> None:
    for entry in list(src.iterdir()):
        target = dest / entry.name
        if target.exists() or target.is_symlink():
            if target.is_dir() and not target.is_symlink() and entry.is_dir() and not entry.is_symlink():
                _move_into(entry, target)
                continue
            _remove(target)
        os.replace(entry, target)


def _list_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def pull(
    image: str,
    dest: str | os.PathLike,
    docker_configs: Sequence[str | os.PathLike] = (),
    insecure: bool | None = None,
    expect: str = "auto",
    max_bytes: int = DEFAULT_MAX_BYTES,
    log: Callable[..., None] | None = None,
) -> PullResult:
    """Pull `image` into `dest` (created if needed).

    expect: "adapter" requires adapter_config.json + adapter weights; "auto" requires them only
    when the image says it is an adapter (the `sh.kaito.model.name` annotation); "any" never.
    Nothing is moved into `dest` unless the whole pull succeeds.
    """
    if expect not in ("auto", "adapter", "any"):
        raise ValueError("expect must be auto, adapter or any")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    client = client_for(image, docker_configs, insecure)
    manifest, digest = get_manifest(client)
    layers = manifest.get("layers") or []
    if not layers:
        raise OCIError(f"pull {client.ref}: the manifest has no layers")
    declared = sum(int(layer.get("size", 0)) for layer in layers)
    if declared > max_bytes:
        raise OCIError(f"pull {client.ref}: layers total {declared} bytes, over the {max_bytes}-byte limit")
    annotations = manifest.get("annotations") or {}
    staging = Path(tempfile.mkdtemp(prefix=".kaito-pull-", dir=dest))
    try:
        tar_root, file_root = staging / "tar", staging / "files"
        tar_root.mkdir()
        file_root.mkdir()
        total = 0
        for i, layer in enumerate(layers):
            blob = staging / f"blob-{i}"
            total += _download(client, layer, blob, max_bytes - total)
            media = str(layer.get("mediaType", ""))
            title = (layer.get("annotations") or {}).get(TITLE_ANNOTATION)
            if _is_tar(media) and (tarfile.is_tarfile(blob) or not title):
                used = sum(
                    p.stat().st_size for p in tar_root.rglob("*") if p.is_file() and not p.is_symlink()
                )
                safe_extract(blob, tar_root, max_bytes - used)
            elif title:
                rel = _safe_name(str(title))
                if rel is None:
                    raise UnsafeArchive(f"pull {client.ref}: layer title {title!r} is not a file name")
                out = file_root / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                os.replace(blob, out)
            elif "zstd" in media:
                raise OCIError(f"pull {client.ref}: zstd layers are not supported ({media})")
            elif log:
                log("skip_layer", digest=layer.get("digest"), media_type=media)
            if blob.exists():
                blob.unlink()
        content = tar_root / "data" if (tar_root / "data").is_dir() else tar_root
        _move_into(file_root, content)
        is_adapter = (content / ADAPTER_CONFIG).is_file() and any(
            (content / w).is_file() for w in ADAPTER_WEIGHTS
        )
        claims = MODEL_NAME_ANNOTATION in annotations
        if not is_adapter and (expect == "adapter" or (expect == "auto" and claims)):
            missing = (
                ADAPTER_CONFIG if not (content / ADAPTER_CONFIG).is_file() else "adapter_model.safetensors"
            )
            raise NotAnAdapter(
                f"{client.ref} is not an adapter: it has no {missing} (expected data/{ADAPTER_CONFIG} and "
                "data/adapter_model.safetensors in the image)"
            )
        files = _list_files(content)
        _move_into(content, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PullResult(str(client.ref), digest, files, total, is_adapter, dict(annotations))


__all__ = [
    "LAYER_MEDIA_TYPE",
    "MODEL_NAME_ANNOTATION",
    "Credentials",
    "ImageNotFound",
    "ImageRef",
    "NotAnAdapter",
    "OCIError",
    "PullResult",
    "PushResult",
    "RegistryClient",
    "Unauthorized",
    "UnsafeArchive",
    "adapter_files",
    "build_layer",
    "get_manifest",
    "parse_reference",
    "pull",
    "push_adapter",
    "registry_credentials",
    "safe_extract",
]
