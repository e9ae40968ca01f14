"""Attacks on the audit chain and on the locks of a shared workspace (issue 11, items 2 and 4).

Each attack statement is asserted to be refused, to be harmless, or to be found by
`audit verify`:

* on a shared PostgreSQL workspace an analyst can neither change, delete, truncate nor
  forge entries, nor move the chain's head; the server computes every hash;
* what only the workspace's owner (or, on DuckDB, the file's user) can do — delete the
  last entries or all of them, edit an entry and recompute the hashes after it — is found
  against the recorded head, and a rewrite of the head too is found against an anchor
  written down earlier;
* a hostile analyst of one organization holding every lock it can take (the advisory
  keys the app used to take, every key it sees in pg_locks, its own lock rows, an audit
  entry in an open transaction) does not make another organization's analyst wait.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import threading

import psycopg
import pytest
import sqlalchemy as sa

from esg_workbench.audit import chain
from esg_workbench.core.errors import ConfigError
from esg_workbench.demo import run_demo
from esg_workbench.workspace import open_workspace, organizations
from esg_workbench.workspace.database import MIGRATION_LOCK_KEY
from esg_workbench.workspace.schema import esg_audit_heads as heads
from esg_workbench.workspace.schema import esg_ingestion_audit as audit
from tests.conftest import PG_HOST, PG_PORT
from tests.pg_shared import shared_database

INSUFFICIENT_PRIVILEGE = "42501"  # also a row-level security WITH CHECK violation
_orgs = itertools.count(1)


def fill(ws, n: int = 5) -> None:
    for i in range(n):
        with ws.transaction() as conn:
            chain.append(ws, conn, "test.step", metadata={"i": i, "text": "ünï \"quoted\"\n\\"}, input_hash=f"{i:064x}")


def rows(ws_or_conn, org: str | None = None) -> list:
    """The organization's entries in chain order (as the file's user / the owner)."""
    query = sa.select(audit).order_by(audit.c.id)
    if org:
        query = query.where(audit.c.organization_id == org)
    with ws_or_conn.read() as conn:
        return conn.execute(query).all()


def rehashed(entries: list, previous: str) -> list[tuple[int, str, str]]:
    """(id, previous_hash, entry_hash) of `entries` recomputed after `previous`, as a
    forger who knows the algorithm would."""
    out = []
    for row in entries:
        entry = chain._entry_hash(previous, row.organization_id, row.actor, row.action, row.input_hash,
                                  row.output_hash, row.metadata, row.at)
        out.append((row.id, previous, entry))
        previous = entry
    return out


# --- DuckDB: the file's user can do anything; verify finds what the head and anchors show --------

@pytest.fixture
def duck(tmp_path):
    ws = open_workspace(str(tmp_path / "w.duckdb"))
    fill(ws)
    yield ws
    ws.close()


def duck_sql(ws, sql: str, **params) -> None:
    with ws.transaction() as conn:
        conn.execute(sa.text(sql), params)


def test_duckdb_tail_truncation_is_found(duck):
    anchor = chain.anchor(duck)
    assert anchor == chain.Head(5, rows(duck)[-1].entry_hash)
    last_two = [r.id for r in rows(duck)[-2:]]
    duck_sql(duck, "DELETE FROM esg_ingestion_audit WHERE id IN (:a, :b)", a=last_two[0], b=last_two[1])
    result = chain.verify(duck)
    assert not result.ok and result.entries == 3
    assert "head says 5 entries, the chain has 3" in result.reason and "removed" in result.reason
    assert not chain.verify(duck, anchor=anchor).ok


def test_duckdb_deleting_every_entry_is_found(duck):
    duck_sql(duck, "DELETE FROM esg_ingestion_audit")
    result = chain.verify(duck)
    assert not result.ok and result.entries == 0 and "removed" in result.reason
    assert "broken at its end" in result.describe()


def test_duckdb_edit_and_rehash_is_found_by_the_head(duck):
    entries = rows(duck)
    duck_sql(duck, "UPDATE esg_ingestion_audit SET metadata = :m WHERE id = :id", m='{"i":99}', id=entries[2].id)
    edited = rows(duck)
    for id_, previous, entry in rehashed(edited[2:], edited[1].entry_hash):
        duck_sql(duck, "UPDATE esg_ingestion_audit SET previous_hash = :p, entry_hash = :e WHERE id = :id",
                 p=previous, e=entry, id=id_)
    result = chain.verify(duck)
    assert not result.ok and "rewritten" in result.reason


def test_duckdb_forged_inserts_are_found(duck):
    at = rows(duck)[-1].at
    # made-up hashes
    duck_sql(duck, "INSERT INTO esg_ingestion_audit (id, organization_id, actor, action, previous_hash, entry_hash, "
                   "metadata, \"at\") VALUES (1000, 'default', 'mallory', 'kpi.aggregate', :p, :e, '{}', :at)",
             p="f" * 64, e="e" * 64, at=at)
    result = chain.verify(duck)
    assert not result.ok and result.first_bad_id == 1000 and "does not point" in result.reason
    # ... and an entry whose hashes are right (the forger knows the algorithm) but not in the head
    duck_sql(duck, "DELETE FROM esg_ingestion_audit WHERE id = 1000")
    last = rows(duck)[-1]
    entry = chain._entry_hash(last.entry_hash, "default", "mallory", "kpi.aggregate", None, None, "{}", at)
    duck_sql(duck, "INSERT INTO esg_ingestion_audit (id, organization_id, actor, action, previous_hash, entry_hash, "
                   "metadata, \"at\") VALUES (1001, 'default', 'mallory', 'kpi.aggregate', :p, :e, '{}', :at)",
             p=last.entry_hash, e=entry, at=at)
    result = chain.verify(duck)
    assert not result.ok and "head says 5 entries, the chain has 6" in result.reason


def test_duckdb_a_rewrite_with_its_head_is_found_only_against_an_anchor(duck):
    """What a single-user file cannot prove: its user may rewrite entries and head alike.
    An anchor written down before (audit anchor, a KPI export) still finds it."""
    anchor = chain.anchor(duck)
    entries = rows(duck)
    duck_sql(duck, "UPDATE esg_ingestion_audit SET actor = 'mallory' WHERE id = :id", id=entries[1].id)
    fixed = rehashed(rows(duck)[1:], entries[0].entry_hash)
    for id_, previous, entry in fixed:
        duck_sql(duck, "UPDATE esg_ingestion_audit SET previous_hash = :p, entry_hash = :e WHERE id = :id",
                 p=previous, e=entry, id=id_)
    duck_sql(duck, "UPDATE esg_audit_heads SET last_hash = :h", h=fixed[-1][2])
    assert chain.verify(duck).ok  # the file alone cannot tell
    result = chain.verify(duck, anchor=anchor)
    assert not result.ok and result.first_bad_id == entries[-1].id and "rewritten" in result.reason
    # deleting entries and head alike looks like a new workspace, except against an anchor
    duck_sql(duck, "DELETE FROM esg_ingestion_audit")
    duck_sql(duck, "DELETE FROM esg_audit_heads")
    assert chain.verify(duck).ok
    result = chain.verify(duck, anchor=anchor)
    assert not result.ok and "fewer than the 5 of the anchor" in result.reason


def test_an_anchor_still_verifies_as_the_chain_grows(duck):
    anchor = chain.anchor(duck)
    fill(duck, 3)
    result = chain.verify(duck, anchor=chain.Head.parse(str(anchor)))
    assert result.ok and result.entries == 8 and "continues the anchor 5:" in result.describe()
    assert chain.verify(duck, anchor=chain.Head(0, chain.GENESIS)).ok


@pytest.mark.parametrize("text", ["", "5", "5:abc", "x:" + "a" * 64, "5:" + "g" * 64, "0:" + "a" * 64,
                                  "3:" + chain.GENESIS])
def test_a_bad_anchor_is_refused_plainly(text):
    with pytest.raises(ConfigError) as caught:
        chain.Head.parse(text)
    assert "is not an audit anchor" in caught.value.message and "ENTRIES:HASH" in caught.value.hint


def test_a_chain_older_than_heads_gets_its_head_at_the_next_append(duck):
    duck_sql(duck, "DELETE FROM esg_audit_heads")  # as a workspace made before heads were recorded
    assert chain.verify(duck).ok and chain.verify(duck).head is None
    fill(duck, 1)
    result = chain.verify(duck)
    assert result.ok and result.head == chain.Head(6, rows(duck)[-1].entry_hash)


# --- PostgreSQL, shared: the server links the chain ---------------------------------------------

class Team:
    def __init__(self, shared):
        self.shared = shared
        self.opened: list = []

    def new_org(self, entries: int = 5):
        """A fresh organization with its analyst and a chain of `entries` entries."""
        n = next(_orgs)
        org, role = f"org{n}", self.shared.role(f"analyst{n}")
        organizations.add_organization(self.shared.admin_url, org)
        organizations.add_user(self.shared.admin_url, role, [org])
        ws = open_workspace(self.shared.url(role))
        self.opened.append(ws)
        fill(ws, entries)
        return ws, role

    def connect(self, role: str, org: str) -> psycopg.Connection:
        """The analyst's own plain SQL session (as psql would be), organization set."""
        conn = psycopg.connect(host=PG_HOST, port=PG_PORT, user=role, dbname=self.shared.database, autocommit=True)
        conn.execute("SELECT set_config('esg.organization_id', %s, false)", (org,))
        return conn


