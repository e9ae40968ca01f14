"""Plain descriptions of connectors, tables, load settings, chunks and progress."""

from __future__ import annotations

import enum
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from esg_workbench.core.errors import Cancelled, ConfigError

#: options that describe where a source is (stored in connectors.config, never secrets)
LOCATION_OPTIONS = ("host", "port", "database", "schema", "username", "path")
#: options that describe how it is loaded (per connector, and per table under TABLE_SETTINGS)
LOAD_OPTIONS = ("load_type", "cursor_field", "chunk_strategy", "window", "chunk_size", "lookback",
                "primary_key", "detect_deletes", "deletes_every")
#: the connector option holding per-table settings: {"schema.table" or "table": {LOAD_OPTIONS...}}
TABLE_SETTINGS = "tables"
SECRET_OPTIONS = ("password",)
#: options that bound every wait on the source (seconds, or a duration like 2m)
TIMEOUT_OPTIONS = ("connect_timeout", "statement_timeout", "lock_timeout", "read_timeout")
#: metadata key of an Arrow field whose text values a connector means as another type
#: (uuid, timetz, bit, interval): the workspace parses them into it (raw_tables.TEXT_TYPES)
WORKSPACE_TYPE_KEY = b"esg:workspace_type"


class LoadType(str, enum.Enum):
    FULL = "full"
    DELTA = "delta"


class ChunkStrategy(str, enum.Enum):
    TIME = "time"
    ID = "id"
    AUTO = "auto"


WINDOWS = ("day", "week", "month")


class SyncStatus(str, enum.Enum):
    RUNNING = "running"
    SUCCESS = "success"
    PARTIAL_SUCCESS = "partial_success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def alerted(self) -> bool:
        """Whether a sync that ended so sends the configured alert (alerts.py)."""
        return self in (SyncStatus.FAILED, SyncStatus.PARTIAL_SUCCESS)


class ChunkStatus(str, enum.Enum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # a newer sync replanned the stream before this chunk ran


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | float | int | None) -> float:
    """'90' -> 90 s, '15m' -> 900 s, '2h', '1d', '1w'."""
    if text in (None, ""):
        return 0.0
    if isinstance(text, (int, float)):
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(f"'{text}' is not a duration; write e.g. 30m, 2h or 1d.")
    return float(match.group(1)) * _SECONDS[match.group(2)]


# A DuckDB workspace stores a table in row groups of this many rows. A transaction that
# appends whole row groups has them written to the file, compressed, as it goes (DuckDB's
# optimistic writes), so its commit is cheap; a smaller append goes through the
# write-ahead log, and the automatic checkpoints after the commits compress and rewrite
# the partly filled row groups again and again. `auto` chunk sizes from 100,000 rows on
# are therefore whole row groups (sync/planner.py): a 1M-row sync in 9 chunks of 122,880
# rows uses about 17% less CPU than in 20 chunks of 50,000 (README, Benchmarks). Each
# chunk still commits with its checkpoint and ledger row (exactly once, DESIGN.md).
DUCKDB_ROW_GROUP_ROWS = 122_880


