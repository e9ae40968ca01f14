"""Schedules that run after others, retry, take turns by priority and share a limit of
syncs at once (issue 16), on DuckDB and PostgreSQL workspaces with real syncs from
PostgreSQL; the limit across two real processes and against another organization on a
shared, row-level secured workspace."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from tests.conftest import PG_HOST, PG_PORT, PG_USER, free_port
from tests.schedule_helpers import FAST, add_source, set_job, ws  # noqa: F401  (ws: a fixture)
from tests.pg_shared import shared_database
from fault_proxy import FaultProxy

from esg_workbench.core.errors import ConfigError, NotFound
from esg_workbench.sync import schedule_plan, scheduler
from esg_workbench.workspace import open_workspace, organizations, schedule_slots
from esg_workbench.workspace.database import utcnow
from esg_workbench.workspace.schema import connector_sync_logs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def source(pg_conn):
    """src.sites (4 rows) and src.meters (300 rows) in the test database."""
    pg_conn.execute("""
        CREATE SCHEMA src;
        CREATE TABLE src.sites (id bigint PRIMARY KEY, name text);
        INSERT INTO src.sites SELECT g, 'S' || g FROM generate_series(1, 4) g;
        CREATE TABLE src.meters (id bigint PRIMARY KEY, site bigint, kwh numeric(10,2), updated_at timestamptz NOT NULL);
        INSERT INTO src.meters SELECT g, g % 4 + 1, g * 1.5, '2024-01-01'::timestamptz + g * interval '1 hour'
        FROM generate_series(1, 300) g;
    """)
    return pg_conn


def runs(ws) -> list:
    with ws.read() as conn:
        return conn.execute(sa.select(connector_sync_logs.c.id, connector_sync_logs.c.status,
                                      connector_sync_logs.c.mode, connector_sync_logs.c.retry_of,
                                      connector_sync_logs.c.attempt).order_by(connector_sync_logs.c.id)).all()


# --- dependencies --------------------------------------------------------------------------

def test_a_chain_runs_in_order_in_one_check_even_when_the_later_job_has_priority(ws, pg_database, source):
    add_source(ws, pg_database, "sites-db")
    add_source(ws, pg_database, "meters-db")
    scheduler.add_job(ws, "sites", "0 2 * * *", "sites-db", timezone="UTC", options={"tables": ["src.sites"]})
    meters = scheduler.add_job(ws, "meters", "0 2 * * *", "meters-db", timezone="UTC", priority=50,
                               depends_on=["sites"], options={"tables": ["src.meters"]})
    assert meters.depends_on == ["sites"] and meters.priority == 50
    slot = meters.next_run_at
    [first] = scheduler.pending(ws, slot)[:1]  # meters comes first by priority, but it waits
    assert (first.job.name, first.verdict) == ("meters", "wait")
    assert "waiting for 'sites' to finish" in first.reason
    waiting = []
    outcomes = scheduler.run_due(ws, slot, retry_delays=FAST, on_waiting=waiting.append)
    assert [(o.job_name, o.status) for o in outcomes] == [("sites", "success"), ("meters", "success")]
    assert waiting and waiting[0].job.name == "meters"
    assert outcomes[1].result.rows_written == 300
    assert schedule_plan.chains(scheduler.list_jobs(ws)) == [["sites", "meters"]]


def test_a_failing_predecessor_skips_the_chain_and_says_why(ws, pg_database, source):
    add_source(ws, pg_database, "down", port=free_port())  # nothing listens there
    add_source(ws, pg_database, "meters-db")
    scheduler.add_job(ws, "erp-a", "0 2 * * *", "down", timezone="UTC")
    scheduler.add_job(ws, "erp-b", "0 2 * * *", "meters-db", timezone="UTC", options={"tables": ["src.sites"]})
    kpis = scheduler.add_job(ws, "kpis", "0 2 * * *", "meters-db", timezone="UTC", depends_on=["erp-a", "erp-b"],
                             dependency_window_minutes=30)
    outcomes = scheduler.run_due(ws, kpis.next_run_at, retry_delays=FAST)
    assert [(o.job_name, o.status) for o in outcomes] == [
        ("erp-a", "failed"), ("erp-b", "success"), ("kpis", "skipped")]
    skipped = scheduler.get_job(ws, "kpis")
    assert skipped.last_status == "skipped"
    assert "'erp-a' ended failed" in skipped.last_message and "only after its success" in skipped.last_message
    assert skipped.next_run_at > kpis.next_run_at  # the slot is used up: it does not run later today
    assert [r.status for r in runs(ws)] == ["failed", "success"]  # kpis started no sync


def test_partial_success_counts_only_when_the_setting_says_so(ws, pg_database):
    add_source(ws, pg_database, "erp")
    pred = scheduler.add_job(ws, "pred", "0 2 * * *", "erp", timezone="UTC")
    strict = scheduler.add_job(ws, "strict", "0 2 * * *", "erp", timezone="UTC", depends_on=["pred"])
    lenient = scheduler.add_job(ws, "lenient", "0 2 * * *", "erp", timezone="UTC", depends_on=["pred"],
                                dependency_accepts_partial=True)
    slot = strict.next_run_at
    set_job(ws, "pred", last_status="partial_success", last_run_at=slot + dt.timedelta(minutes=5),
            next_run_at=pred.next_run_at + dt.timedelta(days=1))
    verdicts = {d.job.name: (d.verdict, d.reason) for d in scheduler.pending(ws, slot + dt.timedelta(minutes=6))}
    assert verdicts["lenient"][0] == "run" and "'pred' ended partial_success" in verdicts["lenient"][1]
    assert verdicts["strict"][0] == "skip" and "only after its success" in verdicts["strict"][1]
    assert scheduler.get_job(ws, "lenient").dependency_accepts_partial is True


def test_a_predecessor_that_does_not_finish_in_the_window_skips_after_the_window(ws, pg_database):
    add_source(ws, pg_database, "erp")
    scheduler.add_job(ws, "pred", "0 4 * * *", "erp", timezone="UTC")
    job = scheduler.add_job(ws, "after", "0 2 * * *", "erp", timezone="UTC", depends_on=["pred"],
                            dependency_window_minutes=60)
    slot = job.next_run_at
    # a success from before the window does not count
    set_job(ws, "pred", last_status="success", last_run_at=slot - dt.timedelta(minutes=61),
            next_run_at=slot + dt.timedelta(days=10))  # it does not run meanwhile
    [waiting] = [d for d in scheduler.pending(ws, slot + dt.timedelta(minutes=59)) if d.job.name == "after"]
    assert waiting.verdict == "wait" and "until" in waiting.reason
    assert scheduler.run_due(ws, slot + dt.timedelta(minutes=59), retry_delays=FAST) == []
    [late] = scheduler.run_due(ws, slot + dt.timedelta(minutes=61), retry_delays=FAST)
    assert late.status == "skipped" and "'pred' did not finish between" in late.message


def test_cycles_self_and_unknown_dependencies_are_refused_and_nothing_changes(ws, pg_database):
    add_source(ws, pg_database, "erp")
    scheduler.add_job(ws, "a", "0 2 * * *", "erp", timezone="UTC")
    scheduler.add_job(ws, "b", "0 2 * * *", "erp", timezone="UTC", depends_on=["a"])
    scheduler.add_job(ws, "c", "0 2 * * *", "erp", timezone="UTC", depends_on=["b"])
    with pytest.raises(ConfigError) as cycle:
        scheduler.update_job(ws, "a", depends_on=["c"], priority=5)
    assert "cycle: a → c → b → a" in cycle.value.message and "Nothing was saved" in cycle.value.message
    assert scheduler.get_job(ws, "a").depends_on == [] and scheduler.get_job(ws, "a").priority == 0
    with pytest.raises(ConfigError, match="cannot run after itself"):
        scheduler.update_job(ws, "b", depends_on=["b"])
    with pytest.raises(NotFound, match="no schedule named 'zz'"):
        scheduler.add_job(ws, "d", "0 2 * * *", "erp", timezone="UTC", depends_on=["zz"])
    assert [j.name for j in scheduler.list_jobs(ws)] == ["a", "b", "c"]
    with pytest.raises(ConfigError, match="'b' cannot be removed: c runs after it"):
        scheduler.remove_job(ws, "b")
    for bad in ({"priority": 101}, {"retry_attempts": -1}, {"retry_backoff_seconds": 0},
                {"dependency_window_minutes": 0}, {"priority": "high"}):
        with pytest.raises(ConfigError):
            scheduler.update_job(ws, "c", **bad)
    assert scheduler.get_job(ws, "c").depends_on == ["b"]
    renamed = scheduler.update_job(ws, "a", new_name="first")  # dependencies follow a rename (kept by id)
    assert renamed.name == "first" and scheduler.get_job(ws, "b").depends_on == ["first"]
    assert schedule_plan.chains(scheduler.list_jobs(ws)) == [["first", "b", "c"]]


def test_plan_helpers_without_a_workspace():
    class J:
        def __init__(self, id, name, preds=(), **kw):
            self.id, self.name, self.depends_on_ids = id, name, list(preds)
            self.priority, self.enabled = kw.get("priority", 0), True
            self.next_run_at, self.retry_due_at = kw.get("next"), kw.get("retry")

    assert schedule_plan.find_cycle({1: [2], 2: [3], 3: [1]}, 1) == [1, 2, 3, 1]
    assert schedule_plan.find_cycle({1: [2], 2: [3], 3: []}, 1) is None
    t = dt.datetime(2026, 1, 1, 2)
    jobs = [J(1, "low-old", next=t - dt.timedelta(hours=3)), J(2, "high-new", next=t, priority=10),
            J(3, "low-older", next=t - dt.timedelta(hours=5)), J(4, "not-due", next=t + dt.timedelta(hours=1)),
            J(5, "retry", retry=t - dt.timedelta(minutes=1))]
    assert [d.job.name for d in schedule_plan.decisions(jobs, t)] == ["high-new", "low-older", "low-old", "retry"]
    assert [d.retry for d in schedule_plan.decisions(jobs, t)][-1] is True


# --- retries -------------------------------------------------------------------------------

def test_a_failed_run_is_retried_with_backoff_and_linked_to_its_first_attempt(ws, pg_database):
    add_source(ws, pg_database, "down", port=free_port())
    # a yearly slot, so that no cron slot falls between the retries
    job = scheduler.add_job(ws, "nightly", "0 2 1 7 *", "down", timezone="UTC", retry_attempts=2,
                            retry_backoff_seconds=600)
    set_job(ws, "nightly", next_run_at=utcnow() - dt.timedelta(minutes=1))  # due now, by the real clock
    [first] = scheduler.run_due(ws, retry_delays=FAST)
    assert first.status == "failed" and "Retry 1 of 2 at" in first.message
    after_first = scheduler.get_job(ws, "nightly")
    assert after_first.retry_attempt == 2 and after_first.retry_first_run_id == first.run_id
    backoff = after_first.retry_due_at - after_first.last_run_at
    assert backoff == dt.timedelta(seconds=600)
    assert scheduler.run_due(ws, after_first.retry_due_at - dt.timedelta(seconds=1), retry_delays=FAST) == []

    [second] = scheduler.run_due(ws, after_first.retry_due_at, retry_delays=FAST)
    assert (second.status, second.attempt, second.first_run_id) == ("failed", 2, first.run_id)
    after_second = scheduler.get_job(ws, "nightly")
    assert after_second.retry_due_at - after_second.last_run_at == dt.timedelta(seconds=1200)  # doubled

    [third] = scheduler.run_due(ws, after_second.retry_due_at, retry_delays=FAST)
    assert third.attempt == 3 and "Retry" not in third.message
    done = scheduler.get_job(ws, "nightly")
    assert done.retry_due_at is None and done.retry_attempt is None
    assert done.next_run_at == after_first.next_run_at > utcnow()  # retries leave the cron slots alone
    assert [(r.id, r.retry_of, r.attempt) for r in runs(ws)] == [
        (first.run_id, None, None), (second.run_id, first.run_id, 2), (third.run_id, first.run_id, 3)]


def test_a_partial_run_is_retried_on_its_failed_chunks_only(ws, pg_database, source):
    with FaultProxy((PG_HOST, PG_PORT)) as proxy:
        add_source(ws, pg_database, "erp", port=proxy.port, cursor_field="updated_at", chunk_size=50,
                   load_type="delta")
        # a yearly slot, so that no cron slot falls between the retries
        job = scheduler.add_job(ws, "nightly", "0 2 1 7 *", "erp", timezone="UTC", retry_attempts=1,
                                retry_backoff_seconds=60, options={"tables": ["src.meters"]})

        def cut_after_two(event):
            if event.chunks_done >= 2 and not proxy.is_cut:
                proxy.cut()

        set_job(ws, "nightly", next_run_at=utcnow() - dt.timedelta(minutes=1))
        [partial] = scheduler.run_due(ws, retry_delays=FAST, on_progress=cut_after_two)
        assert partial.status == "partial_success", partial.message
        proxy.restore()
        pending = scheduler.get_job(ws, "nightly")
        assert scheduler.request_for(ws, pending, retry=True).retry_failed is True
        [retried] = scheduler.run_due(ws, pending.retry_due_at, retry_delays=FAST)
    assert retried.status == "success" and retried.attempt == 2
    assert partial.result.rows_written + retried.result.rows_written == 300
    assert [(r.status, r.mode, r.retry_of) for r in runs(ws)] == [
        ("partial_success", "sync", None), ("success", "retry_failed", partial.run_id)]
    assert scheduler.get_job(ws, "nightly").retry_due_at is None


# --- priorities and the limit ----------------------------------------------------------------

def test_limits_are_checked_and_audited(ws):
    assert schedule_slots.get_limits(ws) == schedule_slots.Limits(None, None)
    for bad in (-1, 65, 1.5, "2", True):
        with pytest.raises(ConfigError):
            scheduler.set_limits(ws, workspace=bad, per_host=None)
    assert scheduler.set_limits(ws, workspace=2, per_host=1) == schedule_slots.Limits(2, 1)
    assert schedule_slots.get_limits(ws) == schedule_slots.Limits(2, 1)
    assert scheduler.set_limits(ws, workspace=0, per_host=None) == schedule_slots.Limits(None, None)
    from esg_workbench.audit import chain

    assert [e["action"] for e in chain.entries(ws)][:2] == ["schedule.limits", "schedule.limits"]
    assert schedule_slots.source_host({"host": "DB.example.com:5432"}) == "db.example.com"
    assert schedule_slots.source_host({"endpoint_url": "https://s3.example.com:9000/x"}) == "s3.example.com"
    assert schedule_slots.source_host({"path": "/data"}) is None


def test_slots_within_one_process_honour_both_limits(ws):
    scheduler.set_limits(ws, workspace=2, per_host=1)
    a = schedule_slots.take_for(ws, {"host": "one"})
    assert isinstance(a, schedule_slots.Held)
    same_host = schedule_slots.take_for(ws, {"host": "one"})
    assert isinstance(same_host, schedule_slots.Busy) and "already reading from one" in same_host.describe()
    b = schedule_slots.take_for(ws, {"host": "two"})
    assert isinstance(b, schedule_slots.Held)
    full = schedule_slots.take_for(ws, {"host": "three"})
    assert isinstance(full, schedule_slots.Busy) and "in this workspace" in full.describe()
    a.release()
    a.release()  # twice is harmless
    c = schedule_slots.take_for(ws, {"host": "three"})
    assert isinstance(c, schedule_slots.Held)
    b.release(), c.release()


def test_when_the_limit_is_reached_due_jobs_wait_and_run_by_priority_later(ws, pg_database, source):
    add_source(ws, pg_database, "erp")
    scheduler.set_limits(ws, workspace=1, per_host=None)
    low = scheduler.add_job(ws, "low", "0 1 * * *", "erp", timezone="UTC", options={"tables": ["src.sites"]})
    scheduler.add_job(ws, "high", "0 2 * * *", "erp", timezone="UTC", priority=10, options={"tables": ["src.sites"]})
    now = low.next_run_at + dt.timedelta(hours=1)
    held = schedule_slots.take_for(ws, {})  # another sync holds the only slot
    waiting = []
    assert scheduler.run_due(ws, now, retry_delays=FAST, on_waiting=waiting.append) == []
    assert {d.job.name for d in waiting} == {"low", "high"}
    assert all("waiting for a free slot" in d.reason for d in waiting)
    held.release()
    outcomes = scheduler.run_due(ws, now, retry_delays=FAST)
    assert [(o.job_name, o.status) for o in outcomes] == [("high", "success"), ("low", "success")]


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from esg_workbench.workspace import open_workspace, schedule_slots
    url, flag, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    ws = open_workspace(url)
    got = schedule_slots.take_for(ws, {"host": "erp.example.com"})
    out.write_text("held" if isinstance(got, schedule_slots.Held) else "busy: " + got.describe())
    deadline = time.monotonic() + 120
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if isinstance(got, schedule_slots.Held):
        got.release()
""")


