"""Alerts for failed and partial syncs: the payload (from real runs against PostgreSQL),
scrubbing of secrets, the webhook URL in the keyring, and delivery to a real local HTTP
server with retries and clear errors."""

from __future__ import annotations

import dataclasses
import json
import socket
import time

import pytest

from tests.conftest import PG_HOST, PG_PORT, PG_USER, free_port
from tests.fault_proxy import FaultProxy
from tests.webhook_receiver import WebhookReceiver

from esg_workbench import alerts
from esg_workbench.alerts import Alert, AlertDeliveryError, send_webhook
from esg_workbench.core.errors import ConfigError, KeyringUnavailable

FAST = (0.01, 0.01, 0.01)
FAST_ENGINE_RETRIES = (0.02, 0.02, 0.02)
PASSWORD = "pw-Xq7-never-shown"


def sample_alert(**changes) -> Alert:
    alert = Alert(kind="partial_success", connector="erp", run_id=7, status="partial_success",
                  error="public.t: 2 chunk(s) failed",
                  failed_chunks=[{"stream": "public.t", "range": "[1 .. 100)", "attempts": 4, "error": "lost"}],
                  workspace="duckdb:////tmp/w.duckdb", organization="default")
    return dataclasses.replace(alert, **changes)


@pytest.fixture
def ws(tmp_path):
    from esg_workbench.workspace import open_workspace

    workspace = open_workspace(str(tmp_path / "ws.duckdb"))
    yield workspace
    workspace.close()


def add_pg(ws, database: str, port: int = PG_PORT, password: str | None = None, **options):
    from esg_workbench.sync import operations

    return operations.add_connector(ws, "pg", "postgres", {
        "host": PG_HOST, "port": port, "database": database, "username": PG_USER, "schema": "public",
        **options}, password=password)


def run_sync(ws, on_progress=None, **request):
    from esg_workbench.sync.engine import SyncEngine, SyncRequest

    return SyncEngine(ws, retry_delays=FAST_ENGINE_RETRIES, on_progress=on_progress).run(SyncRequest("pg", **request))


def audit_actions(ws) -> list[dict]:
    from esg_workbench.audit import chain

    return [e for e in chain.entries(ws) if e["action"].startswith("alert")]


# --- delivery to a local HTTP server ----------------------------------------------------

def test_webhook_posts_the_alert_as_json():
    with WebhookReceiver() as hook:
        send_webhook(hook.url, sample_alert(), retry_delays=FAST)
        [(path, headers, body)] = hook.requests
    assert path.startswith("/hook/T0KEN-abc123")
    assert headers["Content-Type"].startswith("application/json")
    assert body["event"] == "sync.partial_success"
    assert body["connector"] == "erp" and body["run_id"] == 7 and body["status"] == "partial_success"
    assert body["failed_chunks"] == sample_alert().failed_chunks and body["failed_chunks_total"] == 1
    assert body["title"] == "Sync of 'erp' partially failed"
    assert "run 7" in body["text"] and "[1 .. 100)" in body["text"]


def test_webhook_retries_server_errors_and_delivers():
    with WebhookReceiver(statuses=[500, 503]) as hook:
        send_webhook(hook.url, sample_alert(), retry_delays=FAST)
        assert len(hook.requests) == 3
        assert hook.bodies[0] == hook.bodies[2]  # the same alert every time


def test_webhook_retries_429_too_many_requests():
    with WebhookReceiver(statuses=[429]) as hook:
        send_webhook(hook.url, sample_alert(), retry_delays=FAST)
        assert len(hook.requests) == 2


def test_webhook_always_failing_raises_a_clear_error_after_the_retries():
    with WebhookReceiver(default=500) as hook:
        started = time.monotonic()
        with pytest.raises(AlertDeliveryError) as err:
            send_webhook(hook.url, sample_alert(), retry_delays=(0.05, 0.05, 0.05))
        assert len(hook.requests) == 4  # 1 attempt + 3 retries
        assert time.monotonic() - started >= 0.15  # the delays were waited
    message = err.value.describe()
    assert f"http://127.0.0.1:{hook.port}" in message
    assert "after 4 attempt(s)" in message and "HTTP 500" in message
    assert "receiver says no" in message  # what the receiver answered
    assert "T0KEN" not in message and "s3cr3t-query" not in message  # never the URL's token
    assert "What to do" in message


