"""Azure Blob Storage: blobs under a prefix of a container as tables (azure-storage-blob).

Options: ``container`` (required), ``prefix`` (a folder: each sub-prefix is a table, see
files.py), ``account_url`` (``https://ACCOUNT.blob.core.windows.net``; not needed with a
connection string), ``auth`` (``connection_string``, ``sas``, ``account_key`` or
``anonymous``; by default told from the secret itself), plus the reading options of
files.py. The secret is the connection string, the SAS token or the account key.

A file's ``_esg_file`` is its blob name, ``_esg_modified`` its Last-Modified (whole
seconds) and ``_esg_etag`` its ETag. Blobs are read on the condition that their ETag is the
one listed, so a blob replaced while it is read is read again (a transient error,
retried) rather than mixed. Errors carry Azure's own code (AuthenticationFailed,
ContainerNotFound, AuthorizationPermissionMismatch, ...).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import re
from urllib.parse import urlparse

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

_AUTH_CODES = {"AuthenticationFailed", "InvalidAuthenticationInfo", "NoAuthenticationInformation",
               "AuthorizationFailure"}
_DENIED_CODES = {"AuthorizationPermissionMismatch", "AuthorizationResourceTypeMismatch",
                 "AuthorizationSourceIPMismatch", "AuthorizationProtocolMismatch", "AuthorizationServiceMismatch",
                 "InsufficientAccountPermissions", "AccountIsDisabled", "KeyBasedAuthenticationNotPermitted"}
_TRANSIENT_CODES = {"ServerBusy", "InternalError", "OperationTimedOut", "ConditionNotMet"}
_AUTH_MODES = ("connection_string", "sas", "account_key", "anonymous")
_SAS_SIGNATURE = re.compile(r"((?:^|[?&;\s])sig=)[^&;\s]+", re.I)


def _code(exc) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _first_line(exc) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    return _SAS_SIGNATURE.sub(r"\1***", text)  # a URL in a message may carry a SAS token


def _guess_auth(secret: str | None) -> str:
    if not secret:
        return "anonymous"
    text = secret.strip()
    if ";" in text and any(k in text for k in ("AccountKey=", "BlobEndpoint=", "SharedAccessSignature=",
                                                "AccountName=", "UseDevelopmentStorage=")):
        return "connection_string"
    if "sig=" in text:
        return "sas"
    return "account_key"


class _Chunks(io.RawIOBase):
    """A blob's download as a sequential stream."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._rest:
            self._rest = next(self._chunks, None)
            if self._rest is None:
                self._rest = b""
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