@pytest.fixture(scope="module")
def team():
    with shared_database() as shared:
        organizations.init_postgres(shared.url(shared.role("first")), shared.admin_url, organization="org0")
        t = Team(shared)
        try:
            yield t
        finally:
            for ws in t.opened:
                ws.close()


def refused(conn: psycopg.Connection, sql: str, params=None, code: str = INSUFFICIENT_PRIVILEGE) -> str:
    """Run an attack statement; it must fail with `code`. Returns the server's message."""
    with pytest.raises(psycopg.Error) as caught:
        with conn.transaction():
            conn.execute(sql, params)
    assert caught.value.sqlstate == code, (sql, caught.value.sqlstate, str(caught.value))
    return str(caught.value)


def pg_rows(team, org: str) -> list:
    with team.shared.admin() as conn:
        return conn.execute("SELECT id, previous_hash, entry_hash, metadata, actor, at FROM esg_ingestion_audit "
                            "WHERE organization_id = %s ORDER BY id", (org,)).fetchall()


def test_postgres_the_server_computes_the_same_hashes_as_the_client(team):
    ws, _ = team.new_org()
    with ws.transaction() as conn:  # text JSON escapes differently elsewhere: control characters, U+2028, emoji
        chain.append(ws, conn, "odd\x01\x1f\t\u2028\x7f😀", metadata={"k": "\x00\u2029"}, output_hash="ab" * 32,
                     actor="label \"with\" quotes \\ and ünïcode")
    entries = rows(ws, ws.organization_id)
    assert entries[0].previous_hash == chain.GENESIS
    assert [r.entry_hash for r in entries] == [e for _, _, e in rehashed(entries, chain.GENESIS)]
    result = chain.verify(ws)
    assert result.ok and result.entries == 6 and result.head == chain.Head(6, entries[-1].entry_hash)
    assert entries[-1].action.startswith("odd\x01") and chain.anchor(ws) == result.head


