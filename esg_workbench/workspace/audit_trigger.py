"""The audit chain's server side on a shared PostgreSQL workspace.

A BEFORE INSERT trigger on esg_ingestion_audit, in a SECURITY DEFINER function owned by
the workspace's owner, links every new entry into its organization's chain:

* it refuses an entry for an organization the writing session is no member of, before it
  takes any lock (``session_user``: SET ROLE cannot change it), so nobody can hold
  another organization's head;
* it locks the organization's head row (esg_audit_heads; analysts may only read their
  own), so appends of one organization take turns and other organizations never wait;
* it sets the entry's id (after the lock: ids follow the chain's order), its time, its
  previous hash and its hash, whatever the client sent, and moves the head.

The hash is the one audit/chain.py computes on DuckDB (SHA-256 of the previous hash and a
canonical JSON of the entry): PostgreSQL's to_json escapes text exactly as Python's
json.dumps(ensure_ascii=False) does, keys are written in sorted order, the time as
ISO 8601 with microseconds. So one verify checks both.

Analysts keep SELECT and INSERT on the audit table and SELECT on the heads: they cannot
change, delete or forge an entry, nor move a head. The owner can (it owns the tables):
against the owner, an anchor written down earlier (audit anchor, KPI exports) is the
witness.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # postgres_security imports this module; no cycle at run time
    from esg_workbench.workspace.postgres_security import _Setup

FUNCTION = "esg_audit_chain_link"
TRIGGER = "esg_audit_chain"
#: the owner's policy on the heads (its trigger writes every organization's; a
#: non-superuser owner is subject to FORCE ROW LEVEL SECURITY). The entries stay hidden.
OWNER_POLICY = "esg_audit_chain_owner"
GENESIS = "0" * 64
#: the entry's fields in the order of the canonical JSON (sorted keys)
_JSON_FIELDS = ("action", "actor", "at", "input_hash", "metadata", "organization_id", "output_hash")


def _json_field(name: str) -> str:
    value = "to_char(NEW.at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')" if name == "at" else f"NEW.{name}"
    return f"coalesce(to_json({value})::text, 'null')"


def function_sql(setup: "_Setup") -> str:
    from esg_workbench.workspace.postgres_security import _literal

    schema_name = setup.q(setup.scalar("SELECT current_schema()"))
    heads = f"{schema_name}.esg_audit_heads"
    body = " || ',' || ".join(f"'\"{name}\":' || {_json_field(name)}" for name in _JSON_FIELDS)
    return f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    head_entries bigint;
    head_hash text;
BEGIN
    -- before any lock: only a member of the organization writes (and waits for) its chain
    IF NOT EXISTS (SELECT 1 FROM pg_roles r
                   WHERE r.rolname = {_literal(setup.roles.organization_role_prefix)} || NEW.organization_id
                     AND pg_has_role(session_user, r.oid, 'MEMBER')) THEN
        RAISE EXCEPTION 'an audit entry of organization "%" may only be written by its members', NEW.organization_id
            USING ERRCODE = '42501';
    END IF;
    SELECT h.entries, h.last_hash INTO head_entries, head_hash
    FROM {heads} h WHERE h.organization_id = NEW.organization_id FOR UPDATE;
    IF NOT FOUND THEN  -- the organization's first entry (the upgrade to version 3 recorded the older chains' heads)
        INSERT INTO {heads} (organization_id, entries, last_hash, updated_at)
        VALUES (NEW.organization_id, 0, '{GENESIS}', clock_timestamp() AT TIME ZONE 'UTC')
        ON CONFLICT (organization_id) DO NOTHING;
        SELECT h.entries, h.last_hash INTO head_entries, head_hash
        FROM {heads} h WHERE h.organization_id = NEW.organization_id FOR UPDATE;
    END IF;
    -- the organization's own id sequence (postgres_security.ID_STRIDE), never the client's id
    NEW.id := nextval(format('%I.%I', {_literal(setup.roles.organization_role_prefix)} || NEW.organization_id,
                             'esg_ingestion_audit_id_seq')::regclass);
    NEW.at := date_trunc('microseconds', clock_timestamp() AT TIME ZONE 'UTC');
    NEW.previous_hash := head_hash;
    NEW.entry_hash := encode(sha256(convert_to(head_hash || '{{' || {body} || '}}', 'UTF8')), 'hex');
    UPDATE {heads} SET entries = head_entries + 1, last_hash = NEW.entry_hash, updated_at = NEW.at
    WHERE organization_id = NEW.organization_id;
    RETURN NEW;
END
$fn$"""


def install(setup: "_Setup") -> None:
    """The trigger, its function and the owner's policies, changing only what differs
    (a second init-postgres changes nothing). Called at the end of secure_tables."""
    from esg_workbench.workspace.postgres_security import _body

    sql = function_sql(setup)
    current = setup.scalar("SELECT p.prosrc FROM pg_proc p "
                           "WHERE p.proname = :n AND p.pronamespace = current_schema()::regnamespace", n=FUNCTION)
    if current is None or current.strip() != _body(sql):
        setup.run(sql, f"{'created' if current is None else 'updated'} function {FUNCTION}() "
                       "(the server links audit entries and keeps the chain's head)")
    function_owner = setup.scalar("SELECT pg_get_userbyid(p.proowner) FROM pg_proc p "
                                  "WHERE p.proname = :n AND p.pronamespace = current_schema()::regnamespace",
                                  n=FUNCTION)
    setup.policy("esg_audit_heads", OWNER_POLICY, "(true)", "(true)", to=function_owner)
    if not setup.scalar("SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('esg_ingestion_audit') "
                        "AND tgname = :n)", n=TRIGGER):
        setup.run(f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON esg_ingestion_audit "
                  f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()",
                  "the server computes every audit entry's hashes")
