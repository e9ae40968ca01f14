"""The hash chain over esg_ingestion_audit: append, verify, and the chain's head.

entry_hash = SHA-256 over the previous entry's hash and a canonical JSON of this
entry's fields. Changing any field of any entry, or deleting or reordering entries,
breaks the chain at that entry. The chain is per organization: each organization
verifies its own.

The head (how many entries, the last hash) is recorded in esg_audit_heads with every
append, so removing the last entries, or all of them, is found too; an anchor (a head
written down earlier, `audit anchor`, printed on every KPI export) is found again in a
later chain, or the chain was rewritten.

Who computes the hashes:
* a shared PostgreSQL workspace: the server, in a trigger owned by the workspace's owner
  (workspace/audit_trigger.py). The client sends the entry's content only; it can neither
  choose the hashes nor write the head.
* DuckDB, or a PostgreSQL database used without init-postgres: this module, serialized by
  the workspace's write lock (DuckDB) or a row lock on the head (PostgreSQL).
Both compute `_entry_hash` the same way, so `verify` checks either.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from esg_workbench.core.errors import ConfigError
from esg_workbench.workspace.database import Workspace, utcnow
from esg_workbench.workspace.schema import esg_audit_heads as heads
from esg_workbench.workspace.schema import esg_ingestion_audit as audit

GENESIS = "0" * 64


def sha256_json(value: Any) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some service environments
        return "unknown"


def default_actor(workspace: Workspace | None = None, label: str | None = None) -> str:
    """Who writes an entry: on PostgreSQL the database role and the OS user, as
    'alice_db (os: alice)' (a trigger on a shared workspace refuses an entry whose role
    part is not the role writing it), plus the caller's own label when it says more
    ('alice_db (os: alice; via: esg-workbench demo)'); on DuckDB the label or the OS user."""
    user = os_user()
    if workspace is None or not workspace.database_role:
        return label or user
    via = f"; via: {label[:80]}" if label and label != user else ""
    return f"{workspace.database_role} (os: {user}{via})"


def _entry_hash(previous: str, organization_id: str, actor: str, action: str,
                input_hash: str | None, output_hash: str | None, metadata: str, at: dt.datetime) -> str:
    body = canonical({
        "organization_id": organization_id,
        "actor": actor,
        "action": action,
        "input_hash": input_hash,
        "output_hash": output_hash,
        "metadata": metadata,
        "at": at.isoformat(timespec="microseconds"),
    })
    return hashlib.sha256((previous + body).encode()).hexdigest()


def append(workspace: Workspace, conn: sa.Connection, action: str, *, metadata: dict[str, Any],
           input_hash: str | None = None, output_hash: str | None = None, actor: str | None = None) -> str:
    """Append an entry inside the caller's transaction; returns its hash."""
    org = workspace.organization_id
    actor = default_actor(workspace, actor)
    content = dict(organization_id=org, actor=actor, action=action, input_hash=input_hash, output_hash=output_hash,
                   metadata=canonical(metadata))
    if workspace.secured:
        # the server's trigger sets id, at, previous_hash and entry_hash, and moves the head
        return conn.execute(sa.insert(audit).values(**content, previous_hash="", entry_hash="", at=utcnow())
                            .returning(audit.c.entry_hash)).scalar_one()
    count, previous = _locked_head(workspace, conn)
    at = utcnow()
    entry = _entry_hash(previous, org, actor, action, input_hash, output_hash, content["metadata"], at)
    conn.execute(sa.insert(audit).values(**content, previous_hash=previous, entry_hash=entry, at=at))
    conn.execute(sa.update(heads).where(heads.c.organization_id == org)
                 .values(entries=count + 1, last_hash=entry, updated_at=at))
    return entry


def _locked_head(workspace: Workspace, conn: sa.Connection) -> tuple[int, str]:
    """(entries, last hash) of the organization's head, locked until `conn` commits (on
    DuckDB the workspace's write lock does that). A chain without a head yet (made before
    heads were recorded) gets the head of its entries."""
    org = workspace.organization_id
    query = sa.select(heads.c.entries, heads.c.last_hash).where(heads.c.organization_id == org)
    if not workspace.is_duckdb:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is not None:
        return int(row.entries), row.last_hash
    count, last = _walked_head(conn, org)
    values = dict(organization_id=org, entries=count, last_hash=last, updated_at=utcnow())
    if workspace.is_duckdb:
        conn.execute(sa.insert(heads).values(**values))
    else:
        from sqlalchemy.dialects.postgresql import insert

        conn.execute(insert(heads).values(**values).on_conflict_do_nothing())
        row = conn.execute(query).first()
        return int(row.entries), row.last_hash
    return count, last


def _walked_head(conn: sa.Connection, org: str) -> tuple[int, str]:
    count = conn.execute(sa.select(sa.func.count()).select_from(audit).where(audit.c.organization_id == org)).scalar()
    last = conn.execute(sa.select(audit.c.entry_hash).where(audit.c.organization_id == org)
                        .order_by(audit.c.id.desc()).limit(1)).scalar()
    return int(count or 0), last or GENESIS


