"""The artifact store on S3-compatible object storage, through boto3: one store for every worker.

``PRODLINE_ARTIFACTS=s3://bucket/prefix``. Everything else comes from the standard AWS
settings, read by boto3 itself: ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (or
``endpoint_url`` in the profile) for a server other than AWS, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and the shared files,
``AWS_DEFAULT_REGION``, ``AWS_MAX_ATTEMPTS`` / ``AWS_RETRY_MODE``. Only ``AWS_REGION`` is read
here, because botocore does not read it and the other AWS SDKs prefer it. With an endpoint
other than AWS's, requests use path-style addresses (``endpoint/bucket/key``): SeaweedFS,
MinIO and most self-hosted servers have no per-bucket host names.

Every object carries the SHA-256 of its bytes in its metadata (``x-amz-meta-sha256``); a read
whose bytes do not match is refused with :class:`~.store.ArtifactCorrupt`. That one digest
works for single and multipart objects alike (S3's own multipart checksums are checksums of
part checksums). Uploads also send each body's or part's SHA-256, so the server refuses bytes
damaged on the way.

:meth:`S3ArtifactStore.put_file_if_absent` is create-only: ``If-None-Match: *`` on the
``PutObject`` or on the ``CompleteMultipartUpload`` that makes a large file visible; a 412
means another writer got there first. boto3's ``upload_file`` cannot send that header, so the
multipart upload is done here. A ``HEAD`` first skips the upload when the object is there.

Synchronous: activities call it through ``asyncio.to_thread``. One boto3 client per store,
made on first use (a thread-safe one: botocore clients are, the default session is not).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from boto3.session import Session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    FlexibleChecksumError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from prodline.errors import InvalidInput, Unavailable

from .store import STORE_VARIABLE, ArtifactCorrupt, ArtifactMissing

CHECKSUM_METADATA = "sha256"  # x-amz-meta-sha256: hex SHA-256 of the whole object
MULTIPART_THRESHOLD = 8 << 20  # as boto3's TransferConfig; bundles reach 100 MB
PART_SIZE = 8 << 20  # S3 wants >= 5 MiB per part but the last, at most 10,000 parts
MAX_PARTS = 10_000
UPLOAD_THREADS = 4  # parts in flight at once: 4 x 8 MiB of memory
CHUNK = 1 << 20  # streaming reads
# botocore waits 60 s to connect, three times: a worker pointed at a dead endpoint would hang
# for minutes. Reads stay long (a 100 MB bundle over a slow link).
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0

# Error codes that mean "these credentials may not do this", not "the object is not there".
_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "AuthorizationHeaderMalformed",
    "403",
}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class S3ArtifactStore:
    """Artifacts as objects under ``s3://bucket/prefix/``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        session: Session | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
    ):
        self.bucket = bucket
        self.prefix = "/".join(part for part in prefix.split("/") if part)
        # Both normally None: boto3 finds the endpoint and credentials in the AWS variables
        # and files. Given, they win (tests, or a program that holds its own credentials).
        self.endpoint_url = endpoint_url
        self._session = session
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout, user_agent_appid="prodline")
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> S3ArtifactStore:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc or parsed.query or parsed.fragment:
            raise InvalidInput(f"{STORE_VARIABLE}={url!r}: an S3 store is named s3://bucket or s3://bucket/prefix")
        return cls(parsed.netloc, parsed.path, **options)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    # -- the client --------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 S3 client, made on first use."""
        with self._lock:
            if self._client is None:
                with self._calls():
                    self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        # AWS_PROFILE, the credential chain and the shared files are read by the session.
        session = self._session or Session(region_name=os.environ.get("AWS_REGION") or None)
        client = session.client("s3", endpoint_url=self.endpoint_url, config=self._config)
        # boto3 resolves the endpoint (variables, profile); only then do we know whether it is
        # AWS, whose buckets have host names, or a server that wants path-style addresses.
        # A second client costs ~15 ms (the service model is loaded once per session).
        if not _is_aws(client.meta.endpoint_url):
            path_style = self._config.merge(Config(s3={"addressing_style": "path"}))
            client = session.client("s3", endpoint_url=self.endpoint_url, config=path_style)
        return client

    def _endpoint(self) -> str:
        client = self._client
        if client is None:
            return "the configured endpoint"
        parsed = urlparse(client.meta.endpoint_url)
        return f"{parsed.scheme}://{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")

    def _key(self, key: str) -> str:
        parts = [part for part in key.split("/") if part]
        if not parts:
            raise InvalidInput(f"artifact key {key!r} is empty")
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    @contextlib.contextmanager
    def _calls(self, key: str | None = None) -> Iterator[None]:
        """boto3's errors as prodline's: a message naming the store and the fix, no traceback."""
        where = f"the artifact store {self.describe()}"
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if key is not None and code in _MISSING_CODES:
                raise ArtifactMissing(f"artifact {key!r} is not in {self.describe()}") from None
            if code == "NoSuchBucket":
                raise Unavailable(
                    f"{where}: bucket {self.bucket!r} does not exist at {self._endpoint()}; create it "
                    f"(aws s3 mb s3://{self.bucket}) or fix {STORE_VARIABLE}"
                ) from None
            if code in _AUTH_CODES:
                raise Unavailable(
                    f"{where} refused the credentials ({code}) at {self._endpoint()}: check AWS_ACCESS_KEY_ID / "
                    f"AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and that they may read and write s3://{self.bucket}"
                ) from None
            raise Unavailable(f"{where} at {self._endpoint()} answered {code}: {error.get('Message', '')}") from None
        except (NoCredentialsError, PartialCredentialsError, ProfileNotFound) as exc:
            raise Unavailable(
                f"{where}: {exc}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE to a profile "
                "in ~/.aws/config"
            ) from None
        except FlexibleChecksumError:
            # botocore checks the checksum S3 keeps for single-part objects while streaming.
            raise ArtifactCorrupt(
                f"artifact {key!r} in {self.describe()} does not match the checksum the server recorded: "
                "the stored object is damaged"
            ) from None
        except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as exc:
            client = self._client
            if client is not None and _is_aws(client.meta.endpoint_url):
                fix = "check this machine's network access to S3 and the region (AWS_REGION)"
            else:
                fix = (
                    "check that the server is up and that AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL "
                    "(or the profile's endpoint_url) points at it"
                )
            raise Unavailable(f"cannot reach {where} at {self._endpoint()} ({type(exc).__name__}); {fix}") from None
        except BotoCoreError as exc:
            raise Unavailable(f"{where} at {self._endpoint()}: {exc}") from None

    # -- the four operations -----------------------------------------------------------------

    def put(self, key: str, data: bytes) -> str:
        digest = hashlib.sha256(data)
        with self._calls(key):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ChecksumSHA256=_b64(digest),
                Metadata={CHECKSUM_METADATA: digest.hexdigest()},
            )
        return digest.hexdigest()

    def put_file_if_absent(self, key: str, path: Path) -> bool:
        name = self._key(key)
        with self._calls(key):
            if self._exists(name):
                return False  # the common case for content-addressed keys: nothing is read or sent
            size = path.stat().st_size
            digest = _file_sha256(path)
            try:
                if size < self.multipart_threshold:
                    with path.open("rb") as body:
                        self.client.put_object(
                            Bucket=self.bucket,
                            Key=name,
                            Body=body,
                            IfNoneMatch="*",
                            ChecksumSHA256=_b64(digest),
                            Metadata={CHECKSUM_METADATA: digest.hexdigest()},
                        )
                else:
                    self._multipart(name, path, size, digest.hexdigest())
            except ClientError as exc:
                if _code(exc) == "PreconditionFailed":
                    return False  # another writer created it between our HEAD and our write
                if _code(exc) == "ConditionalRequestConflict" and self._exists(name):
                    return False  # S3's answer to two conditional writes at once: the other won
                raise
        return True

    def get(self, key: str) -> bytes:
        chunks: list[bytes] = []
        self._read(key, chunks.append)
        return b"".join(chunks)

    def get_to_file(self, key: str, path: Path) -> None:
        # Into a temporary file beside the target, renamed only once verified: whoever looks
        # at ``path`` sees the whole, checked artifact or nothing.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                self._read(key, f.write)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    # -- helpers -----------------------------------------------------------------------------

    def _exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                return False
            raise
        return True

    def _read(self, key: str, write: Any) -> None:
        """Stream the object to ``write``, then refuse it unless its SHA-256 is the recorded one."""
        with self._calls(key):
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            body = response["Body"]
            expected = response.get("Metadata", {}).get(CHECKSUM_METADATA)
            if not expected:
                body.close()
                raise ArtifactCorrupt(
                    f"artifact {key!r} in {self.describe()} has no recorded SHA-256 (x-amz-meta-{CHECKSUM_METADATA}): "
                    "it was not written by prodline and is refused; put it again"
                )
            digest = hashlib.sha256()
            for chunk in body.iter_chunks(CHUNK):
                digest.update(chunk)
                write(chunk)
        if digest.hexdigest() != expected:
            raise ArtifactCorrupt(
                f"artifact {key!r} in {self.describe()} does not match its recorded SHA-256 "
                f"(expected {expected}, read {digest.hexdigest()}): the stored object was changed or damaged"
            )

    def _multipart(self, name: str, path: Path, size: int, sha256_hex: str) -> None:
        """A create-only multipart upload: the parts are invisible until the completion, which
        carries If-None-Match; on any failure the upload is aborted so no parts linger."""
        part_size = max(self.part_size, -(-size // MAX_PARTS))
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=name, ChecksumAlgorithm="SHA256", Metadata={CHECKSUM_METADATA: sha256_hex}
        )
        upload_id = upload["UploadId"]

        def send(number: int) -> dict[str, Any]:
            with path.open("rb") as f:
                f.seek((number - 1) * part_size)
                data = f.read(part_size)
            checksum = _b64(hashlib.sha256(data))
            answer = self.client.upload_part(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                ChecksumSHA256=checksum,
            )
            return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum}

        try:
            with ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="prodline-s3-part") as pool:
                parts = list(pool.map(send, range(1, -(-size // part_size) + 1)))
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except BaseException:
            with contextlib.suppress(BotoCoreError, ClientError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            raise


def _is_aws(endpoint_url: str) -> bool:
    host = urlparse(endpoint_url).hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _b64(digest: Any) -> str:
    return base64.b64encode(digest.digest()).decode()


def _file_sha256(path: Path) -> Any:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256")