def test_postgres_an_analyst_cannot_change_delete_or_forge_entries_or_the_head(team):
    ws, role = team.new_org()
    org = ws.organization_id
    other_ws, _ = team.new_org()
    other_head = chain.anchor(other_ws)
    before = chain.anchor(ws)
    sql = team.connect(role, org)
    try:
        last_id = rows(ws, org)[-1].id
        refused(sql, "DELETE FROM esg_ingestion_audit WHERE id = %s", (last_id,))  # tail truncation
        refused(sql, "DELETE FROM esg_ingestion_audit")  # every entry
        refused(sql, "TRUNCATE esg_ingestion_audit")
        refused(sql, "UPDATE esg_ingestion_audit SET metadata = '{\"i\":99}' WHERE id = %s", (last_id,))  # edit
        refused(sql, "UPDATE esg_audit_heads SET entries = 0")  # move the head
        refused(sql, "DELETE FROM esg_audit_heads")
        refused(sql, "INSERT INTO esg_audit_heads (organization_id, entries, last_hash, updated_at) "
                     "VALUES (%s, 0, %s, now())", (org + "x", chain.GENESIS))
        refused(sql, "SELECT * FROM esg_audit_heads FOR UPDATE")  # hold the head
        refused(sql, "ALTER TABLE esg_ingestion_audit DISABLE TRIGGER esg_audit_chain")
        refused(sql, "DROP TRIGGER esg_audit_chain ON esg_ingestion_audit")
        refused(sql, "CREATE OR REPLACE FUNCTION esg_audit_chain_link() RETURNS trigger LANGUAGE plpgsql "
                     "AS $$ BEGIN RETURN NEW; END $$")
        refused(sql, "SELECT esg_audit_chain_link()", code="0A000")  # a trigger function cannot be called
        # an entry for another organization: refused before it could lock that organization's head
        message = refused(sql, "INSERT INTO esg_ingestion_audit (organization_id, actor, action, previous_hash, "
                               "entry_hash, metadata, at) VALUES (%s, %s, 'x', '', '', '{}', now())",
                          (other_ws.organization_id, f"{role} (os: x)"))
        assert "may only be written by its members" in message
        roles = ws.roles
        refused(sql, f'SET ROLE "{roles.organization(other_ws.organization_id)}"')  # the other organization's role
        sql.execute(f'SET ROLE "{roles.organization(org)}"')  # the organization's role: still refused
        refused(sql, "DELETE FROM esg_ingestion_audit")
        refused(sql, "INSERT INTO esg_ingestion_audit (organization_id, actor, action, previous_hash, entry_hash, "
                     "metadata, at) VALUES (%s, %s, 'x', '', '', '{}', now())",
                (other_ws.organization_id, f"{roles.organization(org)} (os: x)"))
        sql.execute("RESET ROLE")
        # a forged entry: made-up hashes, id and time; accepted as the analyst's own entry with the
        # server's hashes, so the chain stays whole
        sql.execute("INSERT INTO esg_ingestion_audit (id, organization_id, actor, action, previous_hash, entry_hash, "
                    "metadata, at) VALUES (1, %s, %s, 'kpi.aggregate', %s, %s, '{\"forged\":true}', '2001-01-01')",
                    (org, f"{role} (os: mallory)", "f" * 64, "e" * 64))
    finally:
        sql.close()
    after = rows(ws, org)
    assert len(after) == 6 and after[-1].metadata == '{"forged":true}'
    assert after[-1].id > after[-2].id and after[-1].at.year > 2001
    assert after[-1].previous_hash == before.last_hash and "f" * 64 not in {r.previous_hash for r in after}
    result = chain.verify(ws)
    assert result.ok and result.head == chain.Head(6, after[-1].entry_hash)
    assert chain.verify(ws, anchor=before).ok
    assert chain.anchor(other_ws) == other_head and chain.verify(other_ws).ok  # untouched


