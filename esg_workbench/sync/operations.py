"""Connector operations shared by the CLI and the desktop app: add, validate, discover,
samples, remove, status. Each records what it did in the audit chain."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from esg_workbench.audit import chain
from esg_workbench.core.errors import ConfigError, EsgError
from esg_workbench.core.specs import (
    TABLE_SETTINGS,
    Drift,
    LoadSettings,
    StreamRef,
    TableInfo,
    Timeouts,
    validate_table_settings,
)
from esg_workbench.connectors.registry import OWN_CURSOR, TYPE_OPTIONS, connector_types
from esg_workbench.sync.engine import PASSWORD_MARKER, SyncEngine
from esg_workbench.workspace import connectors_store, schema_cache, secret_records, sync_records
from esg_workbench.workspace.connectors_store import ConnectorRecord
from esg_workbench.workspace.database import Workspace, utcnow

DEFAULT_SAMPLE_ROWS = 100


def check_options(options: dict[str, Any], type_: str) -> None:
    """Refuse bad load settings, per-table settings and timeouts before anything is stored."""
    LoadSettings.from_options(options, own_cursor=type_ in OWN_CURSOR, per_table=TABLE_SETTINGS in options)
    validate_table_settings(options.get(TABLE_SETTINGS), own_cursor=type_ in OWN_CURSOR)
    Timeouts.from_options(options)


def add_connector(workspace: Workspace, name: str, type_: str, options: dict[str, Any],
                  password: str | None = None) -> ConnectorRecord:
    if type_ not in connector_types():
        raise ConfigError(f"Unknown connector type '{type_}'. Known types: {', '.join(connector_types())}.")
    # refuse bad load settings before storing anything
    check_options(options, type_)
    options = {**options, PASSWORD_MARKER: True} if password else dict(options)
    with workspace.transaction() as conn:
        record = connectors_store.add(workspace, conn, name, type_, options)
        if password:
            from esg_workbench import credentials

            credentials.store_secret(record.id, password)  # before commit: no record without its secret
            secret_records.record_set(workspace, conn, record.id, utcnow())
        chain.append(workspace, conn, "connector.add", metadata={
            "connector_id": record.id, "name": record.name, "type": type_, "config": record.config})
    return record


def update_connector(workspace: Workspace, name: str, options: dict[str, Any],
                     password: str | None = None, new_name: str | None = None,
                     expected_updated_at=None) -> ConnectorRecord:
    """Save an edited connector. An editor passes the `updated_at` of the record it
    showed as `expected_updated_at`: if another analyst saved the connector meanwhile,
    this raises ChangedElsewhere ("reload") instead of overwriting their change."""
    check_options(options, get_connector(workspace, name).type)
    with workspace.transaction() as conn:
        record = connectors_store.get(workspace, conn, name)
        if password or record.config.get(PASSWORD_MARKER):
            options = {**options, PASSWORD_MARKER: True}
        connectors_store.update(workspace, conn, record.id, name=new_name, config=options,
                                expected_updated_at=expected_updated_at)
        if password:
            from esg_workbench import credentials

            credentials.store_secret(record.id, password)
            secret_records.record_set(workspace, conn, record.id, utcnow())
        chain.append(workspace, conn, "connector.update", metadata={
            "connector_id": record.id, "name": new_name or record.name, "config": options,
            **({"password_set": True} if password else {})})
        return connectors_store.get(workspace, conn, record.id)


def remove_connector(workspace: Workspace, name: str) -> None:
    with workspace.transaction() as conn:
        record = connectors_store.get(workspace, conn, name)
        connectors_store.delete(workspace, conn, record.id)
        secret_records.forget(workspace, conn, record.id)
        chain.append(workspace, conn, "connector.remove", metadata={"connector_id": record.id, "name": record.name})
    if record.config.get(PASSWORD_MARKER):
        from esg_workbench import credentials

        credentials.delete_secret(record.id)


def get_connector(workspace: Workspace, name: str) -> ConnectorRecord:
    with workspace.read() as conn:
        return connectors_store.get(workspace, conn, name)


def list_connectors(workspace: Workspace) -> list[ConnectorRecord]:
    with workspace.read() as conn:
        return connectors_store.list_all(workspace, conn)


def validate_connector(workspace: Workspace, name: str, engine: SyncEngine | None = None) -> str:
    engine = engine or SyncEngine(workspace)
    record = get_connector(workspace, name)
    connector = None
    try:
        connector = _watched(engine, record)
        message = connector.validate()
    except EsgError as exc:
        with workspace.transaction() as conn:
            connectors_store.update(workspace, conn, record.id, status="failing", status_message=exc.describe())
        raise
    finally:
        if connector is not None:
            connector.close()
    with workspace.transaction() as conn:
        connectors_store.update(workspace, conn, record.id, status="validated", status_message=message)
    return message


@dataclass
class DiscoverResult:
    tables: list[TableInfo]
    drift: dict[str, Drift] = field(default_factory=dict)
    #: tables the source lists but could not read, with why (they stay in the sync's scope)
    unreadable: dict[str, str] = field(default_factory=dict)
    #: what the source noticed per table (file sources: encoding, header row, formats)
    notes: dict[str, list[str]] = field(default_factory=dict)


SAMPLE_MODES = ("first", "random")


def _sample(connector, stream: StreamRef, limit: int, mode: str) -> list[dict[str, Any]]:
    """`first` rows, or a `random` sample (sources that offer one: connector.random_samples)."""
    if mode not in SAMPLE_MODES:
        raise ConfigError(f"The sample mode must be first or random, not '{mode}'.")
    if mode == "random":
        if not getattr(connector, "random_samples", False):
            raise ConfigError(f"Random samples are not available for {connector.spec.type} sources.",
                              hint="Use the first rows (sample mode first) for this connector.")
        return connector.sample(stream, limit, random=True)
    return connector.sample(stream, limit)


def discover_connector(workspace: Workspace, name: str, *, tables: list[str] | None = None,
                       sample_rows: int = 0, sample_mode: str = "first", engine: SyncEngine | None = None,
                       progress: Callable[[str], None] | None = None) -> DiscoverResult:
    """Discover tables into the schema cache. Samples are loaded only for the named
    tables (or for all when `sample_rows` is given with no table list and the source is
    small): a database with thousands of tables is described without reading each.
    `sample_mode`: the first rows, or a random sample (TABLESAMPLE or the source's
    equivalent) for tables whose first rows are not typical."""
    engine = engine or SyncEngine(workspace)
    record = get_connector(workspace, name)
    connector = _watched(engine, record)
    try:
        default_schema = getattr(connector, "schema", None)
        streams = [StreamRef.parse(t, default_schema) for t in tables] if tables else None
        unreadable: dict[str, str] = {}
        try:
            infos = connector.describe(streams)
        except EsgError as exc:
            if not _one_table(exc):
                raise
            infos = []  # one table's trouble: describe them one by one, listing those that fail
            for stream in streams or connector.list_streams():
                try:
                    infos += connector.describe([stream])
                except EsgError as each:
                    if not _one_table(each):
                        raise
                    unreadable[stream.qualified] = each.describe()
        if streams:
            missing = {s.table for s in streams if s.qualified not in unreadable} - {i.stream.table for i in infos}
            if missing:
                from esg_workbench.core.errors import TableMissing

                raise TableMissing(f"No table named {', '.join(sorted(missing))} in the source.")
        with workspace.transaction() as conn:
            drift = schema_cache.save(workspace, conn, record.id, infos, complete=streams is None)
            chain.append(workspace, conn, "connector.discover", metadata={
                "connector_id": record.id, "tables": len(infos),
                "drift": {k: v.describe() for k, v in drift.items()}})
        if sample_rows and (streams or len(infos) <= 50):
            for info in infos:
                if progress:
                    progress(f"sampling {info.stream.qualified}")
                try:
                    info.sample_rows = _sample(connector, info.stream, sample_rows, sample_mode)
                except EsgError as exc:
                    if not _one_table(exc):
                        raise
                    unreadable[info.stream.qualified] = exc.describe()  # no permission to read it, say
                    continue
                with workspace.transaction() as conn:
                    schema_cache.save_samples(workspace, conn, record.id, info.stream, info.sample_rows)
        unreadable.update(getattr(connector, "unreadable", {}))
        notes = {i.stream.qualified: connector.notes(i.stream.qualified) for i in infos} \
            if hasattr(connector, "notes") else {}
    finally:
        connector.close()
    return DiscoverResult(infos, drift, unreadable, {k: v for k, v in notes.items() if v})


def _one_table(exc: EsgError) -> bool:
    """An error of one table (no permission on it, gone, unreadable), not of the source:
    discovery lists it and goes on with the others."""
    from esg_workbench.core.errors import (
        AuthenticationFailed,
        DatabaseMissing,
        SourceError,
        SourceUnreachable,
    )

    return isinstance(exc, SourceError) and not exc.transient and \
        not isinstance(exc, (SourceUnreachable, AuthenticationFailed, DatabaseMissing))


def load_samples(workspace: Workspace, name: str, table: str, limit: int = DEFAULT_SAMPLE_ROWS,
                 engine: SyncEngine | None = None, mode: str = "first") -> list[dict[str, Any]]:
    """Sample rows of one table, from the cache or fetched (and cached) on demand; a
    random sample (`mode`) is drawn afresh each time."""
    engine = engine or SyncEngine(workspace)
    record = get_connector(workspace, name)
    connector = _watched(engine, record)
    try:
        stream = StreamRef.parse(table, getattr(connector, "schema", None))
        with workspace.read() as conn:
            cached = schema_cache.load(workspace, conn, record.id, stream)
        if (mode == "first" and cached and cached[0].sample_rows is not None
                and len(cached[0].sample_rows) >= min(limit, cached[0].row_estimate or limit)):
            return cached[0].sample_rows[:limit]
        rows = _sample(connector, stream, limit, mode)
        with workspace.transaction() as conn:
            schema_cache.save_samples(workspace, conn, record.id, stream, rows)
        return rows
    finally:
        connector.close()


def connector_status(workspace: Workspace, name: str, runs: int = 5) -> dict[str, Any]:
    record = get_connector(workspace, name)
    with workspace.read() as conn:
        states = sync_records.states(workspace, conn, record.id)
        summary = sync_records.ledger_summary(workspace, conn, record.id)
        last_runs = sync_records.runs(workspace, conn, record.id, runs)
        resume = sync_records.resume_point(workspace, conn, record.id)
        failed = []
        for s in states:
            if s.active_sync_id:
                failed += [c for c in sync_records.ledger(conn, s.active_sync_id, s.stream) if c.status == "failed"]
    return {
        "connector": record.name, "type": record.type, "status": record.status,
        "status_message": record.status_message,
        "streams": [{
            "stream": s.stream, "raw_table": s.raw_table, "last_cursor": s.last_cursor,
            "last_row_id": s.last_row_id, "planned_upper": s.planned_upper,
            "sync_under_way": s.active_sync_id,
        } for s in states],
        "chunks": summary,
        # what Resume would continue (None in the list: every table the interrupted run was asked for)
        "resumable": not resume.empty,
        "resume_streams": _resume_names(resume),
        "resume_of_run": resume.origin_run_id if not resume.empty else None,
        "failed_chunks": [{"stream": c.stream, "seq": c.seq, "range": c.range.describe(), "error": c.error} for c in failed],
        "runs": last_runs,
    }


def _resume_names(resume: sync_records.ResumePoint) -> list[str]:
    """The tables a resume would sync, as far as known without the source: an interrupted
    run that never listed its tables is shown by the names it was given (none: all)."""
    if resume.empty:
        return []
    streams = resume.streams()
    if streams is None:
        return list((resume.request or {}).get("tables") or [])
    return streams


def _watched(engine: SyncEngine, record: ConnectorRecord):
    """The connector with every call watched (sync/source_calls.py): a source that stops
    answering during validation, discovery or sampling fails after its read_timeout
    instead of hanging the app."""
    from esg_workbench.core.specs import CancelToken
    from esg_workbench.sync.source_calls import GuardedConnector

    timeouts = Timeouts.from_options(record.config)
    return GuardedConnector(lambda: engine.open_connector(record), CancelToken(), timeouts.read,
                            max(timeouts.read, timeouts.statement))


def options_for(type_: str) -> tuple[str, ...]:
    return TYPE_OPTIONS.get(type_, ())