@dataclass(frozen=True)
class Head:
    """A chain's head: how many entries, and the hash of the last one (GENESIS for none).
    Written down as ENTRIES:HASH, it is an anchor a later verify checks the chain against."""

    entries: int
    last_hash: str

    def __str__(self) -> str:
        return f"{self.entries}:{self.last_hash}"

    @classmethod
    def parse(cls, text: str) -> "Head":
        hint = "Give the anchor as `audit anchor` prints it: ENTRIES:HASH (e.g. 42:3f9a...), 64 hex digits."
        count, sep, digest = (text or "").strip().partition(":")
        digest = digest.strip().lower()
        if not sep or not count.strip().isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef"
                                                                               for c in digest):
            raise ConfigError(f"'{text[:80]}' is not an audit anchor.", hint=hint)
        head = cls(int(count), digest)
        if (head.entries == 0) != (head.last_hash == GENESIS):
            raise ConfigError(f"'{text[:80]}' is not an audit anchor: an empty chain has hash {GENESIS[:8]}..., "
                              "and only an empty one.", hint=hint)
        return head


def recorded_head(workspace: Workspace) -> Head | None:
    """The organization's head as recorded with the last append (None: none recorded yet)."""
    with workspace.read() as conn:
        row = conn.execute(sa.select(heads.c.entries, heads.c.last_hash)
                           .where(heads.c.organization_id == workspace.organization_id)).first()
    return Head(int(row.entries), row.last_hash) if row is not None else None


def anchor(workspace: Workspace) -> Head:
    """The head to write down now: the recorded one, else (no entry since heads were
    recorded) the end of the entries. `verify(anchor=...)` checks a later chain against it."""
    head = recorded_head(workspace)
    if head is not None:
        return head
    with workspace.read() as conn:
        return Head(*_walked_head(conn, workspace.organization_id))


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    first_bad_id: int | None = None
    reason: str = ""
    #: the head recorded in the workspace (None: none recorded yet)
    head: Head | None = None
    #: the anchor the chain was checked against, if one was given
    anchor: Head | None = None

    def describe(self) -> str:
        if not self.ok:
            where = f"at entry {self.first_bad_id}" if self.first_bad_id is not None else "at its end"
            return f"The audit chain is broken {where}: {self.reason}"
        text = f"The audit chain is intact ({self.entries} entries verified"
        if self.head is not None:
            text += ", matching its recorded head"
        if self.anchor is not None:
            text += f", and it continues the anchor {self.anchor.entries}:{self.anchor.last_hash[:12]}..."
        return text + ")."


def verify(workspace: Workspace, anchor: Head | None = None) -> VerifyResult:
    """Recompute every hash in order and name the first entry that does not match; then
    compare the end of the chain with the recorded head (entries removed at the end, or
    all of them) and, if given, with an anchor written down earlier (the chain up to the
    anchor's entry must end in the anchor's hash)."""
    previous = GENESIS
    count = 0
    anchored = anchor is None or anchor.entries == 0
    head = recorded_head(workspace)
    with workspace.read() as conn:
        rows = conn.execute(
            sa.select(audit).where(audit.c.organization_id == workspace.organization_id).order_by(audit.c.id)
        )
        for row in rows:
            count += 1
            if row.previous_hash != previous:
                return VerifyResult(False, count, row.id, "it does not point to the entry before it "
                                    "(an entry was removed or inserted)", head, anchor)
            expected = _entry_hash(previous, row.organization_id, row.actor, row.action, row.input_hash,
                                   row.output_hash, row.metadata, row.at)
            if expected != row.entry_hash:
                return VerifyResult(False, count, row.id, "its content was changed after it was written", head, anchor)
            previous = row.entry_hash
            if anchor is not None and count == anchor.entries:
                if previous != anchor.last_hash:
                    return VerifyResult(False, count, row.id, f"the chain was rewritten: entry {count} of the chain "
                                        f"does not end in the anchor's hash {anchor.last_hash[:12]}...", head, anchor)
                anchored = True
    if not anchored:
        return VerifyResult(False, count, None, f"the chain has {count} entries, fewer than the {anchor.entries} "
                            "of the anchor: entries were removed", head, anchor)
    if head is not None and (head.entries, head.last_hash) != (count, previous):
        what = (f"the recorded head says {head.entries} entries, the chain has {count}: "
                + ("entries were removed" if count < head.entries else "the chain and its head disagree"))
        if head.entries == count:
            what = "the last entry's hash is not the one recorded in the head: the chain was rewritten"
        return VerifyResult(False, count, None, what, head, anchor)
    return VerifyResult(True, count, None, "", head, anchor)


def entries(workspace: Workspace, limit: int = 200) -> list[dict[str, Any]]:
    with workspace.read() as conn:
        rows = conn.execute(
            sa.select(audit).where(audit.c.organization_id == workspace.organization_id)
            .order_by(audit.c.id.desc()).limit(limit)
        )
        return [dict(r._mapping) for r in rows]
