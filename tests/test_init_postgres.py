"""`esg-workbench workspace init-postgres`: sets up a shared workspace, refuses app roles
that row-level security would not apply to, and changes nothing when run again."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from esg_workbench.core.errors import WorkspaceError
from esg_workbench.sync import operations
from esg_workbench.sync.engine import SyncEngine, SyncRequest
from esg_workbench.workspace import open_workspace, organizations
from tests.conftest import PG_HOST, PG_PORT, PG_USER
from tests.pg_shared import shared_database


@pytest.fixture
def shared():
    with shared_database() as db:
        yield db


def cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "esg_workbench", *args], input=stdin, capture_output=True,
                          text=True, timeout=120, env={**os.environ})


def security_state(shared) -> dict[str, list]:
    """Everything init-postgres may touch, read straight from the catalogs."""
    with shared.admin() as conn:
        q = lambda sql: [tuple(r) for r in conn.execute(sql).fetchall()]
        prefix = conn.execute("SELECT value FROM workspace_meta WHERE key = 'rls_role_prefix'").fetchone()[0]
        like = f"'{prefix}\\_%' OR rolname LIKE 't{shared.tag}\\_%'"
        return {
            "roles": q(f"SELECT rolname, rolsuper, rolbypassrls, rolcanlogin, rolcreaterole, rolpassword "
                       f"FROM pg_authid WHERE rolname LIKE {like} ORDER BY 1"),
            "members": q(f"SELECT g.rolname, u.rolname, m.admin_option FROM pg_auth_members m "
                         f"JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member "
                         f"WHERE g.rolname LIKE '{prefix}\\_%' OR u.rolname LIKE 't{shared.tag}\\_%' ORDER BY 1, 2"),
            "policies": q("SELECT tablename, policyname, permissive, roles::text, cmd, qual, with_check FROM pg_policies "
                          "ORDER BY 1, 2"),
            "rls": q("SELECT relname, relrowsecurity, relforcerowsecurity, relowner::regrole::text, relacl::text "
                     "FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'S') ORDER BY 1"),
            "grants": q("SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants "
                        "WHERE table_schema = 'public' ORDER BY 1, 2, 3"),
            "functions": q("SELECT proname, prosrc, proconfig::text, provolatile FROM pg_proc "
                           "WHERE pronamespace = 'public'::regnamespace ORDER BY 1"),
            "defaults": q("SELECT adrelid::regclass::text, adnum, pg_get_expr(adbin, adrelid) FROM pg_attrdef ORDER BY 1, 2"),
            "triggers": q("SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2"),
            "meta": q("SELECT key, value, organization_id FROM workspace_meta ORDER BY 1"),
            "organizations": q("SELECT organization_id, name, created_at FROM organizations ORDER BY 1"),
            "schemas": q(f"SELECT nspname, nspowner::regrole::text, nspacl::text FROM pg_namespace "
                         f"WHERE nspname = 'public' OR nspname LIKE '{prefix}\\_%' ORDER BY 1"),
        }


def test_init_postgres_twice_changes_nothing_the_second_time(shared):
    alice = shared.role("alice")
    first = cli("workspace", "init-postgres", shared.url(alice), "--admin-url", shared.admin_url,
                "--organization", "acme", "--organization-name", "Acme Ltd")
    assert first.returncode == 0, first.stderr
    assert "Set up the shared workspace" in first.stdout and f"created login role {alice}" in first.stdout
    state = security_state(shared)
    assert {t for t, *_ in state["policies"]} >= {"connectors", "esg_ingestion_audit", "workspace_meta", "organizations"}
    tables = [(name, enabled, forced) for name, enabled, forced, *_ in state["rls"] if not name.endswith("_seq")]
    from esg_workbench.workspace import schema

    assert len(tables) == len(schema.metadata.tables) and all(enabled and forced for _, enabled, forced in tables), \
        tables
    assert sorted(name for name, *_ in state["schemas"]) == [f"{state['meta'][2][1]}_org_acme", "public"]

    second = cli("workspace", "init-postgres", shared.url(alice), "--admin-url", shared.admin_url,
                 "--organization", "acme", "--organization-name", "Acme Ltd", "--json")
    assert second.returncode == 0, second.stderr
    assert '"already_set_up": true' in second.stdout and '"changes": []' in second.stdout
    assert security_state(shared) == state
    text = cli("workspace", "init-postgres", shared.url(alice), "--admin-url", shared.admin_url, "--organization", "acme")
    assert text.stdout.startswith("Already set up: nothing changed.")
    assert security_state(shared) == state

    ws = open_workspace(shared.url(alice))
    try:
        assert (ws.organization_id, ws.database_role, ws.secured) == ("acme", alice, True)
    finally:
        ws.close()
    listed = cli("--workspace", shared.url(alice), "org", "list")
    assert "acme" in listed.stdout and "Acme Ltd" in listed.stdout


def test_an_app_role_exempt_from_row_level_security_is_refused(shared):
    sneaky, boss = shared.role("sneaky"), shared.role("boss")
    with shared.admin() as conn:
        conn.execute(f'CREATE ROLE "{sneaky}" LOGIN BYPASSRLS')
        conn.execute(f'CREATE ROLE "{boss}" LOGIN SUPERUSER')
    for role, kind in ((boss, "a superuser"), (PG_USER, "a superuser"), (sneaky, "a role with BYPASSRLS")):
        with pytest.raises(WorkspaceError) as caught:
            organizations.init_postgres(shared.url(role), shared.admin_url)
        assert caught.value.message == (f"The app cannot connect as '{role}': it is {kind}, "
                                        "and row-level security would not apply to it.")
    with shared.admin() as conn:  # refused before anything was made
        assert conn.execute("SELECT to_regclass('workspace_meta')").fetchone()[0] is None
        conn.execute(f'CREATE ROLE "{shared.role("early")}" LOGIN')
    with pytest.raises(WorkspaceError, match="holds no workspace yet") as early:  # an analyst before the set-up
        open_workspace(shared.url(shared.role("early")))
    assert "init-postgres" in early.value.hint
    refused = cli("workspace", "init-postgres", shared.url(sneaky), "--admin-url", shared.admin_url)
    assert refused.returncode == 1 and "row-level security would not apply to it" in refused.stderr

    alice = shared.role("alice")
    organizations.init_postgres(shared.url(alice), shared.admin_url)
    with pytest.raises(WorkspaceError, match="is a superuser"):  # nor may the app open it as one
        open_workspace(shared.url(boss))
    with pytest.raises(WorkspaceError, match="BYPASSRLS"):
        open_workspace(shared.url(sneaky))
    stranger = shared.role("stranger")
    with shared.admin() as conn:
        conn.execute(f'CREATE ROLE "{stranger}" LOGIN')
    with pytest.raises(WorkspaceError) as caught:
        open_workspace(shared.url(stranger))
    assert caught.value.message == f"The database role '{stranger}' has no access to this shared workspace."
    assert "esg-workbench user add" in caught.value.hint


def test_bad_input_is_refused_with_what_to_do(shared):
    alice = shared.role("alice")
    bad = cli("workspace", "init-postgres", shared.url(alice), "--admin-url", shared.admin_url, "--organization", "Acme Ltd")
    assert bad.returncode == 1 and "'Acme Ltd' is not a valid organization id" in bad.stderr and "What to do" in bad.stderr
    no_role = cli("workspace", "init-postgres", f"postgresql://{PG_HOST}:{PG_PORT}/{shared.database}",
                  "--admin-url", shared.admin_url)
    assert no_role.returncode == 1 and "names no database role" in no_role.stderr
    other_db = cli("workspace", "init-postgres", shared.url(alice), "--admin-url",
                   f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres")
    assert other_db.returncode == 1 and "Give both URLs the same database" in other_db.stderr
    not_yet = cli("org", "add", "beta", "--admin-url", shared.admin_url)
    assert not_yet.returncode == 1 and "not set up as a shared workspace" in not_yet.stderr
    organizations.init_postgres(shared.url(alice), shared.admin_url)
    unknown = cli("user", "add", shared.role("bob"), "--organization", "nope", "--admin-url", shared.admin_url)
    assert unknown.returncode == 1 and "There is no organization 'nope'" in unknown.stderr


def test_passwords_reach_the_role_as_a_scram_verifier_only(shared):
    alice, bob = shared.role("alice"), shared.role("bob")
    made = cli("workspace", "init-postgres", shared.url(alice), "--admin-url", shared.admin_url, "--password-stdin",
               stdin="s3cret-Ä\n")
    assert made.returncode == 0, made.stderr
    assert "s3cret" not in made.stdout + made.stderr
    added = cli("user", "add", bob, "--organization", "default", "--admin-url", shared.admin_url, "--password-stdin",
                stdin="other pw")
    assert added.returncode == 0, added.stderr
    with shared.admin() as conn:
        stored = dict(conn.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN (%s, %s)",
                                   (alice, bob)).fetchall())
    assert scram_matches(stored[alice], "s3cret-Ä") and scram_matches(stored[bob], "other pw")
    assert not scram_matches(stored[alice], "other pw")


def scram_matches(verifier: str, password: str) -> bool:
    """Check a SCRAM-SHA-256 verifier as the server does at login."""
    import unicodedata

    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac("sha256", unicodedata.normalize("NFKC", password).encode(),
                                 base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return method == "SCRAM-SHA-256" and base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key


def test_an_unshared_workspace_with_data_becomes_shared(shared):
    """Data landed before sharing (organization 'default') stays readable by its analysts."""
    with shared.admin() as conn:
        conn.execute("CREATE SCHEMA src; CREATE TABLE src.t (id int PRIMARY KEY, v text);"
                     "INSERT INTO src.t SELECT g, g::text FROM generate_series(1, 50) g")
    ws = open_workspace(shared.admin_url)  # the superuser, before sharing: no row-level security yet
    operations.add_connector(ws, "src", "postgres", {"host": PG_HOST, "port": PG_PORT, "database": shared.database,
                                                     "username": PG_USER, "schema": "src"})
    raw = SyncEngine(ws).run(SyncRequest(connector="src")).streams[0].raw_table
    ws.close()
    alice = shared.role("alice")
    result = organizations.init_postgres(shared.url(alice), shared.admin_url)
    assert f"{raw} is owned by {result.role_prefix}_org_default" in result.changes
    assert organizations.init_postgres(shared.url(alice), shared.admin_url).already_set_up
    ws = open_workspace(shared.url(alice))
    try:
        with ws.read() as conn:
            assert conn.execute(sa.text(f"SELECT count(*) FROM {raw}")).scalar() == 50
        again = SyncEngine(ws).run(SyncRequest(connector="src"))
        assert again.status.value == "success" and again.rows_written == 50
        from esg_workbench.audit import chain

        assert chain.verify(ws).ok
    finally:
        ws.close()


def test_an_administrator_without_superuser_sets_up_and_runs_the_workspace(shared):
    """A managed server's administrator: CREATEROLE and owner of the database, no superuser.
    FORCE ROW LEVEL SECURITY applies to it too, except for the workspace's own rows."""
    admin = shared.role("admin")
    with shared.admin() as conn:
        conn.execute(f'CREATE ROLE "{admin}" LOGIN CREATEROLE')
        conn.execute(f'ALTER DATABASE "{shared.database}" OWNER TO "{admin}"')
        conn.execute(f'ALTER SCHEMA public OWNER TO "{admin}"')
    admin_url = shared.url(admin)
    alice, bob = shared.role("alice"), shared.role("bob")
    first = organizations.init_postgres(shared.url(alice), admin_url, organization="acme")
    assert not first.already_set_up
    organizations.add_organization(admin_url, "beta")
    organizations.add_user(admin_url, bob, ["beta"])
    assert organizations.init_postgres(shared.url(alice), admin_url, organization="acme").already_set_up
    assert [(o.id, o.members) for o in organizations.all_organizations(admin_url)] == [("acme", [alice]), ("beta", [bob])]
    for role, org in ((alice, "acme"), (bob, "beta")):
        ws = open_workspace(shared.url(role))
        try:
            operations.add_connector(ws, "files", "files", {"path": "/nonexistent"})
            assert [c.name for c in operations.list_connectors(ws)] == ["files"] and ws.organization_id == org
        finally:
            ws.close()
    # bob leaves: his organization, then the workspace
    assert organizations.remove_user(admin_url, bob, ["beta"]) == [f"took {bob} out of {first.role_prefix}_org_beta"]
    with pytest.raises(WorkspaceError, match="belongs to no organization"):
        open_workspace(shared.url(bob))
    gone = cli("user", "remove", bob, "--admin-url", admin_url)
    assert gone.returncode == 0 and f"took {bob} out of {first.role_prefix}_analysts" in gone.stdout, gone.stderr
    with pytest.raises(WorkspaceError, match="has no access to this shared workspace"):
        open_workspace(shared.url(bob))
    with shared.admin() as conn:  # the owner itself sees no organization's rows
        conn.execute(f'SET ROLE "{admin}"')
        assert conn.execute("SELECT count(*) FROM connectors").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM esg_ingestion_audit").fetchone()[0] == 0