def _holders(url: str, count: int, tmp_path: Path) -> tuple[list[subprocess.Popen], list[Path], Path]:
    flag = tmp_path / "release"
    outs = [tmp_path / f"holder{i}.txt" for i in range(count)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER, url, str(flag), str(out)], env=env) for out in outs]
    deadline = time.monotonic() + 120
    while not all(o.exists() for o in outs):  # wait for each process to have tried (no timing assumed)
        assert time.monotonic() < deadline, "the slot holders did not start"
        assert all(p.poll() is None for p in procs), "a slot holder died"
        time.sleep(0.05)
    return procs, outs, flag


def test_processes_on_a_shared_workspace_honour_one_limit_and_other_organizations_cannot_block_it(tmp_path):
    with shared_database() as shared:
        alice, bob = shared.role("alice"), shared.role("bob")
        organizations.init_postgres(shared.url(alice), shared.admin_url, organization="org-a")
        organizations.add_organization(shared.admin_url, "org-b")
        organizations.add_user(shared.admin_url, bob, ["org-b"])
        ws_a, ws_b = open_workspace(shared.url(alice)), open_workspace(shared.url(bob))
        try:
            scheduler.set_limits(ws_a, workspace=2, per_host=None)
            scheduler.set_limits(ws_b, workspace=1, per_host=None)
            # three processes of org-a at once: exactly two hold a slot, the third is told why
            procs, outs, flag = _holders(shared.url(alice), 3, tmp_path)
            results = sorted(o.read_text() for o in outs)
            assert sum(r == "held" for r in results) == 2, results
            assert sum(r.startswith("busy: waiting for a free slot: 2 syncs") for r in results) == 1, results
            # org-b is not blocked by org-a's full slots, and sees none of them
            theirs = schedule_slots.take_for(ws_b, {})
            assert isinstance(theirs, schedule_slots.Held)
            with ws_b.read() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM sync_slots")).scalar() == 1
            # nor can org-b add or lock rows in org-a's name
            with psycopg.connect(host=PG_HOST, port=PG_PORT, user=bob, dbname=shared.database) as raw:
                raw.execute("SELECT set_config(%s, 'org-b', false)", (_setting(),))
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    raw.execute("INSERT INTO sync_slots (organization_id, scope, slot) VALUES ('org-a', 'workspace', 7)")
                raw.rollback()
                assert raw.execute("SELECT slot FROM sync_slots WHERE organization_id = 'org-a' "
                                   "FOR UPDATE").fetchall() == []
                assert raw.execute("DELETE FROM sync_slots WHERE organization_id = 'org-a'").rowcount == 0
            theirs.release()
            flag.write_text("go")
            for p in procs:
                assert p.wait(timeout=120) == 0
            again = schedule_slots.take_for(ws_a, {})  # the processes are gone: their slots are free
            assert isinstance(again, schedule_slots.Held)
            again.release()
        finally:
            ws_a.close()
            ws_b.close()