def test_postgres_the_owners_truncation_and_deletion_are_found(team):
    ws, _ = team.new_org()
    org = ws.organization_id
    anchor = chain.anchor(ws)
    with team.shared.admin() as owner:
        owner.execute("DELETE FROM esg_ingestion_audit WHERE id IN (SELECT id FROM esg_ingestion_audit "
                      "WHERE organization_id = %s ORDER BY id DESC LIMIT 2)", (org,))
    result = chain.verify(ws)
    assert not result.ok and "head says 5 entries, the chain has 3" in result.reason
    assert not chain.verify(ws, anchor=anchor).ok
    with team.shared.admin() as owner:
        owner.execute("DELETE FROM esg_ingestion_audit WHERE organization_id = %s", (org,))
    result = chain.verify(ws)
    assert not result.ok and result.entries == 0 and "removed" in result.reason


def test_postgres_the_owners_edit_and_rehash_is_found_and_with_the_head_against_an_anchor(team):
    ws, _ = team.new_org()
    org = ws.organization_id
    anchor = chain.anchor(ws)
    with team.shared.admin() as owner:
        entries = rows(ws, org)
        owner.execute("UPDATE esg_ingestion_audit SET metadata = '{\"i\":99}' WHERE id = %s", (entries[2].id,))
        fixed = rehashed(rows(ws, org)[2:], entries[1].entry_hash)
        for id_, previous, entry in fixed:
            owner.execute("UPDATE esg_ingestion_audit SET previous_hash = %s, entry_hash = %s WHERE id = %s",
                          (previous, entry, id_))
        result = chain.verify(ws)
        assert not result.ok and "rewritten" in result.reason  # the head still has the old last hash
        owner.execute("UPDATE esg_audit_heads SET last_hash = %s WHERE organization_id = %s", (fixed[-1][2], org))
    assert chain.verify(ws).ok  # the owner may rewrite both: only an anchor written down earlier shows it
    result = chain.verify(ws, anchor=anchor)
    assert not result.ok and "rewritten" in result.reason