@dataclass(frozen=True)
class LoadSettings:
    load_type: LoadType = LoadType.FULL
    cursor_field: str | None = None
    chunk_strategy: ChunkStrategy = ChunkStrategy.AUTO
    window: str | None = None  # day | week | month; None lets `auto` choose
    chunk_size: int | None = None  # None lets `auto` choose
    lookback_seconds: float = 0.0
    #: the key of a table that declares none (set per table); () uses the declared one
    primary_key: tuple[str, ...] = ()
    #: delta loads look for rows deleted in the source (a keys-only pass) ...
    detect_deletes: bool = False
    #: ... at most once every this many delta syncs of the table
    deletes_every: int = 1

    @classmethod
    def from_options(cls, options: dict[str, Any], *, own_cursor: bool = False,
                     per_table: bool = False) -> "LoadSettings":
        """`own_cursor`: the source's tables bring their own cursor (a file's modification
        time), so delta loads and time windows need no cursor_field. `per_table`: tables
        may name their own cursor (checked per table when it is synced)."""
        try:
            load_type = LoadType(options.get("load_type") or "full")
        except ValueError:
            raise ConfigError(f"load_type must be full or delta, not '{options.get('load_type')}'.")
        try:
            strategy = ChunkStrategy(options.get("chunk_strategy") or "auto")
        except ValueError:
            raise ConfigError(
                f"chunk_strategy must be time, id or auto, not '{options.get('chunk_strategy')}'."
            )
        window = options.get("window") or None
        if window is not None and window not in WINDOWS:
            raise ConfigError(f"window must be day, week or month, not '{window}'.")
        chunk_size = options.get("chunk_size")
        if chunk_size not in (None, ""):
            try:
                chunk_size = int(chunk_size)
            except (TypeError, ValueError):
                chunk_size = 0
            if chunk_size < 1:
                raise ConfigError(f"chunk_size must be a positive whole number, not '{options.get('chunk_size')}'.")
        else:
            chunk_size = None
        cursor_field = options.get("cursor_field") or None
        if load_type is LoadType.DELTA and not cursor_field and not own_cursor and not per_table:
            raise ConfigError("A delta load needs a cursor_field (for example updated_at).")
        if strategy is ChunkStrategy.TIME and not cursor_field and not own_cursor and not per_table:
            raise ConfigError("Time-window chunks need a cursor_field (a timestamp column).")
        primary_key = options.get("primary_key") or ()
        if isinstance(primary_key, str):
            primary_key = [k.strip() for k in primary_key.split(",")]
        if not all(isinstance(k, str) and k for k in primary_key):
            raise ConfigError(f"primary_key must name columns, e.g. id or site,day; not '{options.get('primary_key')}'.")
        deletes_every = options.get("deletes_every")
        try:
            deletes_every = 1 if deletes_every in (None, "") else int(deletes_every)
        except (TypeError, ValueError):
            deletes_every = 0
        if deletes_every < 1:
            raise ConfigError(f"deletes_every must be a positive whole number of syncs, not '{options.get('deletes_every')}'.")
        detect = options.get("detect_deletes")
        if isinstance(detect, str):
            if detect.strip().lower() not in ("true", "false", "yes", "no", "1", "0", ""):
                raise ConfigError(f"detect_deletes must be true or false, not '{detect}'.")
            detect = detect.strip().lower() in ("true", "yes", "1")
        return cls(
            load_type=load_type,
            cursor_field=cursor_field,
            chunk_strategy=strategy,
            window=window,
            chunk_size=chunk_size,
            lookback_seconds=parse_duration(options.get("lookback")),
            primary_key=tuple(primary_key),
            detect_deletes=bool(detect),
            deletes_every=deletes_every,
        )

    def with_overrides(self, **changes: Any) -> "LoadSettings":
        values = {k: v for k, v in self.__dict__.items()}
        values.update({k: v for k, v in changes.items() if v is not None})
        return LoadSettings(**values)


@dataclass(frozen=True)
class Timeouts:
    """How long a sync waits for the source, per connector (options TIMEOUT_OPTIONS).

    connect: to open a connection; statement: for one query on the server; lock: for a
    lock another session holds on a table; read: for the next batch of a read or the
    answer to a planning query (a stalled connection is abandoned after it and the read
    retried). keepalive: idle seconds before TCP keepalive probes, so a dead peer is found."""

    connect: float = 10.0
    statement: float = 900.0
    lock: float = 60.0
    read: float = 300.0
    keepalive: float = 30.0

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "Timeouts":
        values = {}
        for option in TIMEOUT_OPTIONS:
            raw = options.get(option)
            if raw in (None, ""):
                continue
            try:
                seconds = parse_duration(raw)
            except ConfigError:
                seconds = 0
            if seconds <= 0:
                raise ConfigError(f"{option} must be a positive duration (e.g. 30 or 2m), not '{raw}'.")
            values[option.removesuffix("_timeout")] = seconds
        return cls(**values)

    @staticmethod
    def given(options: dict[str, Any], which: str, default: float) -> float:
        """The timeout `which` (connect, statement, lock, read) when the connector sets it,
        else a client's own default (a cloud client waits longer than a LAN database)."""
        if options.get(f"{which}_timeout") in (None, ""):
            return default
        return getattr(Timeouts.from_options(options), which)


def table_settings_of(tables: dict[str, Any] | None, stream: "StreamRef") -> dict[str, Any]:
    """A table's own settings from the connector option `tables`, found under its
    qualified name or, failing that, its bare name."""
    if not tables:
        return {}
    if not isinstance(tables, dict):
        raise ConfigError("The connector option 'tables' must map table names to their settings.")
    own = tables.get(stream.qualified) or tables.get(stream.table) or {}
    unknown = set(own) - set(LOAD_OPTIONS)
    if unknown:
        raise ConfigError(f"Unknown setting(s) {', '.join(sorted(unknown))} for table {stream.qualified}.",
                          hint=f"Table settings are: {', '.join(LOAD_OPTIONS)}.")
    return own


def validate_table_settings(tables: dict[str, Any] | None, *, own_cursor: bool = False) -> None:
    """Refuse bad per-table settings before they are stored."""
    for name, own in (tables or {}).items():
        if not isinstance(own, dict):
            raise ConfigError(f"The settings of table {name} must be a set of options, not '{own}'.")
        table_settings_of(tables, StreamRef.parse(name))
        LoadSettings.from_options(own, own_cursor=own_cursor, per_table=True)