def test_webhook_client_error_is_not_retried():
    with WebhookReceiver(default=400) as hook:
        with pytest.raises(AlertDeliveryError) as err:
            send_webhook(hook.url, sample_alert(), retry_delays=FAST)
        assert len(hook.requests) == 1
    assert "HTTP 400" in err.value.message and "not retried" in err.value.message
    assert "T0KEN" not in err.value.describe()


def test_webhook_redirect_is_not_followed():
    with WebhookReceiver(default=307) as hook:
        with pytest.raises(AlertDeliveryError) as err:
            send_webhook(hook.url, sample_alert(), retry_delays=FAST)
        assert len(hook.requests) == 1
    assert "HTTP 307" in err.value.message and "redirect" in err.value.message


def test_webhook_404_hints_at_the_address():
    with WebhookReceiver(default=404) as hook:
        with pytest.raises(AlertDeliveryError) as err:
            send_webhook(hook.url, sample_alert(), retry_delays=FAST)
    assert "HTTP 404" in err.value.message and "copy the webhook URL again" in err.value.hint


def test_webhook_to_an_unreachable_port_names_the_problem():
    port = free_port()
    started = time.monotonic()
    with pytest.raises(AlertDeliveryError) as err:
        send_webhook(f"http://127.0.0.1:{port}/hook?token=abc", sample_alert(), retry_delays=FAST)
    assert time.monotonic() - started < 5
    assert "connection refused" in err.value.message and "after 4 attempt(s)" in err.value.message
    assert f"127.0.0.1:{port}" in err.value.message and "token" not in err.value.message


def test_webhook_that_never_answers_times_out():
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        with pytest.raises(AlertDeliveryError) as err:
            send_webhook(f"http://127.0.0.1:{port}/x", sample_alert(), retry_delays=(0.01,), timeout=0.2)
    assert "no answer" in err.value.message and "after 2 attempt(s)" in err.value.message


@pytest.mark.parametrize("url, words", [
    ("", "empty"), ("ftp://example.com/hook", "http:// or https://"), ("hooks.example.com/x", "http:// or https://"),
    ("https:///path-only", "no host"), ("https://example.com/a b", "spaces"), ("http://example.com:99999/x", "port"),
])
def test_bad_webhook_urls_are_refused(url, words):
    with pytest.raises(ConfigError) as err:
        alerts.validate_webhook_url(url)
    assert words in err.value.message


# --- the webhook URL per workspace, in the keyring ----------------------------------------

def test_webhook_url_lives_in_the_keyring_per_workspace(tmp_path, keyring_ready):
    from esg_workbench.workspace import open_workspace

    first = open_workspace(str(tmp_path / "a.duckdb"))
    second = open_workspace(str(tmp_path / "b.duckdb"))
    try:
        assert alerts.webhook_url(first) is None
        url = "https://hooks.example.com/services/T0/B0/SECRETTOKEN"
        alerts.set_webhook_url(first, url)
        assert alerts.webhook_url(first) == url
        assert alerts.webhook_url(second) is None  # another workspace, another webhook

        with pytest.raises(ConfigError):
            alerts.set_webhook_url(first, "ftp://nope")
        assert alerts.webhook_url(first) == url  # a bad URL loses nothing
        first.close()
        moved = tmp_path / "moved.duckdb"
        (tmp_path / "a.duckdb").rename(moved)
        first = open_workspace(str(moved))
        assert alerts.webhook_url(first) == url  # the identity survives a move

        assert [e["action"] for e in audit_actions(first)] == ["alert_webhook_set"]
        for file in tmp_path.iterdir():
            assert b"SECRETTOKEN" not in file.read_bytes(), file.name
        alerts.set_webhook_url(first, None)
        assert alerts.webhook_url(first) is None
    finally:
        first.close()
        second.close()


# --- alerts from real runs -------------------------------------------------------------------

