"""Alerts for failed and partially failed syncs: what went wrong, and a webhook to tell.

An :class:`Alert` names the connector, the run, the error and the chunks that failed
(read from the run's chunk ledger). It never carries a secret: error texts from sources
can echo connection strings, so every text is scrubbed (``user:pass@`` in URLs,
``password=``/``token=``-style fragments, and the connector's own keyring secret when
it appears verbatim), and the connector's settings are never included.

The webhook is an optional JSON POST per workspace and organization. Its URL often
embeds a token (Slack, Teams, PagerDuty) in its path, query or user part, so it lives in
the OS keyring like every other secret, keyed by a stable identity of the workspace.
Messages, logs and audit entries show its scheme, host and port and a redacted path
(`describe_url`); what a receiver answers is shown shortened and with every part of the
URL that may be secret removed (a 404 page often echoes the path). A URL with a user
part (https://user:token@host/...) is sent with the user part as HTTP basic
authentication: never as part of the host name, which would go into a DNS query.

No Qt here: the desktop app shows the alert as a notification and dispatches the
webhook from a worker thread; ``schedule run-due`` calls :func:`dispatch` directly.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from esg_workbench.core.errors import ConfigError, EsgError
from esg_workbench.core.keys import decode_key
from esg_workbench.core.specs import ChunkRange, ChunkStatus, SyncStatus
from esg_workbench.workspace.database import Workspace

DEFAULT_RETRY_DELAYS = (1.0, 2.0, 4.0)
#: an alert lists at most this many failed chunks (the count says how many there were)
MAX_CHUNKS_IN_ALERT = 50
MAX_ERROR_CHARS = 2000
USER_AGENT = "ESG-Workbench-Alerts/1"


class AlertDeliveryError(EsgError):
    hint = ("Check that the webhook URL is right and its receiver is up "
            "(esg-workbench alerts show, then alerts test).")


# --- scrubbing secrets ----------------------------------------------------------------

# scheme://user:password@host -> scheme://user:***@host (the password may hold / or :)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/\s@]*):(?P<secret>[^\s@]*)@")
# user:password@host without a scheme (as in some driver messages)
_BARE_USERINFO = re.compile(r"(?P<user>\b[A-Za-z0-9._~%+-]+):(?P<secret>[^\s@/:'\"]+)@(?=[A-Za-z0-9\[])")
# password=..., pwd: ..., "token": "...", AccountKey=...; value up to a separator
_KEYWORDS = (r"pass(?:word|wd)?|pwd|secret|client[_-]?secret|token|access[_-]?token|refresh[_-]?token|"
             r"api[_-]?key|apikey|access[_-]?key|secret[_-]?key|account[_-]?key|shared[_-]?access[_-]?key|"
             r"sharedaccesssignature|sig|signature|private[_-]?key")
_KEY_VALUE = re.compile(
    rf"(?P<key>\b(?:{_KEYWORDS})\b[\"']?\s*[=:]\s*)(?P<quote>[\"']?)(?P<secret>[^\s;&,\"'}}]+)",
    re.IGNORECASE)
_BEARER = re.compile(r"(?P<key>\b(?:bearer|basic)\s+)(?P<secret>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)
MASK = "***"
#: a host name or IP address (IPv6 without its brackets): nothing else may reach the resolver
_HOST_NAME = re.compile(r"[\w.-]+|[0-9A-Fa-f:.]+(%[\w]+)?")


def scrub(text: str | None, secrets: tuple[str, ...] = ()) -> str | None:
    """The text with passwords, tokens and keys masked. `secrets` are known secret values
    (a connector's keyring entry) masked wherever they appear."""
    if text is None:
        return None
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _BARE_USERINFO.sub(lambda m: f"{m['user']}:{MASK}@", text)
    text = _KEY_VALUE.sub(lambda m: f"{m['key']}{m['quote']}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m['key']}{MASK}", text)
    return text


def _shorten(text: str | None, limit: int = MAX_ERROR_CHARS) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


# --- the alert ------------------------------------------------------------------------

@dataclass
class Alert:
    kind: str  # "failed" | "partial_success" ("test" for alerts test)
    connector: str
    run_id: int
    status: str
    error: str | None
    failed_chunks: list[dict[str, Any]] = field(default_factory=list)  # stream, range, attempts, error
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    workspace: str = ""  # display URL, never a password
    organization: str = "default"
    failed_chunks_total: int | None = None  # when more chunks failed than are listed

    def title(self) -> str:
        if self.kind == "test":
            return "ESG Workbench test alert"
        what = "failed" if self.kind == "failed" else "partially failed"
        return f"Sync of '{self.connector}' {what}"

    def text(self) -> str:
        """A few plain lines: what failed, why, and which chunks wait for a retry."""
        total = self.failed_chunks_total if self.failed_chunks_total is not None else len(self.failed_chunks)
        lines = [f"{self.title()} (run {self.run_id})."]
        if self.error:
            lines.append(f"Error: {self.error}")
        if total:
            lines.append(f"Failed chunks ({total}), retry them with 'Retry failed chunks' "
                         f"or: esg-workbench sync {self.connector} --retry-failed")
            for chunk in self.failed_chunks[:5]:
                lines.append(f"  {chunk['stream']} {chunk['range']}, {chunk['attempts']} attempt(s)")
            if total > 5:
                lines.append(f"  … and {total - 5} more")
        lines.append(f"Workspace: {self.workspace}" + (f" (organization {self.organization})"
                                                        if self.organization != "default" else ""))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The webhook payload. `text` makes it readable as is by Slack-style receivers."""
        return {
            "event": f"sync.{self.kind}",
            "title": self.title(),
            "text": self.text(),
            "connector": self.connector,
            "run_id": self.run_id,
            "status": self.status,
            "error": self.error,
            "failed_chunks": self.failed_chunks,
            "failed_chunks_total": (self.failed_chunks_total if self.failed_chunks_total is not None
                                    else len(self.failed_chunks)),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "workspace": self.workspace,
            "organization": self.organization,
            "app": "ESG Workbench",
        }


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # the workspace keeps naive UTC
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.isoformat()


def alert_for_run(ws: Workspace, connector_name: str, result) -> Alert | None:
    """The alert for a finished run (a `SyncResult`), or None when it needs none
    (success, cancelled). Failed chunks come from the chunk ledger of that run."""
    status = SyncStatus(result.status)
    if status not in (SyncStatus.FAILED, SyncStatus.PARTIAL_SUCCESS):
        return None
    from esg_workbench.workspace import connectors_store
    from esg_workbench.workspace.schema import connector_sync_chunks as chunks
    from esg_workbench.workspace.schema import connector_sync_logs as logs

    org = ws.organization_id
    with ws.read() as conn:
        run = conn.execute(sa.select(logs.c.connector_id, logs.c.started_at, logs.c.finished_at, logs.c.error)
                           .where(logs.c.id == result.run_id, logs.c.organization_id == org)).first()
        record = None
        if run is not None:
            try:
                record = connectors_store.get(ws, conn, run.connector_id)
            except EsgError:  # removed since: the alert still names it
                record = None
        where = (chunks.c.last_run_id == result.run_id, chunks.c.organization_id == org,
                 chunks.c.status == ChunkStatus.FAILED.value)
        total = conn.execute(sa.select(sa.func.count()).select_from(chunks).where(*where)).scalar_one()
        rows = conn.execute(sa.select(chunks).where(*where).order_by(chunks.c.stream, chunks.c.seq)
                            .limit(MAX_CHUNKS_IN_ALERT)).all()
    secrets = _connector_secrets(record)
    failed = []
    for row in rows:
        bounds = ChunkRange(decode_key(json.loads(row.lower_bound)), decode_key(json.loads(row.upper_bound)),
                            row.null_cursor)
        failed.append({"stream": row.stream, "range": bounds.describe(), "attempts": row.attempts,
                       "error": _shorten(scrub(row.error, secrets))})
    error = result.error if result.error is not None else (run.error if run is not None else None)
    return Alert(
        kind=status.value, connector=connector_name, run_id=result.run_id, status=status.value,
        error=_shorten(scrub(error, secrets)), failed_chunks=failed,
        started_at=run.started_at if run is not None else None,
        finished_at=run.finished_at if run is not None else None,
        workspace=ws.display_url, organization=org,
        failed_chunks_total=int(total),
    )


def sample_alert(ws: Workspace) -> Alert:
    """The alert `alerts test` sends: shaped like a real one, marked as a test so a
    receiver that routes alerts can tell it apart (event "sync.test")."""
    from esg_workbench.workspace.database import utcnow

    now = utcnow()
    return Alert(
        kind="test", connector="example-connector", run_id=0, status="test",
        error="This is a test alert from ESG Workbench: no sync failed. A real alert names the connector, "
              "the run, the failed chunks and the error.",
        failed_chunks=[{"stream": "public.example", "range": "[2024-01-01 .. 2024-02-01)", "attempts": 4,
                        "error": "example: connection lost"}],
        started_at=now, finished_at=now, workspace=ws.display_url, organization=ws.organization_id,
        failed_chunks_total=1)


def _connector_secrets(record) -> tuple[str, ...]:
    """The connector's keyring secret, to mask it should a source have echoed it.
    Without a readable keyring the pattern scrubbing still applies."""
    from esg_workbench.sync.engine import PASSWORD_MARKER

    if record is None or not record.config.get(PASSWORD_MARKER):
        return ()
    try:
        from esg_workbench import credentials

        secret = credentials.load_secret(record.id)
    except Exception:
        return ()
    return (secret,) if secret else ()


# --- the webhook URL (in the keyring) --------------------------------------------------

def workspace_identity(ws: Workspace) -> str:
    """A stable identity of the workspace: from the moment it was created (kept in
    workspace_meta since the first schema), so it survives moving the DuckDB file or
    renaming the PostgreSQL host, and needs no write."""
    from esg_workbench.workspace.schema import workspace_meta as meta

    with ws.read() as conn:
        created = conn.execute(sa.select(meta.c.value).where(meta.c.key == "created_at")).scalar()
    basis = created or ws.display_url
    return hashlib.sha256(basis.encode()).hexdigest()[:20]


def _keyring_key(ws: Workspace) -> str:
    return f"webhook:{workspace_identity(ws)}:{ws.organization_id}"


def validate_webhook_url(url: str) -> str:
    """The URL stripped, or ConfigError saying what is wrong (without echoing it: it may
    hold a token)."""
    url = (url or "").strip()
    hint = "Give the full http:// or https:// address of the webhook, e.g. https://hooks.example.com/esg/T0K3N"
    if not url:
        raise ConfigError("The webhook URL is empty.", hint=hint)
    if any(ch.isspace() for ch in url):
        raise ConfigError("The webhook URL contains spaces.", hint=hint)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        # name the scheme only when it looks like one: the start of a pasted token is no scheme
        shown = f"it starts with '{parts.scheme}:'" if parts.scheme.isalpha() and len(parts.scheme) <= 10 \
            else "it has no scheme"
        raise ConfigError(f"The webhook URL must start with http:// or https:// ({shown}).", hint=hint)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ConfigError("The webhook URL has an invalid port.", hint=hint) from None
    if not host:
        raise ConfigError("The webhook URL has no host name.", hint=hint)
    if not _HOST_NAME.fullmatch(host):
        # e.g. an unencoded '/' or '#' in a password moves the rest of it into the host name,
        # which would go to the DNS resolver: refused before any network call
        raise ConfigError("The webhook URL's host name is not valid (if it has a user name and password before "
                          "'@', write '/', '#', '?' and '@' in them as %2F, %23, %3F and %40).", hint=hint)
    return url


def describe_url(url: str) -> str:
    """scheme://host[:port]/*** of a webhook: enough to recognise it, nothing of the token
    in its path, query or user part ('/***' stands for whatever path and query it has)."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{_host(parts)}" + (f":{port}" if port else "") + \
        ("/" + MASK if parts.path.strip("/") or parts.query or parts.fragment else "")


def _host(parts: urllib.parse.SplitResult) -> str:
    host = parts.hostname or "?"
    return f"[{host}]" if ":" in host else host


def _url_secrets(url: str) -> list[str]:
    """Every piece of the URL that may be (or hold) a secret, as sent and percent-decoded:
    the URL itself, its path and each path segment, its query and each query value, its
    fragment, its user part. Longest first, so a longer piece is masked whole."""
    parts = urllib.parse.urlsplit(url)
    pieces = {url, parts.path, parts.query, parts.fragment, parts.netloc.rpartition("@")[0],
              parts.username or "", parts.password or ""}
    pieces.update(parts.path.split("/"))
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        pieces.update((name, value))
    pieces.update(urllib.parse.unquote(p) for p in list(pieces))
    pieces.update(urllib.parse.quote(p, safe="") for p in list(pieces))
    # the host and port stay readable; pieces of 3 characters or fewer ('v1', 'api') say nothing
    visible = {parts.hostname or "", str(parts.port or ""), parts.scheme}
    return sorted((p for p in pieces if len(p) > 3 and p not in visible), key=len, reverse=True)


def redact(text: str, url: str) -> str:
    """`text` (a receiver's answer, an error) without any secret piece of `url` in it,
    and with the usual password and token patterns masked too."""
    for piece in _url_secrets(url):
        text = text.replace(piece, MASK)
    return scrub(text) or ""


def _request_target(url: str) -> tuple[str, str | None]:
    """(the URL without its user part, the Authorization header for it or None). A user
    part is credentials: sent as HTTP basic authentication, never to the resolver."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    netloc = _host(parts) + (f":{parts.port}" if parts.port else "")
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), f"Basic {token}"


def webhook_url(ws: Workspace) -> str | None:
    """The workspace's (and organization's) webhook URL, or None when none is set."""
    from esg_workbench import credentials

    return credentials.load_secret(_keyring_key(ws))


def webhook_was_set(ws: Workspace) -> bool:
    """Whether the last webhook change this organization's audit chain records is a set
    (not a clear): answers "is there a webhook?" without the keyring."""
    import sqlalchemy as sa

    from esg_workbench.workspace.schema import esg_ingestion_audit as audit

    with ws.read() as conn:
        last = conn.execute(
            sa.select(audit.c.action)
            .where(audit.c.organization_id == ws.organization_id,
                   audit.c.action.in_(("alert_webhook_set", "alert_webhook_cleared")))
            .order_by(audit.c.id.desc()).limit(1)).scalar()
    return last == "alert_webhook_set"


def set_webhook_url(ws: Workspace, url: str | None) -> None:
    """Set (validated) or clear (None or "") the webhook of this workspace and organization."""
    from esg_workbench import credentials
    from esg_workbench.audit import chain

    key = _keyring_key(ws)
    if url is None or not url.strip():
        credentials.delete_secret(key)
        with ws.transaction() as conn:
            chain.append(ws, conn, "alert_webhook_cleared", metadata={})
        return
    url = validate_webhook_url(url)
    credentials.store_secret(key, url)
    with ws.transaction() as conn:
        chain.append(ws, conn, "alert_webhook_set", metadata={"host": describe_url(url)})


# --- delivery ---------------------------------------------------------------------------

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would turn the POST into a GET (and may leave the token's host):
    report it instead of following it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


class _Retryable(Exception):
    pass


def send_webhook(url: str, alert: Alert, *, retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS,
                 timeout: float = 10.0) -> None:
    """POST the alert as JSON. Connection errors, timeouts, 5xx and 429 are retried after
    each of `retry_delays`; another 4xx or a redirect is not. Raises AlertDeliveryError
    naming the status or error, and the webhook's host only."""
    url = validate_webhook_url(url)
    where = describe_url(url)
    body = json.dumps(alert.to_json(), ensure_ascii=False).encode("utf-8")
    attempts = 1 + len(retry_delays)
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            _post_once(url, body, timeout)
            return
        except _Retryable as exc:
            last = redact(str(exc), url)
        except AlertDeliveryError as exc:
            raise AlertDeliveryError(f"The webhook at {where} refused the alert: {redact(exc.message, url)} "
                                     f"(not retried).", hint=_hint_for(exc.message)) from None
        if attempt < attempts:
            time.sleep(retry_delays[attempt - 1])
    raise AlertDeliveryError(
        f"The alert could not be delivered to the webhook at {where} after {attempts} attempt(s): {last}.")


