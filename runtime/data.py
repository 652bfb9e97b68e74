"""`python -m runtime.data fetch`: download tuning data over http(s), safely.

    fetch --dest DIR URL... [--max-bytes N] [--retries 3] [--backoff S] [--allow-host HOST[:PORT] ...]

Each URL passes `runtime.urlpolicy.check_url`; then the host name is resolved here, EVERY address
it resolves to passes `check_address`, and the connection goes to one of those vetted addresses
(the name travels only in the Host header and TLS SNI / certificate check), so a name that
resolves to 127.0.0.1 or the metadata service, or that re-resolves differently between check and
connect (DNS rebinding), is refused. Redirects are followed by hand (at most 5), each hop
checked again. Proxies are not used (a proxy would resolve the name itself).

`--allow-host` is the escape hatch for a private mirror: that host (and port, when given)
skips the address checks; the scheme and credential rules still apply.

Files are named after the URL path's last segment (no query or fragment; de-duplicated), written
to a temporary file and renamed when complete. Retries (with backoff) happen on 5xx answers and
connection errors only. A file over `--max-bytes` is aborted and its partial file deleted.
Logs are one JSON object per line on stdout; query strings (pre-signed tokens) are never logged.
Exit codes: 0 all fetched, 1 a URL was refused or failed, 2 usage. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import ipaddress
import os
import posixpath
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from .progress import log_line as log
from .urlpolicy import URLRefused, check_address, check_url

DEFAULT_MAX_BYTES = 10 * 1024**3
MAX_REDIRECTS = 5
USER_AGENT = "kaito-gitops-data/0.1"
CHUNK = 1 << 16

Resolver = Callable[[str, int], Sequence[str]]


class FetchError(RuntimeError):
    """A download failed (HTTP error, too large, too many redirects, connection errors)."""


class _Retryable(FetchError):
    pass


def redact(url: str) -> str:
    """The URL without its query string and fragment (they may hold pre-signed tokens)."""
    p = urlsplit(url)
    out = f"{p.scheme}://{p.netloc.rsplit('@', 1)[-1]}{p.path}"
    return out + ("?<redacted>" if p.query else "")


def system_resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order, without duplicates."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise FetchError(f"cannot resolve {host}: {e.strerror or e}") from None
    out: list[str] = []
    for info in infos:
        addr = str(info[4][0]).split("%", 1)[0]
        if addr not in out:
            out.append(addr)
    return out


def parse_allow_hosts(values: Iterable[str]) -> set[tuple[str, int | None]]:
    out: set[tuple[str, int | None]] = set()
    for v in values:
        v = v.strip().lower()
        if not v:
            continue
        host, port = v, None
        if v.startswith("["):
            host, _, rest = v[1:].partition("]")
            if rest.startswith(":"):
                port = int(rest[1:])
        elif v.count(":") == 1:
            host, p = v.split(":")
            port = int(p)
        out.add((host.rstrip("."), port))
    return out


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path + query, as sent
    allowed: bool  # matched --allow-host


def vet_url(url: str, allow_hosts: set[tuple[str, int | None]] = frozenset()) -> Target:  # type: ignore[assignment]
    """Where to connect for `url`, or URLRefused: the URL policy, less the host checks for allowed hosts."""
    host = check_url(url, check_host=False)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    allowed = (host, port) in allow_hosts or (host, None) in allow_hosts
    if not allowed:
        check_url(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port, path, allowed)


def vetted_addresses(target: Target, resolve: Resolver) -> list[str]:
    """Resolve the host and check every address (unless allow-listed)."""
    try:
        literal = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    addrs = [str(literal)] if literal is not None else list(resolve(target.host, target.port))
    if not addrs:
        raise FetchError(f"{target.host} resolves to no address")
    if not target.allowed:
        for a in addrs:
            try:
                check_address(a)
            except URLRefused as e:
                raise URLRefused(f"{target.host} resolves to {a}: {e}") from None
    return addrs


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # SNI and certificate verification use the name, the TCP connection the vetted address.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


@dataclass
class FetchedFile:
    url: str  # redacted
    path: Path
    size: int
    sha256: str


def _open(target: Target, addrs: list[str], timeout: float, ssl_context: ssl.SSLContext | None):
    last: OSError | None = None
    for addr in addrs:
        if target.scheme == "https":
            conn: http.client.HTTPConnection = _PinnedHTTPSConnection(
                target.host, target.port, addr, timeout, ssl_context or ssl.create_default_context()
            )
        else:
            conn = _PinnedHTTPConnection(target.host, target.port, addr, timeout)
        try:
            conn.connect()
            return conn
        except ssl.SSLError as e:
            conn.close()
            raise FetchError(f"TLS with {target.host} failed: {e.reason or e}") from None
        except OSError as e:
            conn.close()
            last = e
    raise _Retryable(f"cannot connect to {target.host}:{target.port}: {last}")


def _request(target: Target, addrs: list[str], timeout: float, ssl_context):
    conn = _open(target, addrs, timeout, ssl_context)
    try:
        conn.putrequest("GET", target.path, skip_accept_encoding=True)
        conn.putheader("User-Agent", USER_AGENT)
        conn.putheader("Accept", "*/*")
        conn.putheader("Accept-Encoding", "identity")
        conn.putheader("Connection", "close")
        conn.endheaders()
        return conn, conn.getresponse()
    except (OSError, http.client.HTTPException) as e:
        conn.close()
        raise _Retryable(f"request to {target.host} failed: {type(e).__name__}: {e}") from None


def _stream_to(
    resp: http.client.HTTPResponse, dest_dir: Path, name: str, max_bytes: int, url: str
) -> FetchedFile:
    length = resp.getheader("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise FetchError(
            f"{redact(url)} is {int(length)} bytes, over the {max_bytes}-byte limit (--max-bytes)"
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest_dir)
    h = hashlib.sha256()
    n = 0
    ok = False
    try:
        with os.fdopen(fd, "wb") as f:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Retryable(
                        f"download of {redact(url)} broke off after {n} bytes: {type(e).__name__}"
                    ) from None
                if not chunk:
                    break
                n += len(chunk)
                if n > max_bytes:
                    raise FetchError(
                        f"{redact(url)} is larger than the {max_bytes}-byte limit (--max-bytes); aborted"
                    )
                h.update(chunk)
                f.write(chunk)
        if length and length.isdigit() and n != int(length):
            raise _Retryable(f"download of {redact(url)} ended after {n} of {length} bytes")
        if n == 0:
            raise FetchError(f"{redact(url)} answered 200 with an empty body")
        final = dest_dir / name
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
        ok = True
        return FetchedFile(redact(url), final, n, h.hexdigest())
    finally:
        if not ok:
            Path(tmp).unlink(missing_ok=True)


def fetch_url(
    url: str,
    dest_dir: Path,
    name: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    retries: int = 3,
    backoff: float = 1.0,
    allow_hosts: set[tuple[str, int | None]] = frozenset(),  # type: ignore[assignment]
    resolve: Resolver = system_resolve,
    timeout: float = 60.0,
    ssl_context: ssl.SSLContext | None = None,
    logger: Callable[..., None] | None = log,
) -> FetchedFile:
    """Download one URL to dest_dir/name. Raises URLRefused or FetchError."""
    attempt = 0
    while True:
        try:
            current = url
            for _hop in range(MAX_REDIRECTS + 1):
                try:
                    target = vet_url(current, allow_hosts)
                    addrs = vetted_addresses(target, resolve)
                except URLRefused as e:
                    where = "" if current == url else f" (redirected from {redact(url)})"
                    raise URLRefused(f"{redact(current)}{where}: {e}") from None
                conn, resp = _request(target, addrs, timeout, ssl_context)
                try:
                    status = resp.status
                    if status in (301, 302, 303, 307, 308):
                        loc = resp.getheader("Location")
                        if not loc:
                            raise FetchError(f"{redact(current)} redirected ({status}) without a Location")
                        nxt = urljoin(current, loc.strip())
                        if logger:
                            logger("redirect", url=redact(current), to=redact(nxt), status=status)
                        current = nxt
                        continue
                    if status == 200:
                        return _stream_to(resp, dest_dir, name, max_bytes, url)
                    if status >= 500:
                        raise _Retryable(f"{redact(current)} answered HTTP {status} {resp.reason}")
                    raise FetchError(f"{redact(current)} answered HTTP {status} {resp.reason}")
                finally:
                    resp.close()
                    conn.close()
            raise FetchError(f"{redact(url)}: more than {MAX_REDIRECTS} redirects")
        except _Retryable as e:
            if attempt >= retries:
                raise FetchError(f"{e} (gave up after {attempt + 1} attempts)") from None
            delay = backoff * (2**attempt)
            if logger:
                logger(
                    "retry",
                    level="warning",
                    url=redact(url),
                    error=str(e),
                    attempt=attempt + 1,
                    delay_s=delay,
                )
            time.sleep(delay)
            attempt += 1


def file_name(url: str, taken: set[str]) -> str:
    """The URL path's last segment, made safe and unique among `taken` (which it joins)."""
    path = unquote(urlsplit(url).path)
    base = posixpath.basename(path.rstrip("/")) if path else ""
    base = base.replace("\\", "_").replace("\x00", "")
    base = "".join(c if c.isprintable() and c not in '/:*?"<>|' else "_" for c in base).strip()
    if base in ("", ".", "..") or base.startswith("."):
        base = base.lstrip(".") or "data"
    base = base[:200]
    stem, dot, ext = base.partition(".")
    candidate, i = base, 1
    while candidate in taken:
        candidate = f"{stem}-{i}{dot}{ext}"
        i += 1
    taken.add(candidate)
    return candidate