def test_partial_run_alert_lists_the_failed_chunks_and_is_dispatched(ws, pg_conn, pg_database, keyring_ready):
    pg_conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, v text, updated_at timestamptz NOT NULL)")
    pg_conn.execute("INSERT INTO t SELECT g, md5(g::text), timestamptz '2024-01-01+00' + g * interval '1 s' "
                    "FROM generate_series(1, 6000) g")
    with FaultProxy((PG_HOST, PG_PORT)) as proxy:
        record = add_pg(ws, pg_database, port=proxy.port, password=PASSWORD, chunk_size=1000,
                        cursor_field="updated_at", load_type="delta")

        def cut_after_two(event):
            if event.chunks_done >= 2 and not proxy.is_cut:
                proxy.cut()

        result = run_sync(ws, on_progress=cut_after_two)
    assert result.status.value == "partial_success", result.error
    assert alerts.alert_for_run(ws, "pg", dataclasses.replace(result, status=result.status.__class__("success"))) is None

    alert = alerts.alert_for_run(ws, "pg", result)
    from esg_workbench.workspace import sync_records

    with ws.read() as conn:
        failed = [c for c in sync_records.ledger(conn, result.run_id) if c.status == "failed"]
    assert failed and alert.kind == "partial_success" and alert.run_id == result.run_id
    assert alert.failed_chunks_total == len(failed)
    assert [(c["stream"], c["range"], c["attempts"]) for c in alert.failed_chunks] == \
        [(c.stream, c.range.describe(), 4) for c in failed]
    assert all("failed after 4 attempt(s)" in c["error"] for c in alert.failed_chunks)
    assert alert.started_at <= alert.finished_at
    assert alert.workspace == ws.display_url

    with WebhookReceiver() as hook:
        alerts.set_webhook_url(ws, hook.url)
        assert alerts.dispatch(ws, alert) is None
        [body] = hook.bodies
    assert body["run_id"] == result.run_id and body["connector"] == "pg"
    assert len(body["failed_chunks"]) == len(failed)
    assert body["started_at"].endswith("+00:00")
    text = json.dumps(body)
    assert PASSWORD not in text and record.id not in text
    assert "database" not in body and "config" not in body  # no connector settings

    [entry] = audit_actions(ws)[:1]
    assert entry["action"] == "alert_sent"
    assert json.loads(entry["metadata"]) == {"connector": "pg", "run_id": result.run_id, "kind": "partial_success",
                                             "failed_chunks": len(failed)}
    assert "T0KEN" not in entry["metadata"] and "127.0.0.1" not in entry["metadata"]


def test_failed_run_alert_scrubs_secrets_from_error_texts(ws, pg_conn, pg_database, keyring_ready):
    pg_conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
    add_pg(ws, pg_database, password=PASSWORD)
    from esg_workbench.sync import operations

    operations.discover_connector(ws, "pg")
    pg_conn.execute("DROP TABLE t")
    result = run_sync(ws)
    assert result.status.value == "failed"
    alert = alerts.alert_for_run(ws, "pg", result)
    assert alert.kind == "failed" and alert.title() == "Sync of 'pg' failed"
    assert "public.t" in alert.error

    # a source that echoes connection strings: the alert masks every form of secret
    leaky = dataclasses.replace(result, error=(
        f"could not connect to postgresql://{PG_USER}:{PASSWORD}@db.example.com:5432/erp; "
        f"dsn host=db password={PASSWORD} dbname=erp; token=abc123tok; "
        f"Server=x;Pwd=p@ss;AccountKey=Zm9vYmFy==; Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30; "
        f"echoed {PASSWORD} raw"))
    alert = alerts.alert_for_run(ws, "pg", leaky)
    text = json.dumps(alert.to_json()) + alert.text() + alert.title()
    for secret in (PASSWORD, "abc123tok", "p@ss", "Zm9vYmFy", "eyJhbGciOiJIUzI1NiJ9"):
        assert secret not in text, secret
    assert f"postgresql://{PG_USER}:***@db.example.com" in alert.error  # still says where it went


def test_dispatch_without_a_webhook_does_nothing_and_a_failing_one_is_audited(ws, keyring_ready):
    alert = sample_alert()
    assert alerts.dispatch(ws, alert) is None
    assert audit_actions(ws) == []
    with WebhookReceiver(default=502) as hook:
        alerts.set_webhook_url(ws, hook.url)
        error = alerts.dispatch(ws, alert, retry_delays=FAST)
    assert "HTTP 502" in error and "after 4 attempt(s)" in error and "T0KEN" not in error
    entry = audit_actions(ws)[0]
    assert entry["action"] == "alert_failed"
    meta = json.loads(entry["metadata"])
    assert meta["connector"] == "erp" and "HTTP 502" in meta["error"]
    assert "T0KEN" not in entry["metadata"] and "s3cr3t" not in entry["metadata"]