def _post_once(url: str, body: bytes, timeout: float) -> None:
    target, authorization = _request_target(url)
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT}
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(target, data=body, method="POST", headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(65536)
            return
    except urllib.error.HTTPError as exc:
        status = f"HTTP {exc.code}" + (f" {exc.reason}" if exc.reason else "")
        detail = _response_excerpt(exc, url)
        if exc.code >= 500 or exc.code == 429:
            raise _Retryable(status + detail) from None
        if 300 <= exc.code < 400:
            raise AlertDeliveryError(f"{status} (a redirect; give the final address of the webhook)") from None
        raise AlertDeliveryError(status + detail) from None
    except urllib.error.URLError as exc:
        raise _Retryable(_network_error(exc.reason)) from None
    except (TimeoutError, socket.timeout):
        raise _Retryable(f"no answer within {timeout:g} s") from None
    except (ConnectionError, OSError) as exc:
        raise _Retryable(_network_error(exc)) from None
    except Exception as exc:  # e.g. http.client.InvalidURL, whose text quotes the URL
        raise AlertDeliveryError(f"the request could not be made ({type(exc).__name__})") from None


def _network_error(reason: Any) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is the receiver running?)"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "no answer in time"
    if isinstance(reason, socket.gaierror):
        return "the host name could not be resolved"
    if isinstance(reason, ConnectionResetError):
        return "the connection was reset"
    # a reason's text names the OS error, never the URL
    text = getattr(reason, "strerror", None) or str(reason)
    return f"{type(reason).__name__}: {text}" if not isinstance(reason, str) else reason