def _setting() -> str:
    from esg_workbench.workspace.postgres_security import SETTING

    return SETTING


def test_a_process_that_dies_frees_its_slot(tmp_path, pg_database):
    url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}"
    ws = open_workspace(url)
    try:
        scheduler.set_limits(ws, workspace=1, per_host=None)
        procs, outs, _flag = _holders(url, 1, tmp_path)
        assert outs[0].read_text() == "held"
        assert isinstance(schedule_slots.take_for(ws, {}), schedule_slots.Busy)
        procs[0].kill()
        procs[0].wait(timeout=60)
        deadline = time.monotonic() + 60
        while isinstance(got := schedule_slots.take_for(ws, {}), schedule_slots.Busy):
            assert time.monotonic() < deadline, "the dead process's slot stayed taken"
            time.sleep(0.1)  # the server notices the closed connection
        got.release()
    finally:
        ws.close()


def test_two_run_due_processes_on_postgresql_never_exceed_the_limit(pg_database, pg_conn):
    """End to end: two `schedule run-due` processes at once, three due jobs, a limit of one
    sync at a time: the runs they start never overlap, and no job runs twice."""
    pg_conn.execute("""
        CREATE SCHEMA src;
        CREATE TABLE src.readings (id bigint PRIMARY KEY, kwh numeric(10,2), updated_at timestamptz NOT NULL);
        INSERT INTO src.readings SELECT g, g * 1.5, '2024-01-01'::timestamptz + g * interval '1 minute'
        FROM generate_series(1, 20000) g;
    """)
    url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}"
    ws = open_workspace(url)
    try:
        for name in ("a", "b", "c"):
            add_source(ws, pg_database, f"erp-{name}", chunk_size=1000)
            scheduler.add_job(ws, f"job-{name}", "0 2 * * *", f"erp-{name}", timezone="UTC")
            set_job(ws, f"job-{name}", next_run_at=utcnow() - dt.timedelta(minutes=1))
        scheduler.set_limits(ws, workspace=1, per_host=None)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ESG_WORKBENCH_RETRY_DELAYS": "0.01"}
        procs = [subprocess.Popen([sys.executable, "-m", "esg_workbench", "--workspace", url, "schedule", "run-due"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
        outputs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        with ws.read() as conn:
            spans = conn.execute(sa.select(connector_sync_logs.c.connector_id, connector_sync_logs.c.started_at,
                                           connector_sync_logs.c.finished_at, connector_sync_logs.c.status)
                                 .order_by(connector_sync_logs.c.started_at)).all()
        assert spans and all(s.status == "success" for s in spans)
        assert len({s.connector_id for s in spans}) == len(spans)  # no job ran twice
        for earlier, later in zip(spans, spans[1:]):
            assert earlier.finished_at <= later.started_at, f"two syncs overlapped: {earlier} and {later}"
        # a process that found the slot taken said why on standard error (or found nothing left to do)
        waited = [err for _out, err in outputs if "waiting for a free slot" in err]
        ran = sum(1 for s in spans)
        assert ran == 3 or waited, (ran, outputs)
    finally:
        ws.close()