def fetch(
    urls: Sequence[str],
    dest: str | os.PathLike,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    retries: int = 3,
    backoff: float = 1.0,
    allow_hosts: Iterable[str] = (),
    resolve: Resolver = system_resolve,
    timeout: float = 60.0,
    ssl_context: ssl.SSLContext | None = None,
    logger: Callable[..., None] | None = log,
) -> list[FetchedFile]:
    """Fetch every URL into `dest`. All URLs are vetted before any download starts."""
    dest_dir = Path(dest)
    dest_dir.mkdir(parents=True, exist_ok=True)
    allow = parse_allow_hosts(allow_hosts)
    for u in urls:  # refuse early: nothing is downloaded if any URL is unacceptable
        try:
            vet_url(u, allow)
        except URLRefused as e:
            raise URLRefused(f"{redact(u) if '://' in str(u) else u!r}: {e}") from None
    taken: set[str] = set()
    names = [file_name(u, taken) for u in urls]
    out = []
    for u, name in zip(urls, names, strict=True):
        t0 = time.monotonic()
        f = fetch_url(
            u,
            dest_dir,
            name,
            max_bytes=max_bytes,
            retries=retries,
            backoff=backoff,
            allow_hosts=allow,
            resolve=resolve,
            timeout=timeout,
            ssl_context=ssl_context,
            logger=logger,
        )
        if logger:
            logger(
                "fetched",
                url=f.url,
                file=str(f.path),
                size=f.size,
                sha256=f.sha256,
                seconds=round(time.monotonic() - t0, 3),
            )
        out.append(f)
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.data", description="Fetch tuning data over http(s).")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="download URLs into a folder")
    f.add_argument("--dest", required=True)
    f.add_argument("urls", nargs="+", metavar="URL")
    f.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="per file (default 10 GiB)")
    f.add_argument(
        "--retries", type=int, default=3, help="retries after the first try, on 5xx/connection errors"
    )
    f.add_argument(
        "--backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each time"
    )
    f.add_argument("--timeout", type=float, default=60.0, help="connect/read timeout in seconds")
    f.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="a private mirror allowed despite the address checks; repeatable",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.max_bytes <= 0 or args.retries < 0:
        print("--max-bytes must be positive and --retries not negative", file=sys.stderr)
        return 2
    try:
        parse_allow_hosts(args.allow_host)
    except ValueError:
        print("--allow-host takes HOST or HOST:PORT", file=sys.stderr)
        return 2
    try:
        files = fetch(
            args.urls,
            args.dest,
            max_bytes=args.max_bytes,
            retries=args.retries,
            backoff=args.backoff,
            allow_hosts=args.allow_host,
            timeout=args.timeout,
        )
    except URLRefused as e:
        log("refused", level="error", error=f"refused: {e}")
        return 1
    except (FetchError, OSError) as e:
        log("fetch_failed", level="error", error=str(e))
        return 1
    log("done", files=len(files), bytes=sum(f.size for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
