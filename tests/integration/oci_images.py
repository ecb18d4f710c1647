"""Test helpers: a real docker-registry process, OCI images built in Python, and test servers.

Images are written as OCI image layouts with tarfile and gzip (no docker
needed) and pushed with `skopeo copy --preserve-digests`, so the registry holds
exactly the bytes the tests computed digests for. Servers bind 127.0.0.1 on
free ports and are always stopped by their owners.

Also used by bench/pull.py, which puts this folder on sys.path.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.server
import io
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import yaml

REGISTRY_BINARY = "/usr/bin/docker-registry"
BASIC_USER = "puller"
BASIC_PASSWORD = "s3cret-pass"  # test-only credential of a throwaway registry
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- layers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """A layer blob as pushed, with what its config must say about it."""

    blob: bytes
    media_type: str
    diff_id: str
    expanded_size: int

    @property
    def digest(self) -> str:
        return sha256(self.blob)

    @property
    def size(self) -> int:
        return len(self.blob)


class _ZeroReader(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._left)
        buffer[:n] = bytes(n)
        self._left -= n
        return n


class _HashingGzipSink(io.RawIOBase):
    """Receives a tar stream: hashes it (the diff_id) and gzips it into memory."""

    def __init__(self, level: int) -> None:
        self.hasher = hashlib.sha256()
        self.size = 0
        self.out = io.BytesIO()
        self._gzip = gzip.GzipFile(fileobj=self.out, mode="wb", compresslevel=level, mtime=0)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hasher.update(view)
        self.size += len(view)
        self._gzip.write(view)
        return len(view)

    def finish(self) -> bytes:
        self._gzip.close()
        return self.out.getvalue()


def _tar_into(sink: io.RawIOBase, files: Mapping[str, bytes | int]) -> None:
    """Write a tar of `files` (content, or an int: that many zero bytes, streamed)."""
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.mode = 0o644
            if isinstance(content, int):
                info.size = content
                tar.addfile(info, _ZeroReader(content))
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))


def make_layer(
    files: Mapping[str, bytes | int], *, compression: str = "gzip", level: int = 6
) -> Layer:
    """A layer holding `files`; compression is "gzip", "zstd" or "none"."""
    if compression == "gzip":
        sink = _HashingGzipSink(level)
        _tar_into(sink, files)
        blob = sink.finish()
        return Layer(blob, OCI_LAYER_GZIP, "sha256:" + sink.hasher.hexdigest(), sink.size)
    raw = io.BytesIO()
    _tar_into(raw, files)  # type: ignore[arg-type]
    tar_bytes = raw.getvalue()
    if compression == "none":
        return Layer(tar_bytes, OCI_LAYER_TAR, sha256(tar_bytes), len(tar_bytes))
    if compression == "zstd":
        import zstandard  # noqa: PLC0415 - optional, only tests that need it call this

        blob = zstandard.ZstdCompressor().compress(tar_bytes)
        return Layer(blob, OCI_LAYER_ZSTD, sha256(tar_bytes), len(tar_bytes))
    raise ValueError(f"unknown compression {compression!r}")


def random_layer(size: int, *, seed: int | str, level: int = 1) -> Layer:
    """One file of `size` incompressible bytes (real sizes for dedupe and bench)."""
    data = random.Random(seed).randbytes(size)
    return make_layer({f"data-{seed}.bin": data}, level=level)


def small_layer(tag: str) -> Layer:
    """A tiny unique layer."""
    return make_layer({f"{tag}.txt": f"layer {tag}\n".encode()})


def zeros_layer(expanded: int) -> Layer:
    """A layer whose `expanded` zero bytes gzip to about 1/1000 of that."""
    return make_layer({"zeros.bin": expanded}, level=9)


# -- OCI layouts -------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltImage:
    manifest_digest: str
    manifest: bytes
    config_digest: str
    layers: tuple[Layer, ...]
    platform: str


@dataclass
class OciLayout:
    """An OCI image layout folder, written as images are added."""

    root: Path
    tags: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self._write_index()

    def add_blob(self, data: bytes) -> str:
        digest = sha256(data)
        path = self.root / "blobs" / "sha256" / digest.split(":", 1)[1]
        if not path.exists():
            path.write_bytes(data)
        return digest

    def add_image(
        self,
        layers: Sequence[Layer],
        *,
        tag: str | None = None,
        platform: str = "linux/amd64",
        label: str = "",
    ) -> BuiltImage:
        os_name, arch, *variant = platform.split("/")
        config: dict[str, Any] = {
            "architecture": arch,
            "os": os_name,
            "config": {"Labels": {"test": label}} if label else {},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        }
        if variant:
            config["variant"] = variant[0]
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_digest = self.add_blob(config_bytes)
        for layer in layers:
            self.add_blob(layer.blob)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": [
                {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
                for layer in layers
            ],
        }
        manifest_bytes = json.dumps(manifest, indent=2).encode()
        digest = self.add_blob(manifest_bytes)
        if tag:
            self._tag(tag, OCI_MANIFEST, digest, len(manifest_bytes))
        return BuiltImage(digest, manifest_bytes, config_digest, tuple(layers), platform)

    def add_index(self, images: Sequence[BuiltImage], *, tag: str) -> str:
        entries = []
        for image in images:
            os_name, arch, *variant = image.platform.split("/")
            plat: dict[str, str] = {"os": os_name, "architecture": arch}
            if variant:
                plat["variant"] = variant[0]
            entries.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": image.manifest_digest,
                    "size": len(image.manifest),
                    "platform": plat,
                }
            )
        index_bytes = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, indent=2
        ).encode()
        digest = self.add_blob(index_bytes)
        self._tag(tag, OCI_INDEX, digest, len(index_bytes))
        return digest

    def _tag(self, tag: str, media_type: str, digest: str, size: int) -> None:
        self.tags[tag] = {
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
        self._write_index()

    def _write_index(self) -> None:
        index = {"schemaVersion": 2, "manifests": list(self.tags.values())}
        (self.root / "index.json").write_text(json.dumps(index))


def skopeo_push(layout: OciLayout, tag: str, destination: str, *, all_images: bool = False) -> None:
    """Push `tag` of the layout to `destination` (host:port/repo:tag), bytes unchanged."""
    command = [
        "skopeo",
        "--insecure-policy",
        "copy",
        "--quiet",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-no-creds",
    ]
    if all_images:
        command.append("--all")
    command += [f"oci:{layout.root}:{tag}", f"docker://{destination}"]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


# -- the registry process -------------------------------------------------------------


class RegistryProcess:
    """Debian's docker-registry on 127.0.0.1, with filesystem storage in `storage`."""

    def __init__(
        self, *, storage: Path, workdir: Path, auth: Mapping[str, Any] | None = None
    ) -> None:
        self.storage = storage
        self.workdir = workdir
        self.auth = auth
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "registry.log"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RegistryProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = free_port()
            config: dict[str, Any] = {
                "version": 0.1,
                "log": {"level": "error", "accesslog": {"disabled": True}},
                "storage": {
                    "filesystem": {"rootdirectory": str(self.storage)},
                    "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}},
                },
                "http": {"addr": self.host, "secret": "gitsync-test-secret"},
                "health": {"storagedriver": {"enabled": False}},
            }
            if self.auth:
                config["auth"] = dict(self.auth)
            config_path = self.workdir / "config.yml"
            config_path.write_text(yaml.safe_dump(config))
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [REGISTRY_BINARY, "serve", str(config_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"docker-registry did not start: {self.log_path.read_text()[-2000:]}")

    def _wait_ready(self, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"http://{self.host}/v2/", timeout=1.0)
                return True  # 200 or 401: it answers
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Die like a crash: SIGKILL, no draining."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def blob_data_path(self, digest: str) -> Path:
        hexpart = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"


def write_htpasswd(path: Path, users: Mapping[str, str]) -> None:
    """A bcrypt htpasswd file, the only hash docker-registry accepts."""
    try:
        import bcrypt  # noqa: PLC0415 - optional test dependency
    except ImportError:
        htpasswd = shutil.which("htpasswd")
        if htpasswd is None:
            raise
        for n, (user, password) in enumerate(users.items()):
            flags = "-Bbc" if n == 0 else "-Bb"
            subprocess.run([htpasswd, flags, str(path), user, password], check=True)
        return
    lines = [
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}"
        for user, password in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")


def htpasswd_available() -> bool:
    try:
        import bcrypt  # noqa: F401, PLC0415 - probing for an optional module
    except ImportError:
        return shutil.which("htpasswd") is not None
    return True


# -- small HTTP servers -----------------------------------------------------------------


class _Server:
    """A threading http.server on 127.0.0.1 that stops on exit."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer(_Server):
    """A distribution token server: RS256 JWTs with an x5c chain the registry trusts.

    `expires_in` is what the JSON answer tells clients (the JWT itself is valid
    for 10 minutes so the registry accepts it whatever the client's clock says).
    If `users` is given, token requests need Basic credentials from it.
    """

    def __init__(
        self,
        *,
        workdir: Path,
        service: str = "gitsync-test",
        issuer: str = "gitsync-test-issuer",
        expires_in: int = 30,
        users: Mapping[str, str] | None = None,
    ) -> None:
        from cryptography import x509  # noqa: PLC0415 - only this server needs it
        from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415
        from cryptography.x509.oid import NameOID  # noqa: PLC0415

        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.users = dict(users or {})
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gitsync test token signer")])
        now = time.time()
        import datetime as _dt  # noqa: PLC0415

        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_dt.datetime.fromtimestamp(now - 86400, tz=_dt.UTC))
            .not_valid_after(_dt.datetime.fromtimestamp(now + 86400, tz=_dt.UTC))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.cert_path = workdir / "token-signer.pem"
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._hashes = hashes
        super().__init__(_TokenHandler)

    @property
    def realm(self) -> str:
        return f"http://{self.host}/token"

    def registry_auth(self) -> dict[str, Any]:
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.cert_path),
            }
        }

    def issue(self, scope: str, subject: str) -> str:
        from cryptography.hazmat.primitives.asymmetric import padding  # noqa: PLC0415

        access = []
        if scope:
            kind, name, actions = scope.split(":", 2)
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._cert_der).decode()]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + 600,
            "nbf": now - 10,
            "iat": now,
            "jti": os.urandom(8).hex(),
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = self._key.sign(
            signing_input.encode(), padding.PKCS1v15(), self._hashes.SHA256()
        )
        return f"{signing_input}.{_b64url(signature)}"

    def record(self, entry: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(entry)

    def count(self) -> int:
        with self._lock:
            return len(self.requests)


class _TokenHandler(_QuietHandler):
    def do_GET(self) -> None:
        server: TokenServer = self.server.owner  # type: ignore[attr-defined]
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        subject = "anonymous"
        if server.users:
            header = self.headers.get("Authorization", "")
            user = ""
            if header.startswith("Basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if server.users.get(user) != password:
                    user = ""
            if not user:
                self._reply(401, b'{"details": "bad credentials"}')
                return
            subject = user
        server.record({"scope": query.get("scope", ""), "service": query.get("service", "")})
        token = server.issue(query.get("scope", ""), subject)
        body = json.dumps({"token": token, "expires_in": server.expires_in}).encode()
        self._reply(200, body)

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class Fault:
    """What FaultProxy does to matching requests, `times` times (None: always)."""

    path_contains: str
    status: int | None = None  # answer this status instead of forwarding
    headers: Mapping[str, str] = field(default_factory=dict)
    cut_after: int | None = None  # forward headers and this many body bytes, then hang up
    times: int | None = 1


class FaultProxy(_Server):
    """A test-only HTTP proxy in front of a registry that injects faults by path."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.hits: Counter[str] = Counter()
        self.applied: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.client = httpx.Client(base_url=f"http://{upstream}", timeout=30)
        super().__init__(_ProxyHandler)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.client.close()

    def take_fault(self, path: str) -> Fault | None:
        with self._lock:
            self.hits[path] += 1
            for fault in self.faults:
                if fault.path_contains in path and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    self.applied.append((path, "status" if fault.status else "cut"))
                    return fault
        return None


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class _ProxyHandler(_QuietHandler):
    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def _handle(self, method: str) -> None:
        proxy: FaultProxy = self.server.owner  # type: ignore[attr-defined]
        fault = proxy.take_fault(self.path)
        if fault is not None and fault.status is not None:
            body = b'{"errors": [{"code": "TOOMANYREQUESTS", "message": "injected"}]}'
            self.send_response(fault.status)
            for name, value in fault.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host"}}
        with proxy.client.stream(method, self.path, headers=headers) as upstream:
            self.send_response(upstream.status_code)
            for name, value in upstream.headers.multi_items():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            if "content-length" not in upstream.headers:
                body = upstream.read() if method != "HEAD" else b""
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.end_headers()
            sent = 0
            for chunk in upstream.iter_raw():
                piece = chunk
                if fault is not None and fault.cut_after is not None:
                    room = fault.cut_after - sent
                    if room <= 0:
                        break
                    piece = chunk[:room]
                self.wfile.write(piece)
                sent += len(piece)
        if fault is not None and fault.cut_after is not None:
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


# -- a transport that counts ------------------------------------------------------------


class CountingTransport(httpx.BaseTransport):
    """Wraps httpx's transport and records every request (method, path, had auth)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(
                (request.method, request.url.path, request.headers.get("Authorization"))
            )
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()

    def paths(self) -> list[str]:
        with self._lock:
            return [path for _, path, _ in self.requests]

    def blob_gets(self) -> Counter[str]:
        """How many times each blob digest was requested."""
        return Counter(p.rsplit("/", 1)[1] for p in self.paths() if "/blobs/" in p)


# -- what the fixtures hand to tests ------------------------------------------------------


@dataclass(frozen=True)
class BearerSetup:
    """A registry in token-auth mode and the token server it trusts."""

    registry: RegistryProcess
    tokens: TokenServer


_counter = itertools.count()


@dataclass
class Pusher:
    """Builds images in an OCI layout and pushes them to the session registry."""

    layout: OciLayout
    registry: RegistryProcess

    def repo(self, stem: str) -> str:
        """A repository name no other test uses."""
        return f"{stem}-{next(_counter)}"

    def push_image(
        self,
        repository: str,
        layers: list[Layer],
        *,
        tag: str = "v1",
        platform: str = "linux/amd64",
    ) -> BuiltImage:
        local_tag = f"t{next(_counter)}"
        image = self.layout.add_image(layers, tag=local_tag, platform=platform, label=repository)
        skopeo_push(self.layout, local_tag, f"{self.registry.host}/{repository}:{tag}")
        return image

    def push_index(
        self, repository: str, images: list[tuple[str, list[Layer]]], *, tag: str = "v1"
    ) -> tuple[str, dict[str, BuiltImage]]:
        built = {
            platform: self.layout.add_image(layers, platform=platform, label=repository)
            for platform, layers in images
        }
        local_tag = f"t{next(_counter)}"
        digest = self.layout.add_index(list(built.values()), tag=local_tag)
        skopeo_push(
            self.layout, local_tag, f"{self.registry.host}/{repository}:{tag}", all_images=True
        )
        return digest, built
