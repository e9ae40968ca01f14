"""The protocol every connector implements."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterator, Protocol

from esg_workbench.core.errors import EsgError

from esg_workbench.core.specs import (
    CancelToken,
    ChunkRange,
    ConnectorSpec,
    ReadScope,
    StreamRef,
    TableInfo,
)

if TYPE_CHECKING:
    import pyarrow as pa


class Connector(Protocol):
    spec: ConnectorSpec

    def validate(self) -> str:
        """Connect and check the schema is readable. Returns a short success message;
        raises a SourceError subclass that says exactly what is wrong."""

    def list_streams(self) -> list[StreamRef]:
        """Tables of the configured schema, cheaply (thousands are fine)."""

    def describe(self, streams: list[StreamRef] | None = None) -> list[TableInfo]:
        """Columns, types, keys and row estimates; no sample rows (those are lazy)."""

    def sample(self, stream: StreamRef, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` rows as JSON-safe dicts."""

    # --- planning: cheap aggregate queries over a ReadScope --------------------------

    def cursor_max(self, stream: StreamRef, cursor_field: str) -> Any: ...

    def count(self, stream: StreamRef, scope: ReadScope) -> int: ...

    def key_range(self, stream: StreamRef, scope: ReadScope) -> tuple[Any, Any, int]:
        """min, max and row count of the (single) key column within the scope."""

    def boundaries(self, stream: StreamRef, scope: ReadScope, every: int,
                   within: ChunkRange | None = None) -> list[tuple]:
        """Every `every`-th key in key order (excluding the first): chunk boundaries."""

    def window_counts(self, stream: StreamRef, scope: ReadScope, window: str) -> list[tuple[Any, int]]:
        """(window start, rows) for each non-empty window of the cursor, in order."""

    def null_cursor_count(self, stream: StreamRef, cursor_field: str) -> int: ...

    # --- reading -----------------------------------------------------------------------

    def read(self, stream: StreamRef, scope: ReadScope, chunk: ChunkRange,
             cancel: CancelToken | None = None) -> "Iterator[pa.RecordBatch]":
        """The chunk's rows, ordered by the scope key, as Arrow record batches."""

    def close(self) -> None: ...


class TranslatesErrors:
    """`with self.errors("Reading x"):` turns whatever a driver raises into the
    connector's own SourceError (`translate_error`), so none reaches the user raw."""

    def translate_error(self, exc: BaseException, what: str) -> EsgError:
        raise NotImplementedError

    @contextlib.contextmanager
    def errors(self, what: str):
        try:
            yield
        except EsgError:
            raise
        except Exception as exc:  # drivers raise all sorts
            # SQLAlchemy wraps the driver's error: translate the driver's own
            raise self.translate_error(getattr(exc, "orig", None) or exc, what) from exc


def close_quietly(resource: Any) -> None:
    """Close a driver connection that may already be broken: closing is all we want."""
    if resource is not None:
        with contextlib.suppress(Exception):
            resource.close()