# --- locks: one organization cannot stall another ---------------------------------------------

def old_advisory_keys(org: str) -> list[int]:
    """The advisory keys the app took before (guessable from an organization's id)."""
    def key(*names: str) -> int:
        return int(hashlib.sha1("\x1f".join(("esg-workbench", *names)).encode()).hexdigest()[:15], 16)
    return [int(hashlib.sha1(f"audit\0{org}".encode()).hexdigest()[:15], 16), key("kpis", org),
            key("mapping-save", org, "sample_erp"), key("mapping-apply", org, "sample_erp"), MIGRATION_LOCK_KEY]


@contextlib.contextmanager
def key_grabber(team, role: str, org: str, accomplice: int):
    """A hostile session taking every advisory key any other session of the database holds
    (pg_locks shows them all), and keeping it. Yields the keys it saw (not counting those of
    the `accomplice` session)."""
    seen: set[tuple[int, int]] = set()
    stop = threading.Event()
    conn = team.connect(role, org)

    def grab():
        import psycopg

        while not stop.is_set():
            try:
                held = conn.execute(
                    "SELECT classid::bigint, objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid NOT IN (pg_backend_pid(), %s) AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())", (accomplice,)).fetchall()
            except psycopg.errors.InsufficientPrivilege:
                return  # a workspace set up by a superuser hides pg_locks from analysts: nothing to grab
            for classid, objid in held:
                if (classid, objid) not in seen:
                    seen.add((classid, objid))
                    conn.execute("SELECT pg_try_advisory_lock(%s)", ((classid << 32) | objid,))
            stop.wait(0.01)

    thread = threading.Thread(target=grab, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(10)
        conn.close()


def test_postgres_an_organization_holding_every_lock_it_can_does_not_stall_another(team):
    """orga's analyst holds the advisory keys the app used to take for orgb, every key it
    sees taken, its own lock rows and head, an open audit append, and tries orgb's rows;
    meanwhile the administrator adds organization orgb and its analyst bob, and bob adds a
    connector, syncs, saves and applies a mapping and recomputes KPIs, with a lock
    timeout: any wait on orga would fail his work."""
    import concurrent.futures

    ws_a, alice = team.new_org()
    org_a = ws_a.organization_id
    run_demo(ws_a)  # orga's lock rows exist (connector sync, mapping, KPIs)
    n = next(_orgs)
    org_b, bob = f"org{n}", team.shared.role(f"bob{n}")

    hostile = team.connect(alice, org_a)
    hostile.autocommit = False
    try:
        for key in old_advisory_keys(org_b):
            assert hostile.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        hostile.execute("LOCK TABLE workspace_meta IN ACCESS SHARE MODE")  # all its SELECT right allows
        assert hostile.execute("SELECT count(*) FROM (SELECT * FROM workspace_locks FOR UPDATE) l").fetchone()[0] >= 3
        hostile.execute("INSERT INTO esg_ingestion_audit (organization_id, actor, action, previous_hash, entry_hash, "
                        "metadata, at) VALUES (%s, %s, 'hold', '', '', '{}', now())", (org_a, f"{alice} (os: x)"))
        hostile.execute("LOCK TABLE esg_audit_heads IN ACCESS SHARE MODE")  # all its SELECT right allows
        for attack, params, code in [
            ("LOCK TABLE workspace_meta IN EXCLUSIVE MODE", None, INSUFFICIENT_PRIVILEGE),
            ("LOCK TABLE esg_audit_heads IN EXCLUSIVE MODE", None, INSUFFICIENT_PRIVILEGE),
            ("SELECT * FROM esg_audit_heads FOR UPDATE", None, INSUFFICIENT_PRIVILEGE),
            ("INSERT INTO workspace_locks (organization_id, lock_key, kind, label) VALUES (%s, %s, 'kpis', 'x')",
             (org_b, "0" * 40), INSUFFICIENT_PRIVILEGE),
            ("INSERT INTO esg_ingestion_audit (organization_id, actor, action, previous_hash, entry_hash, metadata, "
             "at) VALUES (%s, %s, 'x', '', '', '{}', now())", (org_b, f"{alice} (os: x)"), INSUFFICIENT_PRIVILEGE),
        ]:
            hostile.execute("SAVEPOINT attack")
            with pytest.raises(psycopg.Error) as caught:
                hostile.execute(attack, params)
            assert caught.value.sqlstate == code, attack
            hostile.execute("ROLLBACK TO SAVEPOINT attack")
        # the organization setting moved to orgb by hand: the policies see no row at all
        hostile.execute("SELECT set_config('esg.organization_id', %s, true)", (org_b,))
        assert hostile.execute("SELECT count(*) FROM (SELECT * FROM workspace_locks FOR UPDATE) l").fetchone()[0] == 0

        with key_grabber(team, alice, org_a, accomplice=hostile.info.backend_pid) as seen:
            def administer():  # (the migration lock is no advisory key any more)
                organizations.add_organization(team.shared.admin_url, org_b)
                organizations.add_user(team.shared.admin_url, bob, [org_b])
                with team.shared.admin() as admin:  # bounded: a wait fails the test
                    admin.execute(f'ALTER ROLE "{bob}" SET lock_timeout = \'20s\'')

            pool = concurrent.futures.ThreadPoolExecutor(1)
            try:
                pool.submit(administer).result(timeout=120)
            finally:
                pool.shutdown(wait=False)  # (should it hang, the hostile session's end releases it)
            ws_b = open_workspace(team.shared.url(bob))  # not even the migration key is waited for
            team.opened.append(ws_b)
            summary = run_demo(ws_b)  # connector add, sync, mapping save and apply, KPI recompute
        assert summary["status"] == "success", json.dumps(summary, default=str)[:2000]
        assert seen == set()  # orgb's work took no advisory key for the grabber to take
        result = chain.verify(ws_b)
        assert result.ok and result.entries > 5 and result.head.entries == result.entries
    finally:
        hostile.rollback()
        hostile.execute("SELECT pg_advisory_unlock_all()")
        hostile.close()
    assert chain.verify(ws_a).ok  # orga's held append was rolled back; its chain is whole


def test_postgres_a_sync_lock_outlives_the_servers_idle_transaction_timeout(team):
    """A sync holds its connector's lock in a transaction that idles while it works: a
    role- or server-wide idle_in_transaction_session_timeout must not end it."""
    import time

    from esg_workbench.workspace import concurrency

    ws, role = team.new_org(0)
    with team.shared.admin() as admin:
        admin.execute(f'ALTER ROLE "{role}" SET idle_in_transaction_session_timeout = \'500ms\'')
    fresh = open_workspace(team.shared.url(role))  # connections made after the setting
    team.opened.append(fresh)
    with concurrency.connector_sync_lock(fresh, "c1") as held:
        assert held
        time.sleep(1.5)
        with fresh.transaction() as conn:
            assert not concurrency.try_xact_lock(fresh, conn, concurrency.CONNECTOR_SYNC, "c1")  # still held
    with fresh.transaction() as conn:
        assert concurrency.try_xact_lock(fresh, conn, concurrency.CONNECTOR_SYNC, "c1")  # released at the end


# --- the CLI: audit anchor, audit verify --anchor ------------------------------------------------

def cli(workspace: str, *args: str):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "esg_workbench", "--workspace", workspace, *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ})


