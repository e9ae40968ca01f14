"""Local files: a folder of CSV, Excel, Parquet and JSON lines files, the analyst's
everyday source. The file model (tables, types, chunks, delta) is in files.py.

Options: ``path`` (the folder; required), and the reading options of files.py. A file's
``_esg_file`` is its path below the folder ("/"-separated), so moving the folder keeps
its files' identity. Modification times are the file system's (to the microsecond);
``_esg_etag`` is the modification time and size, as web servers make ETags of files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
from pathlib import Path

from esg_workbench.connectors.files import FileConnector, FileEntry, FileStore
from esg_workbench.core.errors import (
    ConfigError,
    DatabaseMissing,
    EsgError,
    PermissionDenied,
    SourceError,
    TableMissing,
)
from esg_workbench.core.specs import ConnectorSpec


def _entry(root: Path, path: Path, st: os.stat_result) -> FileEntry:
    rel = path.relative_to(root).as_posix()
    modified = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=st.st_mtime_ns // 1000)
    return FileEntry(path=rel, rel=rel, size=st.st_size, modified=modified,
                     etag=f'"{st.st_mtime_ns:x}-{st.st_size:x}"')


class LocalStore(FileStore):
    def __init__(self, spec: ConnectorSpec):
        folder = spec.option("path")
        if not folder:
            raise ConfigError("A local files connector needs the folder: set the option path.")
        self.root = Path(os.path.expanduser(str(folder)))
        self.where = str(self.root)
        self.root_name = self.root.name or "files"

    @contextlib.contextmanager
    def errors(self, what: str):
        try:
            yield
        except EsgError:
            raise
        except FileNotFoundError as exc:
            if not self.root.exists():
                raise DatabaseMissing(f"{what}: the folder {self.root} does not exist.", code="ENOENT",
                                      hint="Check the folder path in the connector settings (or that the "
                                           "drive or network share holding it is connected).") from exc
            name = exc.filename or ""
            raise TableMissing(f"{what}: {name} no longer exists.", code="ENOENT") from exc
        except PermissionError as exc:
            raise PermissionDenied(f"{what}: no permission to read {exc.filename or self.root}.", code="EACCES",
                                   hint="Give your user account read access to the folder and its files.") from exc
        except OSError as exc:
            code = errno.errorcode.get(exc.errno or 0)
            raise SourceError(f"{what} failed: {exc.strerror or exc}", code=code) from exc

    def check(self) -> None:
        if not self.root.exists():
            raise FileNotFoundError(errno.ENOENT, "missing", str(self.root))
        if not self.root.is_dir():
            raise ConfigError(f"{self.root} is a file, not a folder.",
                              hint="Set path to the folder that holds the files (each subfolder is a table).")
        os.listdir(self.root)  # readable?

    def list(self) -> list[FileEntry]:
        self.check()
        entries = []
        for folder, dirs, files in os.walk(self.root, onerror=_raise):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                path = Path(folder) / name
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue  # deleted while listing
                entries.append(_entry(self.root, path, st))
        return entries

    def _path(self, rel: str) -> Path:
        if rel.startswith("/") or ".." in rel.split("/"):
            raise ConfigError(f"{rel} is not below the folder {self.root}.")
        return self.root / rel

    def stat(self, path: str) -> FileEntry | None:
        full = self._path(path)
        try:
            st = full.stat()
        except FileNotFoundError:
            return None
        return FileEntry(path=path, rel=path, size=st.st_size, modified=_entry(self.root, full, st).modified,
                         etag=f'"{st.st_mtime_ns:x}-{st.st_size:x}"')

    def open(self, entry: FileEntry):
        return open(self._path(entry.path), "rb")

    def local_path(self, entry: FileEntry) -> str | None:
        return str(self._path(entry.path))


def _raise(exc: OSError) -> None:
    raise exc


class LocalFilesConnector(FileConnector):
    def __init__(self, spec: ConnectorSpec):
        super().__init__(spec, LocalStore(spec))