def test_scrub_leaves_ordinary_text_alone():
    text = "Chunk 3 [2024-01-01 00:00:00 .. 2024-02-01 00:00:00) of public.t failed after 4 attempt(s): lost"
    assert alerts.scrub(text) == text
    assert alerts.scrub("password authentication failed for user \"x\"") == "password authentication failed for user \"x\""


def test_dispatch_without_a_keyring_is_quiet_and_a_locked_one_is_reported(ws, keyring_ready, monkeypatch):
    import keyring
    from keyring.backends import fail

    from esg_workbench import credentials

    alert = sample_alert()
    with WebhookReceiver() as hook:
        alerts.set_webhook_url(ws, hook.url)
        real = keyring.get_keyring()
        keyring.set_keyring(fail.Keyring())  # no system keyring: nothing can have been set here
        try:
            assert alerts.dispatch(ws, alert, retry_delays=FAST) is None
        finally:
            keyring.set_keyring(real)
        assert hook.requests == [] and audit_actions(ws)[0]["action"] == "alert_webhook_set"

        def locked(key):
            raise KeyringUnavailable("Could not read the secret: the system keyring is locked and was not unlocked.")

        monkeypatch.setattr(credentials, "load_secret", locked)  # a keyring that exists but refuses
        error = alerts.dispatch(ws, alert, retry_delays=FAST)
    assert "could not be read" in error and "locked" in error
    assert audit_actions(ws)[0]["action"] == "alert_failed"


# --- the webhook URL's secrets never leave it (issue 11) ------------------------------------

URL_TOKEN = "T0KEN-abc123"  # the receiver's path token
QUERY_TOKEN = "s3cr3t-query"
USER_TOKEN = "us3r-T0K3N-9f8e"


def token_traces(*tokens: str) -> list[str]:
    """A token and the digests someone might log instead of it."""
    import hashlib

    traces = []
    for token in tokens:
        traces.append(token)
        traces += [hashlib.new(name, token.encode()).hexdigest() for name in ("md5", "sha1", "sha256")]
    return traces


def assert_no_trace(text: str, *tokens: str) -> None:
    for trace in token_traces(*tokens):
        assert trace not in text, (trace, text)


@pytest.fixture
def resolver(monkeypatch):
    """A local resolver stub: records every name looked up; resolves only localhost and
    127.0.0.1 (no query leaves the machine)."""
    names: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        names.append(host.decode() if isinstance(host, bytes) else str(host))
        if host not in ("localhost", "127.0.0.1", b"localhost", b"127.0.0.1"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


def test_a_404_page_echoing_the_path_shows_no_token(ws, keyring_ready, resolver, caplog):
    """Express answers an unknown path with "Cannot POST /hook/<token>": neither the
    error, nor the audit entry, nor a log line carries the token (or a hash of it)."""
    caplog.set_level("DEBUG")
    with WebhookReceiver(default=404, echo_path=True) as hook:
        alerts.set_webhook_url(ws, hook.url)
        with pytest.raises(AlertDeliveryError) as err:
            send_webhook(hook.url, sample_alert(), retry_delays=FAST)
        error = alerts.dispatch(ws, sample_alert(), retry_delays=FAST)
        assert len(hook.requests) == 2 and hook.requests[0][0].startswith(f"/hook/{URL_TOKEN}")
    message = err.value.describe()
    assert "HTTP 404" in message and "Cannot POST ***" in message  # what the receiver said, without the path
    assert f"http://127.0.0.1:{hook.port}/***" in message
    audited = "\n".join(e["metadata"] for e in audit_actions(ws))
    for text in (message, error, audited, caplog.text, alerts.describe_url(hook.url)):
        assert_no_trace(text, URL_TOKEN, QUERY_TOKEN, hook.path, hook.url)
    assert set(resolver) <= {"127.0.0.1"}


def test_alerts_test_in_the_cli_prints_no_token(tmp_path, keyring_ready):
    """The reported case: `esg-workbench alerts test` against a 404 page that echoes the path."""
    import os
    import subprocess
    import sys

    workspace = str(tmp_path / "cli.duckdb")
    env = {**os.environ, "ESG_WORKBENCH_ALERT_RETRY_DELAYS": "0.01"}
    cli = lambda *args, stdin=None: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "esg_workbench", "--workspace", workspace, *args], input=stdin,
        capture_output=True, text=True, timeout=120, env=env)
    with WebhookReceiver(default=404, echo_path=True) as hook:
        set_hook = cli("alerts", "set-webhook", stdin=hook.url + "\n")
        assert set_hook.returncode == 0, set_hook.stderr
        tested = cli("alerts", "test")
        shown = cli("alerts", "show")
        assert hook.requests, tested.stderr
    assert "Cannot POST ***" in tested.stdout + tested.stderr
    for run in (set_hook, tested, shown):
        assert_no_trace(run.stdout + run.stderr, URL_TOKEN, QUERY_TOKEN, hook.url)
    from esg_workbench.audit import chain
    from esg_workbench.workspace import open_workspace

    opened = open_workspace(workspace)
    try:
        audited = "\n".join(e["metadata"] + e["action"] for e in chain.entries(opened))
    finally:
        opened.close()
    assert "alert_failed" in audited
    assert_no_trace(audited, URL_TOKEN, QUERY_TOKEN, hook.url)


