"""Scheduled jobs on DuckDB and PostgreSQL workspaces, running real syncs from PostgreSQL:
the job store and its checks, due-job selection, claiming a slot once, missed runs,
busy connectors, discovery, retry of failed chunks, and alerts."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
import sqlalchemy as sa

from tests.conftest import PG_HOST, PG_PORT, free_port
from tests.schedule_helpers import FAST, add_source, set_job, ws  # noqa: F401  (ws: a fixture)
from fault_proxy import FaultProxy
from webhook_receiver import WebhookReceiver

from esg_workbench.audit import chain
from esg_workbench.core.errors import ConfigError, NotFound
from esg_workbench.sync import cron, operations, scheduler
from esg_workbench.sync.engine import SyncEngine
from esg_workbench.workspace import sync_records
from esg_workbench.workspace import concurrency
from esg_workbench.workspace.database import utcnow
from esg_workbench.workspace.schema import connector_sync_logs, scheduled_jobs


@pytest.fixture
def source(pg_conn):
    """src.readings: 300 rows in the test database."""
    pg_conn.execute("""
        CREATE SCHEMA src;
        CREATE TABLE src.readings (id bigint PRIMARY KEY, site text, kwh numeric(10,2), updated_at timestamptz NOT NULL);
        INSERT INTO src.readings SELECT g, 'S' || g % 4, g * 1.5, '2024-01-01'::timestamptz + g * interval '1 hour'
        FROM generate_series(1, 300) g;
    """)
    return pg_conn


def runs_of(ws) -> list:
    with ws.read() as conn:
        return conn.execute(sa.select(connector_sync_logs.c.id, connector_sync_logs.c.status, connector_sync_logs.c.mode)
                            .order_by(connector_sync_logs.c.id)).all()


def set_next_run(ws, name, when):
    set_job(ws, name, next_run_at=when)


def schedule_entries(ws) -> list[dict]:
    """Oldest first."""
    return [{**e, "metadata": json.loads(e["metadata"])} for e in reversed(chain.entries(ws, limit=10_000))
            if e["action"].startswith("schedule.")]


# --- the job store ------------------------------------------------------------------------

def test_add_edit_enable_disable_remove(ws, pg_database):
    add_source(ws, pg_database)
    add_source(ws, pg_database, name="hr")
    before = utcnow()
    # 04:30: a time Europe/Berlin's DST changes (02:00-03:00) never skip or repeat, whatever today is
    job = scheduler.add_job(ws, "nightly", "30 4 * * *", "erp", timezone="Europe/Berlin")
    assert (job.name, job.cron, job.timezone, job.connector, job.action, job.enabled) == \
        ("nightly", "30 4 * * *", "Europe/Berlin", "erp", "sync", True)
    assert job.next_run_at == cron.next_run_utc("30 4 * * *", "Europe/Berlin", before)
    assert (job.next_run_local.hour, job.next_run_local.minute) == (4, 30)
    assert job.description == "Every day at 04:30"
    assert [t.strftime("%H:%M") for t in job.upcoming(5)] == ["04:30"] * 5
    assert job.last_status is None and job.last_run_at is None

    job = scheduler.update_job(ws, "nightly", new_name="weekday-mornings", cron="0 6 * * MON-FRI",
                               connector="hr", action="retry_failed", options={"tables": ["src.readings"]})
    assert scheduler.get_job(ws, "weekday-mornings") == job
    assert (job.cron, job.connector, job.action, job.options) == ("0 6 * * MON-FRI", "hr", "retry_failed",
                                                                   {"tables": ["src.readings"]})
    assert job.next_run_local.hour == 6 and job.next_run_local.weekday() < 5
    with pytest.raises(NotFound, match="no scheduled job named 'nightly'") as missing:
        scheduler.get_job(ws, "nightly")
    assert "weekday-mornings" in missing.value.hint

    off = scheduler.set_enabled(ws, "weekday-mornings", False)
    assert off.enabled is False and off.next_run_at is None
    assert scheduler.due_jobs(ws, utcnow() + dt.timedelta(days=30)) == []
    on = scheduler.set_enabled(ws, "weekday-mornings", True)
    assert on.enabled and on.next_run_at == cron.next_run_utc(on.cron, on.timezone, utcnow())

    scheduler.add_job(ws, "a-discovery", "@weekly", "erp", "discover", enabled=False)
    assert [j.name for j in scheduler.list_jobs(ws)] == ["a-discovery", "weekday-mornings"]
    assert scheduler.get_job(ws, "a-discovery").timezone == cron.local_timezone()  # stored, not left open
    scheduler.remove_job(ws, "a-discovery")
    assert [j.name for j in scheduler.list_jobs(ws)] == ["weekday-mornings"]
    assert [e["action"] for e in schedule_entries(ws)] == [
        "schedule.add", "schedule.update", "schedule.update", "schedule.update", "schedule.add", "schedule.remove"]
    assert chain.verify(ws).ok


def test_connector_renamed_the_job_follows(ws, pg_database):
    add_source(ws, pg_database)
    scheduler.add_job(ws, "nightly", "0 2 * * *", "erp")
    operations.update_connector(ws, "erp", operations.get_connector(ws, "erp").config, new_name="erp-prod")
    assert scheduler.get_job(ws, "nightly").connector == "erp-prod"
    assert scheduler.request_for(ws, scheduler.get_job(ws, "nightly")).connector == \
        operations.get_connector(ws, "erp-prod").id


BAD = [
    ({"cron": "0 25 * * *"}, ConfigError, "hour 25 is out of range 0-23"),
    ({"cron": "every day"}, ConfigError, "has 2 fields"),
    ({"timezone": "Europe/Atlantis"}, ConfigError, "'Europe/Atlantis' is not a known time zone"),
    ({"connector": "nope"}, NotFound, "There is no connector named 'nope'"),
    ({"action": "delete"}, ConfigError, "'delete' is not a scheduled action. Known actions: sync, retry_failed, discover"),
    ({"options": {"password": "x"}}, ConfigError, "Option password does not apply to a scheduled sync"),
    ({"options": {"tables": "src.readings"}}, ConfigError, "must be a list of table names"),
    ({"name": "nightly"}, ConfigError, "A scheduled job named 'nightly' already exists"),
    ({"name": "  "}, ConfigError, "A scheduled job needs a name"),
]


def test_bad_jobs_and_edits_are_refused_and_change_nothing(ws, pg_database):
    add_source(ws, pg_database)
    scheduler.add_job(ws, "nightly", "0 2 * * *", "erp")
    scheduler.add_job(ws, "other", "0 3 * * *", "erp")
    before, entries = scheduler.list_jobs(ws), len(chain.entries(ws))
    for change, kind, error in BAD:
        args = {"name": "new", "cron": "0 3 * * *", "connector": "erp", "action": "sync", **change}
        with pytest.raises(kind, match=error) as caught:
            scheduler.add_job(ws, args.pop("name"), args.pop("cron"), args.pop("connector"), args.pop("action"),
                              **args)
        assert caught.value.hint, change
        edit = {"new_name" if k == "name" else k: v for k, v in change.items()}
        with pytest.raises(kind, match=error):
            scheduler.update_job(ws, "other", **edit)
        assert scheduler.list_jobs(ws) == before and len(chain.entries(ws)) == entries, change


# --- due jobs, claiming and running ---------------------------------------------------------

def test_due_jobs_are_the_enabled_ones_whose_slot_has_come(ws, pg_database):
    add_source(ws, pg_database)
    scheduler.add_job(ws, "daily", "0 2 * * *", "erp", timezone="UTC")
    scheduler.add_job(ws, "hourly", "@hourly", "erp", timezone="UTC")
    scheduler.add_job(ws, "off", "* * * * *", "erp", enabled=False)
    # slots days ahead, so that "the real now" below is before both at any time of day
    slot = (utcnow() + dt.timedelta(days=3)).replace(hour=2, minute=0, second=0, microsecond=0)
    set_next_run(ws, "daily", slot)
    set_next_run(ws, "hourly", slot - dt.timedelta(hours=1))
    assert scheduler.due_jobs(ws, slot - dt.timedelta(hours=1, seconds=1)) == []
    assert [j.name for j in scheduler.due_jobs(ws, slot - dt.timedelta(seconds=1))] == ["hourly"]
    assert [j.name for j in scheduler.due_jobs(ws, slot)] == ["hourly", "daily"]  # oldest slot first
    aware = slot.replace(tzinfo=dt.timezone.utc).astimezone(dt.timezone(dt.timedelta(hours=-7)))
    assert [j.name for j in scheduler.due_jobs(ws, aware)] == ["hourly", "daily"]
    assert scheduler.due_jobs(ws) == []  # the real now: nothing has come yet


def test_run_due_runs_a_real_sync_and_records_it(ws, pg_database, source):
    add_source(ws, pg_database, cursor_field="updated_at", chunk_size=100)
    job = scheduler.add_job(ws, "nightly", "30 4 * * *", "erp", timezone="Europe/Berlin")
    assert scheduler.run_due(ws, retry_delays=FAST) == []  # not due yet
    slot = job.next_run_at
    events = []
    [outcome] = scheduler.run_due(ws, slot + dt.timedelta(minutes=1), retry_delays=FAST, on_progress=events.append)
    assert (outcome.job_name, outcome.connector, outcome.action, outcome.status) == ("nightly", "erp", "sync", "success")
    assert outcome.result.rows_written == 300 and outcome.run_id == outcome.result.run_id
    assert outcome.message.startswith("Landed 300 rows from 1 table in ")
    assert events and events[-1].rows_written == 300
    assert [(r.id, r.status, r.mode) for r in runs_of(ws)] == [(outcome.run_id, "success", "sync")]

    after = scheduler.get_job(ws, "nightly")
    assert (after.last_status, after.last_run_id, after.last_message) == ("success", outcome.run_id, outcome.message)
    assert after.last_run_at is not None
    assert after.next_run_at == cron.next_run_utc(job.cron, job.timezone, slot + dt.timedelta(minutes=1))
    # the next day at 04:30 on the wall clock (23, 24 or 25 hours later, by the DST calendar)
    assert (after.next_run_local.date() - job.next_run_local.date()).days == 1
    assert after.next_run_local.strftime("%H:%M") == "04:30"
    [entry] = [e for e in schedule_entries(ws) if e["action"] == "schedule.run"]
    assert entry["metadata"] == {"job": "nightly", "connector": "erp", "action": "sync", "status": "success",
                                 "run_id": outcome.run_id, "message": outcome.message}
    assert chain.verify(ws).ok
    # the same moment again: the slot was taken, nothing is due
    assert scheduler.run_due(ws, slot + dt.timedelta(minutes=1), retry_delays=FAST) == []
    assert len(runs_of(ws)) == 1


def test_missed_runs_run_once_and_the_next_slot_is_after_now(ws, pg_database, source):
    add_source(ws, pg_database)
    scheduler.add_job(ws, "quarter-hourly", "*/15 * * * *", "erp", timezone="UTC")
    ten_days_ago = utcnow() - dt.timedelta(days=10)
    set_next_run(ws, "quarter-hourly", ten_days_ago.replace(second=0, microsecond=0))  # the machine was off
    started = utcnow()  # the claim moves the slot past this moment (the sync may end after a quarter)
    outcomes = scheduler.run_due(ws, retry_delays=FAST)
    assert [o.status for o in outcomes] == ["success"]  # once, not 960 times
    assert len(runs_of(ws)) == 1
    job = scheduler.get_job(ws, "quarter-hourly")
    assert started < job.next_run_at <= started + dt.timedelta(minutes=15)
    assert job.next_run_at.minute % 15 == 0
    assert scheduler.run_due(ws, job.next_run_at - dt.timedelta(seconds=1), retry_delays=FAST) == []


def test_two_threads_claiming_one_slot_only_one_wins(ws, pg_database):
    add_source(ws, pg_database)
    job = scheduler.add_job(ws, "nightly", "0 2 * * *", "erp")
    now = job.next_run_at + dt.timedelta(minutes=5)
    copies = [scheduler.due_jobs(ws, now)[0] for _ in range(4)]  # each read the job before anyone claimed
    barrier, won = threading.Barrier(len(copies)), []

    def take(copy):
        barrier.wait()
        won.append(scheduler.claim(ws, copy, now))

    threads = [threading.Thread(target=take, args=(c,)) for c in copies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False, False, False, True]
    assert scheduler.get_job(ws, "nightly").next_run_at == cron.next_run_utc(job.cron, job.timezone, now)
    # a copy read before the claim no longer matches; run_job says so and records nothing
    outcome = scheduler.run_job(ws, copies[0], now=now, retry_delays=FAST)
    assert outcome.status == "skipped" and "Another window or process started this run first" in outcome.message
    assert runs_of(ws) == [] and scheduler.get_job(ws, "nightly").last_status is None


def test_a_busy_connector_is_skipped_and_says_so(ws, pg_database, source):
    record = add_source(ws, pg_database)
    job = scheduler.add_job(ws, "nightly", "0 2 * * *", "erp")
    now = job.next_run_at + dt.timedelta(minutes=1)
    if ws.is_duckdb:  # a sync of this connector runs in this process (e.g. started in the app)
        holder = SyncEngine(ws)._connector_lock(record.id)
        holder.__enter__()
        release = lambda: holder.__exit__(None, None, None)  # noqa: E731
    else:  # ... or in another process: it holds the connector's sync lock (on a connection of its own)
        holder = concurrency.connector_sync_lock(ws, record.id)
        assert holder.__enter__()
        release = lambda: holder.__exit__(None, None, None)  # noqa: E731
    try:
        [outcome] = scheduler.run_due(ws, now, retry_delays=FAST)
    finally:
        release()
    assert outcome.status == "skipped"
    assert outcome.message == "'erp' is already syncing in another window or process; this run was skipped."
    assert runs_of(ws) == []
    after = scheduler.get_job(ws, "nightly")
    assert (after.last_status, after.last_message) == ("skipped", outcome.message)
    assert after.next_run_at > now  # the slot is spent; the next one runs as usual
    [second] = scheduler.run_due(ws, after.next_run_at, retry_delays=FAST)
    assert second.status == "success" and second.result.rows_written == 300


def test_discover_job_fills_the_schema_cache(ws, pg_database, source):
    add_source(ws, pg_database)
    job = scheduler.add_job(ws, "weekly-discovery", "@weekly", "erp", "discover", options={"sample_rows": 3})
    assert scheduler.request_for(ws, job) is None
    [outcome] = scheduler.run_due(ws, job.next_run_at, retry_delays=FAST)
    assert (outcome.status, outcome.message, outcome.run_id) == ("success", "Discovered 1 table.", None)
    from esg_workbench.workspace import schema_cache

    with ws.read() as conn:
        [cached] = schema_cache.load(ws, conn, operations.get_connector(ws, "erp").id)
    assert cached.stream.qualified == "src.readings" and len(cached.sample_rows) == 3
    assert runs_of(ws) == []  # discovery is no sync run


def test_failed_sync_is_an_outcome_not_an_exception(ws, pg_database):
    add_source(ws, pg_database, name="down", port=free_port())  # nothing listens there
    add_source(ws, pg_database, name="gone")
    scheduler.add_job(ws, "a-down", "0 2 * * *", "down", timezone="UTC")
    job = scheduler.add_job(ws, "b-gone", "0 2 * * *", "gone", timezone="UTC")
    operations.remove_connector(ws, "gone")
    outcomes = scheduler.run_due(ws, job.next_run_at, retry_delays=FAST)
    assert [(o.job_name, o.status) for o in outcomes] == [("a-down", "failed"), ("b-gone", "failed")]
    down, gone = outcomes
    assert down.run_id is not None and "127.0.0.1" in down.message
    assert [(r.id, r.status) for r in runs_of(ws)] == [(down.run_id, "failed")]
    assert "There is no connector named" in gone.message and "schedule edit b-gone --connector" in gone.message
    assert scheduler.get_job(ws, "b-gone").last_status == "failed"


def test_partial_scheduled_sync_alerts_then_a_retry_job_finishes_it(ws, pg_database, source, keyring_ready, monkeypatch):
    from esg_workbench import alerts

    monkeypatch.setenv("ESG_WORKBENCH_ALERT_RETRY_DELAYS", "0.01,0.01")
    with FaultProxy((PG_HOST, PG_PORT)) as proxy, WebhookReceiver() as hook:
        add_source(ws, pg_database, port=proxy.port, cursor_field="updated_at", chunk_size=50, load_type="delta")
        alerts.set_webhook_url(ws, hook.url)
        sync_job = scheduler.add_job(ws, "nightly", "0 2 * * *", "erp", timezone="UTC")
        retry_job = scheduler.add_job(ws, "retry", "0 3 * * *", "erp", "retry_failed", timezone="UTC")

        def cut_after_two(event):
            if event.chunks_done >= 2 and not proxy.is_cut:
                proxy.cut()

        # due by the real clock, so that neither job's next slot comes within the calls
        set_next_run(ws, "nightly", utcnow() - dt.timedelta(minutes=1))
        [partial] = scheduler.run_due(ws, retry_delays=FAST, on_progress=cut_after_two)
        assert partial.status == "partial_success", partial.message
        assert "chunk(s) failed" in partial.message and "could not be sent" not in partial.message
        [body] = hook.bodies
        assert body["run_id"] == partial.run_id and body["status"] == "partial_success"

        proxy.restore()
        assert scheduler.request_for(ws, retry_job).retry_failed is True
        set_next_run(ws, "retry", utcnow() - dt.timedelta(minutes=1))
        [retried] = scheduler.run_due(ws, retry_delays=FAST)
        assert retried.status == "success", retried.message
        assert len(hook.bodies) == 1  # a success sends nothing
    assert [(r.status, r.mode) for r in runs_of(ws)] == [("partial_success", "sync"), ("success", "retry_failed")]
    assert partial.result.rows_written + retried.result.rows_written == 300
    with ws.read() as conn:
        states = sync_records.states(ws, conn, operations.get_connector(ws, "erp").id)
    assert [s.active_sync_id for s in states] == [None]


def test_an_alert_that_cannot_be_delivered_is_named_in_the_outcome(ws, pg_database, keyring_ready, monkeypatch):
    from esg_workbench import alerts

    monkeypatch.setenv("ESG_WORKBENCH_ALERT_RETRY_DELAYS", "0.01")
    add_source(ws, pg_database, name="down", port=free_port())
    job = scheduler.add_job(ws, "nightly", "0 2 * * *", "down", timezone="UTC")
    with WebhookReceiver(default=500) as hook:
        alerts.set_webhook_url(ws, hook.url)
        [outcome] = scheduler.run_due(ws, job.next_run_at, retry_delays=FAST)
        assert len(hook.requests) == 2  # tried, retried
    assert outcome.status == "failed"
    assert "The alert could not be sent: " in outcome.message and "HTTP 500" in outcome.message
    assert "s3cr3t" not in outcome.message and "T0KEN" not in outcome.message
    assert scheduler.get_job(ws, "nightly").last_message == outcome.message


def test_rows_written_outside_the_app_are_scheduled_or_explained(ws, pg_database, source):
    """A version-1 workspace's job has no time zone nor next slot; a hand-edited one may not parse."""
    add_source(ws, pg_database)
    config = json.dumps({"connector": "erp", "action": "sync"})  # as version 1 knew it: no connector_id
    with ws.transaction() as conn:
        conn.execute(sa.insert(scheduled_jobs).values(organization_id=ws.organization_id, name="old", cron="0 4 * * *",
                                                      enabled=True, config=config))
        conn.execute(sa.insert(scheduled_jobs).values(organization_id=ws.organization_id, name="broken",
                                                      cron="0 4 * *", enabled=True, config=config))
    assert scheduler.due_jobs(ws) == []
    old = scheduler.get_job(ws, "old")
    assert old.timezone == "UTC" and old.next_run_at == cron.next_run_utc("0 4 * * *", "UTC", utcnow())
    assert scheduler.request_for(ws, old).connector == "erp" and old.connector_id is None
    broken = scheduler.get_job(ws, "broken")
    assert broken.next_run_at is None and broken.last_status == "failed"
    assert broken.last_message == "This job cannot run: '0 4 * *' has 4 fields; a cron expression has 5: " \
                                  "minute hour day-of-month month day-of-week."
    [outcome] = scheduler.run_due(ws, old.next_run_at, retry_delays=FAST)
    assert (outcome.job_name, outcome.status, outcome.result.rows_written) == ("old", "success", 300)  # found by name

    set_next_run(ws, "broken", utcnow() - dt.timedelta(minutes=1))  # due, but its cron does not parse
    [failed] = scheduler.run_due(ws, retry_delays=FAST)
    assert failed.status == "failed" and "has 4 fields" in failed.message
    assert scheduler.get_job(ws, "broken").last_message == failed.message