def test_cli_anchor_then_verify_against_it_on_duckdb(tmp_path):
    path = str(tmp_path / "w.duckdb")
    ws = open_workspace(path)
    fill(ws, 4)
    ws.close()
    printed = cli(path, "audit", "anchor")
    assert printed.returncode == 0, printed.stderr
    anchor = printed.stdout.splitlines()[0]
    assert anchor.startswith("4:") and "audit verify --anchor " + anchor in printed.stdout
    as_json = json.loads(cli(path, "audit", "anchor", "--json").stdout)
    assert as_json["anchor"] == anchor and as_json["entries"] == 4
    checked = cli(path, "audit", "verify", "--anchor", anchor)
    assert checked.returncode == 0 and "intact" in checked.stdout and "continues the anchor 4:" in checked.stdout
    ws = open_workspace(path)
    duck_sql(ws, "DELETE FROM esg_ingestion_audit")
    duck_sql(ws, "DELETE FROM esg_audit_heads")
    ws.close()
    assert cli(path, "audit", "verify").returncode == 0  # the file alone cannot tell (see the README)
    found = cli(path, "audit", "verify", "--anchor", anchor, "--json")
    assert found.returncode == 1 and "fewer than the 4 of the anchor" in json.loads(found.stdout)["reason"]
    bad = cli(path, "audit", "verify", "--anchor", "4:nothex")
    assert bad.returncode != 0 and "is not an audit anchor" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_anchor_and_verify_on_a_shared_postgres_workspace(team):
    ws, role = team.new_org(3)
    url = team.shared.url(role)
    anchor = cli(url, "audit", "anchor").stdout.splitlines()[0]
    assert anchor == str(chain.anchor(ws)) and anchor.startswith("3:")
    fill(ws, 2)
    checked = cli(url, "audit", "verify", "--anchor", anchor)
    assert checked.returncode == 0 and "5 entries verified" in checked.stdout, checked.stderr
    with team.shared.admin() as owner:  # only the owner can remove entries; the head finds it
        owner.execute("DELETE FROM esg_ingestion_audit WHERE id = (SELECT max(id) FROM esg_ingestion_audit "
                      "WHERE organization_id = %s)", (ws.organization_id,))
    found = cli(url, "audit", "verify")
    assert found.returncode == 1 and "head says 5 entries, the chain has 4" in found.stdout