@dataclass(frozen=True)
class ConnectorSpec:
    """What a connector needs to reach a source: type, location options, secret."""

    type: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    password: str | None = field(default=None, repr=False)

    def option(self, key: str, default: Any = None) -> Any:
        value = self.options.get(key)
        return default if value in (None, "") else value


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str  # the source's own type name, e.g. "numeric(12,3)"
    nullable: bool = True
    primary_key: bool = False
    #: a coarse family used for planning and mapping: integer, decimal, float, text,
    #: boolean, date, timestamp, timestamptz, time, binary, json, other
    family: str = "other"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ColumnInfo":
        return cls(**data)


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    referred_schema: str | None
    referred_table: str
    referred_columns: tuple[str, ...]


@dataclass(frozen=True)
class StreamRef:
    """A table (or file set) of a source; `schema` may be None where there are none."""

    schema: str | None
    table: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table

    @classmethod
    def parse(cls, text: str, default_schema: str | None = None) -> "StreamRef":
        schema, dot, table = text.partition(".")
        if not dot:
            return cls(default_schema, text)
        return cls(schema, table)


@dataclass
class TableInfo:
    stream: StreamRef
    columns: list[ColumnInfo]
    primary_key: list[str] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    row_estimate: int | None = None
    sample_rows: list[dict[str, Any]] | None = None  # None: not loaded yet (lazy)
    #: a cursor the source itself provides (e.g. a file's modification time); used when
    #: the connector's settings name none
    cursor_field: str | None = None
    #: the columns by which a delta batch replaces earlier rows (rows whose values here
    #: occur in the batch are deleted first); None: the primary key. A file source names
    #: the file, so a changed file's earlier rows all go, however many the new version has
    replace_key: list[str] | None = None

    def column(self, name: str) -> ColumnInfo | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclass(frozen=True)
class Drift:
    added: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    retyped: tuple[tuple[str, str, str], ...] = ()  # (column, old type, new type)

    def __bool__(self) -> bool:
        return bool(self.added or self.dropped or self.retyped)

    def describe(self) -> str:
        parts = []
        if self.added:
            parts.append("added " + ", ".join(self.added))
        if self.dropped:
            parts.append("dropped " + ", ".join(self.dropped))
        if self.retyped:
            parts.append("retyped " + ", ".join(f"{c} ({a} -> {b})" for c, a, b in self.retyped))
        return "; ".join(parts) or "no change"

    @staticmethod
    def between(old: list[ColumnInfo], new: list[ColumnInfo]) -> "Drift":
        before = {c.name: c for c in old}
        after = {c.name: c for c in new}
        return Drift(
            added=tuple(n for n in after if n not in before),
            dropped=tuple(n for n in before if n not in after),
            retyped=tuple(
                (n, before[n].type, after[n].type)
                for n in after
                if n in before and before[n].type != after[n].type
            ),
        )


@dataclass(frozen=True)
class ChunkRange:
    """A half-open range [lower, upper) over the ordering key of a stream.

    Bounds are key prefixes: a bound shorter than the key compares on its own length,
    which is how a time window [2024-03-01, 2024-04-01) over (updated_at, id) is written.
    `None` is open. `null_cursor` selects the rows whose cursor is NULL instead.
    """

    lower: tuple | None = None
    upper: tuple | None = None
    null_cursor: bool = False

    def describe(self) -> str:
        if self.null_cursor:
            return "rows without a cursor value"
        lo = "start" if self.lower is None else ", ".join(map(str, self.lower))
        hi = "end" if self.upper is None else ", ".join(map(str, self.upper))
        return f"[{lo} .. {hi})"


@dataclass(frozen=True)
class ReadScope:
    """What a whole sync reads of a stream: the columns, the ordering key and bounds
    fixed when the sync started (rows after `after`, cursor at most `cursor_max`)."""

    columns: tuple[str, ...]
    key: tuple[str, ...]  # ordering key: (cursor, *primary key) for delta, primary key for full
    after: tuple | None = None  # lower bound over the key (the checkpoint), exclusive
    after_inclusive: bool = False  # inclusive: re-read a look-back window or a tie group
    cursor_field: str | None = None
    cursor_max: Any = None  # inclusive upper bound on the cursor, fixed at sync start
    include_null_cursor: bool = False


@dataclass
class ProgressEvent:
    connector: str
    stream: str
    chunks_done: int
    chunks_planned: int
    chunks_failed: int
    rows_read: int
    rows_written: int
    elapsed_seconds: float
    current_chunk: str = ""
    message: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows_written / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        finished = self.chunks_done + self.chunks_failed
        if finished == 0 or self.chunks_planned <= finished:
            return None if finished == 0 else 0.0
        return self.elapsed_seconds / finished * (self.chunks_planned - finished)


class CancelToken:
    """Set by the user (GUI button, Ctrl+C); checked by the engine between chunks and
    by connectors between the batches of a long read."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True as soon as the user cancels."""
        return self._event.wait(seconds)

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("The sync was cancelled.")
