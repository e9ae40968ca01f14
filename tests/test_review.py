"""Failed chunks as a review queue (issue 16): a real partial sync from PostgreSQL through
a proxy that is cut mid-sync, on DuckDB and PostgreSQL workspaces; list, ignore with a
reason (audited, still incomplete), retry a selection, and bad input refused."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.conftest import PG_HOST, PG_PORT, PG_USER
from fault_proxy import FaultProxy

from esg_workbench.audit import chain
from esg_workbench.core.errors import ConfigError, NotFound
from esg_workbench.sync import operations, review
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace
from esg_workbench.workspace.schema import connector_sync_chunks

FAST = (0.01, 0.02)


@pytest.fixture(params=["duckdb", "postgres"])
def ws(request, tmp_path, pg_database):
    url = str(tmp_path / "ws.duckdb") if request.param == "duckdb" else \
        f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}"
    workspace = open_workspace(url)
    yield workspace
    workspace.close()


@pytest.fixture
def partial(ws, pg_database, pg_conn):
    """A delta sync of 300 rows in chunks of 50 whose source went away after two chunks:
    four failed chunks; the proxy is back afterwards."""
    pg_conn.execute("""
        CREATE SCHEMA src;
        CREATE TABLE src.readings (id bigint PRIMARY KEY, kwh numeric(10,2), updated_at timestamptz NOT NULL);
        INSERT INTO src.readings SELECT g, g * 1.5, '2024-01-01'::timestamptz + g * interval '1 hour'
        FROM generate_series(1, 300) g;
    """)
    with FaultProxy((PG_HOST, PG_PORT)) as proxy:
        operations.add_connector(ws, "erp", "postgres", {
            "host": PG_HOST, "port": proxy.port, "database": pg_database, "username": PG_USER, "schema": "src",
            "cursor_field": "updated_at", "chunk_size": 50, "load_type": "delta"})

        def cut_after_two(event):
            if event.chunks_done >= 2 and not proxy.is_cut:
                proxy.cut()

        result = SyncEngine(ws, retry_delays=FAST, on_progress=cut_after_two).run(SyncRequest("erp"))
        assert result.status.value == "partial_success", result.error
        proxy.restore()
        yield result


def landed(ws) -> int:
    with ws.read() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM " + _raw_table(ws)).scalar()


def _raw_table(ws) -> str:
    with ws.read() as conn:
        return conn.execute(sa.select(connector_sync_chunks.c.target_table).limit(1)).scalar()


def test_failed_chunks_are_listed_ignored_with_a_reason_and_retried_by_selection(ws, partial):
    failed = review.list_failed(ws)
    n = len(failed)  # the reader runs one chunk ahead: the cut fails the last three or four
    assert n >= 2 and n == partial.streams[0].chunks_failed
    first = failed[-1]
    assert first.connector == "erp" and first.stream.endswith("readings")
    assert first.attempts == 3 and first.error and first.retryable
    assert first.first_failed_at is not None and first.first_failed_at <= first.last_failed_at
    assert first.range_text.startswith("[") and first.review_status is None
    assert review.counts(ws) == {"unreviewed": n, "ignored": 0}

    ignored, to_retry, *rest = sorted(failed, key=lambda c: c.id)
    [marked] = review.ignore(ws, [ignored.id], "  the meter was offline that week  ")
    assert marked.ignored and marked.review_reason == "the meter was offline that week" and marked.reviewed_by
    assert {c.id for c in review.list_failed(ws, unreviewed_only=True)} == {to_retry.id, *(c.id for c in rest)}
    [entry] = [e for e in chain.entries(ws) if e["action"] == "chunk.ignore"]
    assert json.loads(entry["metadata"])["reason"] == "the meter was offline that week"
    assert chain.verify(ws).ok
    gaps = review.incomplete_ranges(ws)
    assert [(g.chunk_id, g.ignored) for g in gaps] == [(c.id, c.id == ignored.id) for c in sorted(failed, key=lambda c: c.id)]
    assert gaps[0].reason == "the meter was offline that week" and gaps[0].lower is not None

    before = landed(ws)
    [result] = review.retry(ws, [to_retry.id], retry_delays=FAST)
    # the run lands the chosen chunk; it stays partial_success while others of the plan are failed
    assert result.status.value == "partial_success" and result.rows_written > 0
    assert landed(ws) == before + result.rows_written
    left = {c.id for c in review.list_failed(ws)}
    assert to_retry.id not in left and ignored.id in left and len(left) == n - 1

    # an ignored chunk still counts as missing until it lands; then it leaves the list
    [last] = review.retry(ws, [c.id for c in review.list_failed(ws)], retry_delays=FAST)
    assert last.status.value == "success"
    assert review.list_failed(ws) == [] and review.incomplete_ranges(ws) == []
    assert landed(ws) == 300
    with ws.read() as conn:  # the review stays on the ledger row as its history
        reason = conn.execute(sa.select(connector_sync_chunks.c.review_reason)
                              .where(connector_sync_chunks.c.id == ignored.id)).scalar()
    assert reason == "the meter was offline that week"


def test_bad_review_input_is_refused_and_changes_nothing(ws, partial):
    failed = review.list_failed(ws)
    with pytest.raises(ConfigError, match="needs a reason"):
        review.ignore(ws, [failed[0].id], "   ")
    with pytest.raises(NotFound, match="No failed chunk with id 999999"):
        review.ignore(ws, [failed[0].id, 999999], "why not")
    with pytest.raises(ConfigError, match="No chunk was chosen"):
        review.retry(ws, [])
    with pytest.raises(ConfigError, match="at most"):
        review.ignore(ws, [failed[0].id], "x" * 3000)
    assert review.counts(ws) == {"unreviewed": len(failed), "ignored": 0}
    assert not [e for e in chain.entries(ws) if e["action"].startswith("chunk.")]
    review.ignore(ws, [failed[0].id], "known gap")
    [back] = review.reopen(ws, [failed[0].id])
    assert back.review_status is None and review.counts(ws)["unreviewed"] == len(failed)


def test_a_chunk_of_a_replaced_plan_cannot_be_retried_alone(ws, partial):
    failed = review.list_failed(ws)
    with ws.transaction() as conn:  # a later plan of the stream (as a new full load would make)
        conn.execute(sa.text("UPDATE connector_sync_state SET active_sync_id = active_sync_id + 1000"))
    assert not any(c.retryable for c in review.list_failed(ws))
    with pytest.raises(ConfigError, match="a later sync of its table replaced"):
        review.retry(ws, [failed[0].id], retry_delays=FAST)
    assert len(review.list_failed(ws)) == len(failed)


# --- KPIs fed by an incomplete range carry `incomplete_source` --------------------------------------

@pytest.fixture
def partial_months(ws, pg_database, pg_conn):
    """Daily readings of two sites over 2024 (300 rows, chunks of 50 by updated_at = the
    reading's day) whose source went away after two chunks: the later months' chunks fail."""
    pg_conn.execute("""
        CREATE SCHEMA src;
        CREATE TABLE src.readings (id bigint PRIMARY KEY, site_code text NOT NULL, reading_date date NOT NULL,
                                   kwh numeric(10,2), updated_at timestamptz NOT NULL);
        INSERT INTO src.readings SELECT g, CASE WHEN g % 2 = 0 THEN 'A' ELSE 'B' END,
               ('2024-01-01'::date + g), 1000, '2024-01-01'::timestamptz + g * interval '1 day'
        FROM generate_series(1, 300) g;
    """)
    with FaultProxy((PG_HOST, PG_PORT)) as proxy:
        operations.add_connector(ws, "erp", "postgres", {
            "host": PG_HOST, "port": proxy.port, "database": pg_database, "username": PG_USER, "schema": "src",
            "cursor_field": "updated_at", "chunk_size": 50, "load_type": "delta"})

        def cut_after_two(event):
            if event.chunks_done >= 2 and not proxy.is_cut:
                proxy.cut()

        result = SyncEngine(ws, retry_delays=FAST, on_progress=cut_after_two).run(SyncRequest("erp"))
        assert result.status.value == "partial_success", result.error
        proxy.restore()
        yield result


def _map_and_aggregate(ws, stream: str):
    from esg_workbench.mapping import aggregate, apply, store
    from esg_workbench.mapping.model import Edge, Mapping, TableMapping
    from esg_workbench.mapping.transforms import Unit

    mapping = store.save_mapping(ws, Mapping("meters", "erp", [TableMapping(stream, "purchased_electricity", edges=[
        Edge("activity_date", "reading_date"), Edge("site", "site_code"),
        Edge("energy", "kwh", [Unit("kWh", "MWh")])], id="t1")]), author="test")
    apply.apply_mapping(ws, mapping)
    aggregate.aggregate(ws, estimate=None)
    return aggregate.kpi_rows(ws, kpis=["energy_total"])


def test_values_fed_by_an_ignored_chunk_are_flagged_incomplete_until_it_lands(ws, partial_months):
    from esg_workbench.mapping import flags, incomplete

    failed = review.list_failed(ws)
    assert failed
    review.ignore(ws, [c.id for c in failed], "the ERP archive is offline")
    windows = [incomplete.window(r) for r in review.incomplete_ranges(ws)]
    assert all(w is not None for w in windows)  # timestamp bounds: time windows, not the whole table

    rows = _map_and_aggregate(ws, failed[0].stream)
    months = [r for r in rows if r["period_type"] == "month" and r["site"] is not None]
    flagged = {(r["site"], r["period"]) for r in months if "incomplete_source" in r["quality"]}
    expected = {(r["site"], r["period"]) for r in months if any(incomplete.covers(w, r["period"]) for w in windows)}
    assert flagged == expected
    assert flagged and len(flagged) < len(months)  # the early months landed whole: not flagged
    assert ("A", "2024-01") not in flagged and ("B", "2024-02") not in flagged
    # the chunks are monthly: a failed month has no rows, so an empty value says why
    june = {r["site"]: r for r in months if r["period"] == "2024-06"}
    assert june["A"]["value"] is None and set(june["A"]["quality"]) == {"missing", "incomplete_source"}
    # totals and roll-ups that include a flagged month carry it; the first quarter does not
    year = {r["site"]: r for r in rows if r["period"] == "2024"}
    assert {"incomplete_source", "partial"} <= set(year[None]["quality"]) and "incomplete_source" in year["A"]["quality"]
    q1 = [r for r in rows if r["period"] == "2024-Q1"]  # the cut may come before March or after it
    q1_touched = any(incomplete.covers(w, m) for w in windows for m in ("2024-01", "2024-02", "2024-03"))
    assert q1 and all(("incomplete_source" in r["quality"]) == q1_touched for r in q1)
    assert not any("incomplete_source" in r["quality"] for r in rows if r["period"] == "2024-01")
    assert "failed to sync" in flags.describe("incomplete_source")
    [entry] = [e for e in chain.entries(ws) if e["action"] == "kpi.aggregate"]
    from esg_workbench.mapping.aggregate import kpi_rows
    base_flagged = [r for r in kpi_rows(ws, period_type="month") if r["site"] and "incomplete_source" in r["quality"]
                    and not r["parts"]]  # every base KPI the table feeds (energy, electricity, scope 2 ...)
    assert json.loads(entry["metadata"])["incomplete_source"] == len(base_flagged) >= len(flagged)

    [result] = review.retry(ws, [c.id for c in failed], retry_delays=FAST)
    assert result.status.value == "success" and review.incomplete_ranges(ws) == []
    rows = _map_and_aggregate(ws, failed[0].stream)
    assert rows and not any("incomplete_source" in r["quality"] for r in rows)
    assert {r["period"] for r in rows if r["period_type"] == "month"} >= {"2024-06", "2024-10"}


def test_a_range_that_is_not_a_time_window_flags_every_month():
    import datetime as dt

    from esg_workbench.mapping.incomplete import covers, window
    from esg_workbench.workspace.sync_records import IncompleteRange

    def r(lower, upper, null_cursor=False):
        return IncompleteRange("c", "s", "t", lower, upper, null_cursor, False, None, 1)

    assert window(r((100,), (200,))) is None and covers(None, "1999-01")
    assert window(r(None, None)) is None
    assert window(r((dt.date(2024, 1, 5),), (dt.date(2024, 3, 1),), null_cursor=True)) is None
    # the upper bound is exclusive: midnight on the 1st does not reach into that month
    utc = dt.UTC
    assert window(r((dt.datetime(2024, 1, 5, tzinfo=utc),), (dt.datetime(2024, 3, 1, tzinfo=utc),))) == \
        ("2024-01", "2024-02")
    assert window(r((dt.date(2024, 1, 5),), (dt.datetime(2024, 3, 1, 0, 0, 1),))) == ("2024-01", "2024-03")
    assert window(r(None, (dt.date(2024, 3, 2),))) == (None, "2024-03")
    w = window(r((dt.date(2024, 11, 30),), None))
    assert w == ("2024-11", None) and covers(w, "2031-01") and not covers(w, "2024-10")
