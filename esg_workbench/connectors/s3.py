"""Amazon S3 (and S3-compatible stores): objects under a prefix as tables, through boto3.

Options: ``bucket`` (required), ``prefix`` (a folder: each sub-prefix is a table, see
files.py), ``region`` (default us-east-1; a bucket elsewhere is followed), ``endpoint_url``
(S3-compatible stores such as MinIO, addressed path-style), ``access_key_id`` with the
secret access key as the connector's secret, else ``auth``: ``default`` (the AWS default
credentials: environment, shared config and profile, instance or task role) or
``anonymous`` (public buckets); plus the reading options of files.py.

A file's ``_esg_file`` is its object key, ``_esg_modified`` its LastModified (whole
seconds) and ``_esg_etag`` its ETag. Objects are read with ``If-Match`` on the ETag listed,
so an object replaced while it is read is read again (a transient error, retried) rather
than mixed. Errors carry S3's own code (InvalidAccessKeyId, SignatureDoesNotMatch,
NoSuchBucket, AccessDenied, ...).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from typing import Any

from esg_workbench.connectors.files import FileConnector, FileEntry, FileStore
from esg_workbench.core.errors import (
    AuthenticationFailed,
    ConfigError,
    DatabaseMissing,
    EsgError,
    PermissionDenied,
    SourceError,
    SourceUnreachable,
    TableMissing,
    TransientSourceError,
)
from esg_workbench.core.specs import ConnectorSpec, Timeouts

_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
               "TokenRefreshRequired", "InvalidClientTokenId", "UnrecognizedClientException",
               "AuthorizationHeaderMalformed", "InvalidSecurity"}
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidObjectState", "Forbidden", "403"}
_GONE_CODES = {"NoSuchKey", "404", "NotFound"}
_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "503", "500",
                    "ThrottlingException", "RequestTimeTooSkewed", "PreconditionFailed", "412"}
_REGION_CODES = {"PermanentRedirect", "301", "IllegalLocationConstraintException"}


_SESSION = None
_SESSION_LOCK = threading.Lock()


class S3Store(FileStore):
    def __init__(self, spec: ConnectorSpec):
        self.bucket = spec.option("bucket")
        if not self.bucket:
            raise ConfigError("An S3 connector needs the bucket: set the option bucket.")
        prefix = str(spec.option("prefix", "")).lstrip("/")
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.region = spec.option("region", "us-east-1")
        self.endpoint_url = spec.option("endpoint_url")
        self.access_key_id = spec.option("access_key_id")
        self.auth = str(spec.option("auth", "keys" if self.access_key_id else "default")).lower()
        if self.auth not in ("keys", "default", "anonymous"):
            raise ConfigError(f"auth must be keys, default or anonymous, not '{self.auth}'.")
        if self.auth == "keys" and not (self.access_key_id and spec.password):
            raise ConfigError("Key authentication needs access_key_id and the secret access key (the password).",
                              hint="Enter the secret access key as the connector's password, or clear "
                                   "access_key_id to use the AWS default credentials.")
        self._secret = spec.password
        self._timeouts = (Timeouts.given(spec.options, "connect", 10), Timeouts.given(spec.options, "read", 60))
        self.where = f"s3://{self.bucket}/{self.prefix}"
        self.root_name = self.prefix.rstrip("/").rsplit("/", 1)[-1] or self.bucket
        self._client = None

    @property
    def _endpoint(self) -> str:
        return self.endpoint_url or f"S3 in {self.region}"

    def client(self):
        if self._client is None:
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config

            config = Config(
                connect_timeout=self._timeouts[0], read_timeout=self._timeouts[1], retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path"} if self.endpoint_url else {},
                signature_version=UNSIGNED if self.auth == "anonymous" else None,
            )
            keys = {"aws_access_key_id": self.access_key_id, "aws_secret_access_key": self._secret} \
                if self.auth == "keys" else {}
            with _SESSION_LOCK:  # a session is not thread-safe; its loaded models are worth sharing
                global _SESSION
                if _SESSION is None:
                    _SESSION = boto3.session.Session()
                self._client = _SESSION.client("s3", region_name=self.region, endpoint_url=self.endpoint_url,
                                               config=config, **keys)
        return self._client

    @contextlib.contextmanager
    def errors(self, what: str):
        from botocore import exceptions as bx

        try:
            yield
        except EsgError:
            raise
        except bx.ClientError as exc:
            raise self._client_error(exc, what) from exc
        except (bx.NoCredentialsError, bx.PartialCredentialsError) as exc:
            raise AuthenticationFailed(
                f"{what}: no AWS credentials were found.",
                hint="Set access_key_id and enter the secret access key as the password, or configure the "
                     "AWS default credentials (environment, profile or role).") from exc
        except (bx.EndpointConnectionError, bx.ConnectTimeoutError) as exc:
            raise SourceUnreachable(f"{what}: {self._endpoint} cannot be reached.",
                                    hint="Check endpoint_url and region, the network connection and any "
                                         "proxy or firewall.") from exc
        except (bx.ReadTimeoutError, bx.ConnectionClosedError, bx.ResponseStreamingError,
                bx.IncompleteReadError, bx.ConnectionError, ConnectionError, TimeoutError) as exc:
            raise TransientSourceError(f"{what}: the connection to {self._endpoint} was lost "
                                       f"({type(exc).__name__}).") from exc
        except bx.ParamValidationError as exc:
            raise ConfigError(f"{what}: {str(exc).splitlines()[0]}") from exc
        except bx.BotoCoreError as exc:
            raise SourceError(f"{what} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc

    def _client_error(self, exc, what: str) -> EsgError:
        error = exc.response.get("Error", {}) or {}
        code = str(error.get("Code") or "")
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        message = str(error.get("Message") or "").splitlines()[0] if error.get("Message") else code
        if code in _AUTH_CODES:
            return AuthenticationFailed(
                f"{what}: S3 refused the access key '{self.access_key_id or '(default credentials)'}' ({message}).",
                code=code, hint="Check access_key_id and the secret access key (Edit connector, then Test connection).")
        if code == "NoSuchBucket":
            return DatabaseMissing(f"{what}: the bucket '{self.bucket}' does not exist at {self._endpoint}.", code=code,
                                   hint="Check the bucket name (and region or endpoint_url) in the connector settings.")
        if code in _REGION_CODES:
            return ConfigError(f"{what}: the bucket '{self.bucket}' is in another region ({message}).", code=code,
                               hint="Set the connector's region to the bucket's region.")
        if code in _DENIED_CODES or status == 403:
            return PermissionDenied(
                f"{what}: access to s3://{self.bucket}/{self.prefix} is denied ({message}).", code=code or str(status),
                hint="Ask the account's administrator for s3:ListBucket on the bucket and s3:GetObject on the "
                     "prefix for this access key.")
        if code in _GONE_CODES:
            return TableMissing(f"{what}: the object no longer exists.", code=code)
        if code in _TRANSIENT_CODES or (status or 0) >= 500:
            if code in ("PreconditionFailed", "412"):
                return TransientSourceError(f"{what}: the object changed while it was read.", code=code)
            return TransientSourceError(f"{what}: S3 is busy or failed ({message}).", code=code)
        return SourceError(f"{what} failed: {message}", code=code or None)

    def check(self) -> None:
        found = self.client().list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        if self.prefix and not found.get("KeyCount"):
            raise DatabaseMissing(
                f"There is nothing under {self.where}: the folder (prefix) is missing or empty.",
                hint="Check the prefix in the connector settings (it is a folder: tables are its subfolders).")

    def _entry(self, key: str, size: int, modified: dt.datetime, etag: str | None) -> FileEntry:
        modified = modified.astimezone(dt.timezone.utc)
        return FileEntry(path=key, rel=key[len(self.prefix):], size=int(size), modified=modified, etag=etag)

    def list(self) -> list[FileEntry]:
        entries = []
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", ()):
                key = obj["Key"]
                if key.endswith("/"):
                    continue  # a folder marker
                entries.append(self._entry(key, obj["Size"], obj["LastModified"], obj.get("ETag")))
        return entries

    def stat(self, path: str) -> FileEntry | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client().head_object(Bucket=self.bucket, Key=path)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _GONE_CODES:
                return None
            raise
        return self._entry(path, head["ContentLength"], head["LastModified"], head.get("ETag"))

    def _get(self, entry: FileEntry, **kw: Any):
        if entry.etag:
            kw["IfMatch"] = entry.etag
        return self.client().get_object(Bucket=self.bucket, Key=entry.path, **kw)["Body"]

    def open(self, entry: FileEntry):
        return self._get(entry)

    def read_all(self, entry: FileEntry) -> bytes:
        body = self._get(entry)
        try:
            return body.read()
        finally:
            body.close()

    def read_tail(self, entry: FileEntry, size: int) -> bytes:
        body = self._get(entry, Range=f"bytes=-{size}")
        try:
            return body.read()
        finally:
            body.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class S3Connector(FileConnector):
    def __init__(self, spec: ConnectorSpec):
        super().__init__(spec, S3Store(spec))