class AzureBlobStore(FileStore):
    def __init__(self, spec: ConnectorSpec):
        self.container = spec.option("container")
        self._timeouts = (Timeouts.given(spec.options, "connect", 10), Timeouts.given(spec.options, "read", 60))
        if not self.container:
            raise ConfigError("An Azure Blob connector needs the container: set the option container.")
        prefix = str(spec.option("prefix", "")).lstrip("/")
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.account_url = spec.option("account_url")
        self._secret = spec.password
        self.auth = str(spec.option("auth") or _guess_auth(self._secret)).lower()
        if self.auth not in _AUTH_MODES:
            raise ConfigError(f"auth must be one of {', '.join(_AUTH_MODES)}, not '{self.auth}'.")
        if self.auth != "anonymous" and not self._secret:
            raise ConfigError(f"The {self.auth.replace('_', ' ')} is missing: enter it as the connector's password.")
        if self.auth != "connection_string" and not self.account_url:
            raise ConfigError("Set account_url (https://ACCOUNT.blob.core.windows.net) for SAS, account key or "
                              "anonymous access; a connection string names it itself.")
        self.where = f"{(self.account_url or 'azure:').rstrip('/')}/{self.container}/{self.prefix}"
        self.root_name = self.prefix.rstrip("/").rsplit("/", 1)[-1] or self.container
        self._service = None

    def _account_name(self) -> str:
        url = urlparse(self.account_url)
        host = url.hostname or ""
        if ".blob." in host:
            return host.split(".", 1)[0]
        return url.path.strip("/").split("/", 1)[0]  # emulator style: http://host:port/ACCOUNT

    def service(self):
        if self._service is None:
            from azure.storage.blob import BlobServiceClient

            # a request is retried twice, soon (the engine retries transient errors itself);
            # a refused connection is not retried here at all
            kw = {"retry_total": 2, "retry_connect": 0, "initial_backoff": 1, "increment_base": 2,
                  "connection_timeout": self._timeouts[0], "read_timeout": self._timeouts[1]}
            try:
                if self.auth == "connection_string":
                    self._service = BlobServiceClient.from_connection_string(self._secret.strip(), **kw)
                    # the service URL of a SAS connection string carries the token: not in messages
                    account = urlparse(self._service.url)._replace(query="").geturl().rstrip("/")
                    self.where = f"{account}/{self.container}/{self.prefix}"
                elif self.auth == "sas":
                    self._service = BlobServiceClient(self.account_url, credential=self._secret.strip().lstrip("?"), **kw)
                elif self.auth == "account_key":
                    credential = {"account_name": self._account_name(), "account_key": self._secret.strip()}
                    self._service = BlobServiceClient(self.account_url, credential=credential, **kw)
                else:
                    self._service = BlobServiceClient(self.account_url, **kw)
            except ValueError as exc:  # words of our own: the SDK's may quote the secret
                raise ConfigError(f"The {self.auth.replace('_', ' ')} or account_url is not valid.",
                                  hint="Copy the connection string, SAS token or key again from the Azure "
                                       "portal (Storage account, Access keys or Shared access signature).") from exc
        return self._service

    def _container(self):
        return self.service().get_container_client(self.container)

    @property
    def _account(self) -> str:
        return self.where.rsplit(f"/{self.container}/", 1)[0]

    @contextlib.contextmanager
    def errors(self, what: str):
        from azure.core import exceptions as ax

        try:
            yield
        except EsgError:
            raise
        except ax.ResourceNotFoundError as exc:
            code = _code(exc)
            if code == "BlobNotFound":
                raise TableMissing(f"{what}: the blob no longer exists.", code=code) from exc
            raise DatabaseMissing(f"{what}: the container '{self.container}' does not exist in {self._account}.",
                                  code=code or None,
                                  hint="Check the container name and the account in the connector settings.") from exc
        except ax.HttpResponseError as exc:
            raise self._http_error(exc, what) from exc
        except ax.ServiceRequestError as exc:
            raise SourceUnreachable(f"{what}: {self._account} cannot be reached.",
                                    hint="Check account_url (or the connection string's endpoint), the network "
                                         "connection and any proxy or firewall.") from exc
        except (ax.ServiceResponseError, ConnectionError, TimeoutError) as exc:
            raise TransientSourceError(f"{what}: the connection to {self._account} was lost "
                                       f"({type(exc).__name__}).") from exc
        except ax.ClientAuthenticationError as exc:
            raise AuthenticationFailed(f"{what}: Azure refused the credentials.", code=_code(exc) or None) from exc
        except ax.AzureError as exc:
            raise SourceError(f"{what} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
        except (ValueError, TypeError) as exc:  # e.g. an account key that is not base64
            if "padding" in str(exc).lower() or "base64" in str(exc).lower():
                raise AuthenticationFailed(f"{what}: the account key is not a valid key (not base64).") from exc
            raise

    def _http_error(self, exc, what: str) -> EsgError:
        code = _code(exc)
        status = getattr(exc, "status_code", None)
        message = _first_line(exc)
        # Azurite says AuthorizationFailure where Azure says AuthenticationFailed; Azure uses
        # AuthorizationFailure for network rules too, hence the words
        if code in _AUTH_CODES and (code != "AuthorizationFailure" or "authenticate" in message.lower()):
            return AuthenticationFailed(
                f"{what}: Azure refused the {self.auth.replace('_', ' ')} ({message}).", code=code,
                hint="Check the connection string, SAS token or account key (Edit connector, then Test connection); "
                     "a SAS token may have expired.")
        if code in _DENIED_CODES or code == "AuthorizationFailure" or status == 403:
            return PermissionDenied(
                f"{what}: access to {self.container}/{self.prefix} is denied ({message}).", code=code or str(status),
                hint="The SAS token or role needs read and list permission on the container.")
        if code in _TRANSIENT_CODES or (status or 0) >= 500 or status == 412:
            if code == "ConditionNotMet" or status == 412:
                return TransientSourceError(f"{what}: the blob changed while it was read.", code=code or None)
            return TransientSourceError(f"{what}: Azure is busy or failed ({message}).", code=code or None)
        return SourceError(f"{what} failed: {message}", code=code or None)

    def check(self) -> None:
        pages = self._container().list_blobs(name_starts_with=self.prefix or None, results_per_page=1).by_page()
        first = next(pages, None)
        if self.prefix and (first is None or not list(first)):
            raise DatabaseMissing(
                f"There is nothing under {self.where}: the folder (prefix) is missing or empty.",
                hint="Check the prefix in the connector settings (it is a folder: tables are its subfolders).")

    def _entry(self, name: str, size: int, modified: dt.datetime, etag: str | None) -> FileEntry:
        return FileEntry(path=name, rel=name[len(self.prefix):], size=int(size or 0),
                         modified=modified.astimezone(dt.timezone.utc), etag=etag)

    def list(self) -> list[FileEntry]:
        entries = []
        for blob in self._container().list_blobs(name_starts_with=self.prefix or None):
            if blob.name.endswith("/") or (blob.metadata or {}).get("hdi_isfolder"):
                continue  # a folder of a hierarchical namespace
            entries.append(self._entry(blob.name, blob.size, blob.last_modified, blob.etag))
        return entries

    def stat(self, path: str) -> FileEntry | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self._container().get_blob_client(path).get_blob_properties()
        except ResourceNotFoundError as exc:
            if _code(exc) in ("BlobNotFound", ""):
                return None
            raise
        return self._entry(path, props.size, props.last_modified, props.etag)

    def _download(self, entry: FileEntry, **kw):
        from azure.core import MatchConditions

        if entry.etag:
            kw.update(etag=entry.etag, match_condition=MatchConditions.IfNotModified)
        return self._container().get_blob_client(entry.path).download_blob(max_concurrency=1, **kw)

    def open(self, entry: FileEntry):
        return io.BufferedReader(_Chunks(self._download(entry).chunks()), buffer_size=1 << 20)

    def read_all(self, entry: FileEntry) -> bytes:
        return self._download(entry).readall()

    def read_tail(self, entry: FileEntry, size: int) -> bytes:
        start = max(0, entry.size - size)
        return self._download(entry, offset=start, length=entry.size - start).readall()

    def close(self) -> None:
        if self._service is not None:
            self._service.close()
            self._service = None


class AzureBlobConnector(FileConnector):
    def __init__(self, spec: ConnectorSpec):
        super().__init__(spec, AzureBlobStore(spec))
