"""The hash chain over esg_ingestion_audit: append and verify.

entry_hash = SHA-256 over the previous entry's hash and a canonical JSON of this
entry's fields. Changing any field of any entry, or deleting or reordering entries,
breaks the chain at that entry. Appends are serialized (the workspace's write lock on
DuckDB, an advisory lock per organization on PostgreSQL) so parallel writers never fork
the chain. The chain is per organization: each organization verifies its own.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from esg_workbench.workspace.database import Workspace, utcnow
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
    workspace.lock_audit_chain(conn)
    org = workspace.organization_id
    previous = conn.execute(
        sa.select(audit.c.entry_hash).where(audit.c.organization_id == org).order_by(audit.c.id.desc()).limit(1)
    ).scalar() or GENESIS
    actor = default_actor(workspace, actor)
    meta_text = canonical(metadata)
    at = utcnow()
    entry = _entry_hash(previous, org, actor, action, input_hash, output_hash, meta_text, at)
    conn.execute(sa.insert(audit).values(
        organization_id=org, actor=actor, action=action, input_hash=input_hash, output_hash=output_hash,
        previous_hash=previous, entry_hash=entry, metadata=meta_text, at=at,
    ))
    return entry


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    first_bad_id: int | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"The audit chain is intact ({self.entries} entries verified)."
        return f"The audit chain is broken at entry {self.first_bad_id}: {self.reason}"


def verify(workspace: Workspace) -> VerifyResult:
    """Recompute every hash in order; name the first entry that does not match."""
    previous = GENESIS
    count = 0
    with workspace.read() as conn:
        rows = conn.execute(
            sa.select(audit).where(audit.c.organization_id == workspace.organization_id).order_by(audit.c.id)
        )
        for row in rows:
            count += 1
            if row.previous_hash != previous:
                return VerifyResult(False, count, row.id, "it does not point to the entry before it (an entry was removed or inserted)")
            expected = _entry_hash(previous, row.organization_id, row.actor, row.action, row.input_hash,
                                   row.output_hash, row.metadata, row.at)
            if expected != row.entry_hash:
                return VerifyResult(False, count, row.id, "its content was changed after it was written")
            previous = row.entry_hash
    return VerifyResult(True, count)


def entries(workspace: Workspace, limit: int = 200) -> list[dict[str, Any]]:
    with workspace.read() as conn:
        rows = conn.execute(
            sa.select(audit).where(audit.c.organization_id == workspace.organization_id)
            .order_by(audit.c.id.desc()).limit(limit)
        )
        return [dict(r._mapping) for r in rows]