def _response_excerpt(exc: urllib.error.HTTPError, url: str) -> str:
    """A short excerpt of the receiver's answer, which often says what it disliked, with
    the URL's secret pieces removed (a 404 page often echoes the path, token and all)."""
    try:
        text = exc.read(2000).decode("utf-8", "replace")
    except Exception:
        return ""
    text = redact(" ".join(text.split()), url)
    return f" ({_shorten(text, 200)})" if text else ""


def _hint_for(message: str) -> str:
    if message.startswith(("HTTP 401", "HTTP 403")):
        return "The receiver refused the credentials in the URL: copy the webhook URL again and set it."
    if message.startswith("HTTP 404"):
        return "The receiver does not know this address: copy the webhook URL again and set it."
    return AlertDeliveryError.hint


def retry_delays_from_env() -> tuple[float, ...]:
    """ESG_WORKBENCH_ALERT_RETRY_DELAYS="0.01,0.01" shortens the backoff (tests)."""
    text = os.environ.get("ESG_WORKBENCH_ALERT_RETRY_DELAYS")
    if not text:
        return DEFAULT_RETRY_DELAYS
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        return DEFAULT_RETRY_DELAYS


def dispatch(ws: Workspace, alert: Alert, *, retry_delays: tuple[float, ...] | None = None,
             timeout: float = 10.0) -> str | None:
    """Send the alert to the configured webhook, if any. Returns an error text, or None
    when it was delivered or no webhook is set (or can be: no system keyring). Never
    raises; records alert_sent or alert_failed in the audit chain (without the URL)."""
    if retry_delays is None:
        retry_delays = retry_delays_from_env()
    from esg_workbench import credentials

    try:
        credentials.check_backend()
    except Exception:
        # no usable keyring on this machine: no webhook can have been set here either
        return None
    try:
        url = webhook_url(ws)
    except Exception as exc:
        error = f"The webhook URL could not be read: {_describe(exc)}"
        _audit(ws, "alert_failed", alert, error)
        return error
    if not url:
        return None
    error = None
    try:
        send_webhook(url, alert, retry_delays=retry_delays, timeout=timeout)
    except Exception as exc:
        error = redact(_describe(exc), url)  # (send_webhook's own messages have none of the URL already)
    _audit(ws, "alert_failed" if error else "alert_sent", alert, error)
    return error


def _describe(exc: Exception) -> str:
    return exc.describe() if isinstance(exc, EsgError) else f"{type(exc).__name__}: {exc}"


def _audit(ws: Workspace, action: str, alert: Alert, error: str | None) -> None:
    from esg_workbench.audit import chain

    metadata = {"connector": alert.connector, "run_id": alert.run_id, "kind": alert.kind,
                "failed_chunks": alert.failed_chunks_total if alert.failed_chunks_total is not None
                else len(alert.failed_chunks)}
    if error:
        metadata["error"] = error
    try:
        with ws.transaction() as conn:
            chain.append(ws, conn, action, metadata=metadata)
    except Exception:  # the alert's fate must not depend on the audit write (e.g. a closing workspace)
        pass