def test_a_user_part_is_sent_as_basic_authentication_never_to_the_resolver(ws, keyring_ready, resolver, caplog):
    import base64

    caplog.set_level("DEBUG")
    with WebhookReceiver(default=404, echo_path=True) as hook:
        url = f"http://hooks:{USER_TOKEN}@localhost:{hook.port}{hook.path}?token={QUERY_TOKEN}"
        alerts.set_webhook_url(ws, url)
        with pytest.raises(AlertDeliveryError) as err:
            send_webhook(url, sample_alert(), retry_delays=())
        error = alerts.dispatch(ws, sample_alert(), retry_delays=FAST)
        [(path, headers, _), _] = hook.requests
    assert resolver and set(resolver) == {"localhost"}  # the host name alone went to the resolver
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"hooks:{USER_TOKEN}".encode()).decode()
    assert headers["Host"] == f"localhost:{hook.port}" and path == f"{hook.path}?token={QUERY_TOKEN}"
    assert alerts.describe_url(url) == f"http://localhost:{hook.port}/***"
    audited = "\n".join(e["metadata"] for e in audit_actions(ws))
    for text in (err.value.describe(), error, audited, caplog.text):
        assert_no_trace(text, USER_TOKEN, URL_TOKEN, QUERY_TOKEN, url)


@pytest.mark.parametrize("url", [
    f"https://hooks:{USER_TOKEN[:6]}/{USER_TOKEN[6:]}@hooks.example.com/x",  # an unencoded '/' in the password
    f"https://hooks:{USER_TOKEN[:6]}#{USER_TOKEN[6:]}@hooks.example.com/x",  # ... or '#'
    f"https://hooks:{USER_TOKEN}@hooks.example.com:99999/x",
    f"https://{USER_TOKEN}%40hooks.example.com/x",  # an encoded '@' in the host name
])
def test_a_user_part_that_does_not_parse_is_refused_before_any_network_call(url, resolver):
    with pytest.raises(ConfigError) as err:
        send_webhook(url, sample_alert(), retry_delays=())
    assert resolver == []
    text = err.value.describe()
    assert "webhook URL" in text
    for piece in (USER_TOKEN, USER_TOKEN[:6], USER_TOKEN[6:]):
        assert piece not in text


@pytest.mark.parametrize("url", [f"{URL_TOKEN}@hooks.example.com/x", f"{USER_TOKEN}:x@hooks.example.com/x",
                                 f"hooks.example.com/{URL_TOKEN}"])
def test_a_url_without_its_scheme_is_refused_without_echoing_it(url):
    with pytest.raises(ConfigError) as err:
        alerts.validate_webhook_url(url)
    assert "http:// or https://" in err.value.message
    for piece in (URL_TOKEN, USER_TOKEN, URL_TOKEN[:5], USER_TOKEN[:5]):
        assert piece not in err.value.describe()


def test_redact_removes_every_secret_piece_of_the_url():
    url = f"https://u:{USER_TOKEN}@hooks.example.com/services/{URL_TOKEN}/x?token={QUERY_TOKEN}&v=1"
    answer = (f"no route for /services/{URL_TOKEN}/x?token={QUERY_TOKEN} (user u:{USER_TOKEN}) "
              f"%2Fservices%2F{URL_TOKEN} password={USER_TOKEN[:5]}")
    text = alerts.redact(answer, url)
    assert URL_TOKEN not in text and QUERY_TOKEN not in text and USER_TOKEN not in text
    assert text.startswith("no route for ***") and "password=***" in text
    assert alerts.redact("nothing to hide at hooks.example.com", url) == "nothing to hide at hooks.example.com"
