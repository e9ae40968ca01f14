"""CLI: setting up a shared PostgreSQL workspace, its organizations and analysts.

    esg-workbench workspace init-postgres postgresql://alice@db/esg --admin-url postgresql://postgres@db/esg
    esg-workbench org add acme --name "Acme Ltd" --admin-url postgresql://postgres@db/esg
    esg-workbench user add bob --organization acme --admin-url postgresql://postgres@db/esg --password-stdin
    esg-workbench user remove bob --admin-url postgresql://postgres@db/esg
    esg-workbench --workspace postgresql://bob@db/esg org list

These commands run as the administrator (--admin-url) and do not open the workspace as
an analyst; `org list` without --admin-url shows the organizations of the workspace URL's
role. Passwords come from standard input only, go into the database role (as a SCRAM
verifier: the server never sees the clear text), never into the keyring or any log.
"""

from __future__ import annotations

import sys

from esg_workbench.cli.output import Output, table


def _password(args) -> str | None:
    if not getattr(args, "password_stdin", False):
        return None
    from esg_workbench.core.errors import ConfigError

    password = sys.stdin.read().rstrip("\r\n")
    if not password:
        raise ConfigError("--password-stdin was given but standard input was empty.",
                          hint='e.g. printf %s "$PW" | esg-workbench user add bob ... --password-stdin')
    return password


def _workspace_database(args) -> str | None:
    """The database the --workspace URL names (admin commands default to it)."""
    from esg_workbench.workspace.database import _engine_url

    import sqlalchemy as sa

    if not args.workspace:
        return None
    kind, url = _engine_url(args.workspace)
    return sa.engine.make_url(url).database if kind == "postgresql" else None


def _changes_text(changes: list[str], done: str, unchanged: str) -> str:
    if not changes:
        return unchanged
    return done + "\n" + "\n".join(f"  - {c}" for c in changes)


def cmd_init_postgres(ws, args, out: Output) -> int:
    from esg_workbench.workspace import organizations

    result = organizations.init_postgres(args.url, args.admin_url, organization=args.org_id,
                                         organization_name=args.org_name, password=_password(args))
    data = {"database": result.database, "role": result.app_role, "organization": result.organization,
            "role_prefix": result.role_prefix, "already_set_up": result.already_set_up, "changes": result.changes}
    summary = (f"Workspace '{result.database}': analysts' roles are {result.role_prefix}_analysts and "
               f"{result.role_prefix}_org_<organization>; '{result.app_role}' works in '{result.organization}'.")
    out.emit(data, _changes_text(
        result.changes, f"Set up the shared workspace. {summary}\nChanges:",
        f"Already set up: nothing changed. {summary}"))
    return 0


def cmd_org_add(ws, args, out: Output) -> int:
    from esg_workbench.workspace import organizations

    changes = organizations.add_organization(args.admin_url, args.org, args.name, database=_workspace_database(args))
    out.emit({"organization": args.org, "changes": changes}, _changes_text(
        changes, f"Organization '{args.org}':", f"Organization '{args.org}' exists already: nothing changed."))
    return 0


def cmd_org_list(ws, args, out: Output) -> int:
    from esg_workbench.workspace import organizations

    if args.admin_url:
        orgs = organizations.all_organizations(args.admin_url, database=_workspace_database(args))
        out.emit([o.__dict__ for o in orgs],
                 table([[o.id, o.name, ", ".join(o.members)] for o in orgs], ["organization", "name", "analysts"])
                 if orgs else "No organizations yet. Add one with: esg-workbench org add ORG --admin-url ADMIN_URL")
        return 0
    from esg_workbench.workspace.database import default_workspace_path

    orgs = organizations.available_organizations(args.workspace or _env_workspace() or str(default_workspace_path()))
    out.emit([{"id": o.id, "name": o.name} for o in orgs],
             table([[o.id, o.name] for o in orgs], ["organization", "name"])
             if orgs else "Your database role belongs to no organization of this workspace.")
    return 0


def _env_workspace() -> str | None:
    import os

    from esg_workbench.workspace.database import ENV_WORKSPACE

    return os.environ.get(ENV_WORKSPACE)


def cmd_user_add(ws, args, out: Output) -> int:
    from esg_workbench.workspace import organizations

    changes = organizations.add_user(args.admin_url, args.role, args.member_of, password=_password(args),
                                     database=_workspace_database(args))
    out.emit({"role": args.role, "organizations": args.member_of, "changes": changes}, _changes_text(
        changes, f"Analyst '{args.role}':", f"'{args.role}' is already in {', '.join(args.member_of)}: nothing changed."))
    return 0


def cmd_user_remove(ws, args, out: Output) -> int:
    from esg_workbench.workspace import organizations

    changes = organizations.remove_user(args.admin_url, args.role, args.member_of, database=_workspace_database(args))
    where = ", ".join(args.member_of) if args.member_of else "the workspace"
    out.emit({"role": args.role, "organizations": args.member_of, "changes": changes}, _changes_text(
        changes, f"Analyst '{args.role}':", f"'{args.role}' was not in {where}: nothing changed."))
    return 0


#: the commands add_commands adds (a command's parser is built with its group only)
COMMANDS = ("workspace", "org", "user")


def add_commands(sub, common) -> None:
    admin_help = "an administrator's postgresql:// URL (a superuser, or a role with CREATEROLE owning the database)"

    wp = sub.add_parser("workspace", help="set up a shared PostgreSQL workspace for a team")
    wsub = wp.add_subparsers(dest="workspace_command", metavar="ACTION", required=True)
    p = wsub.add_parser("init-postgres", parents=[common],
                        help="create the tables, roles and row-level security policies (safe to run again)")
    p.add_argument("url", help="the workspace URL as an analyst connects: postgresql://ROLE@HOST/DATABASE")
    p.add_argument("--admin-url", required=True, help=admin_help)
    p.add_argument("--organization", dest="org_id", default="default", metavar="ORG",
                   help="the analyst's organization (default: default)")
    p.add_argument("--organization-name", dest="org_name", metavar="NAME", help="its display name")
    p.add_argument("--password-stdin", action="store_true",
                   help="read a password for a new analyst role from standard input")
    p.set_defaults(func=cmd_init_postgres, opens_workspace=True)

    op = sub.add_parser("org", help="organizations of a shared PostgreSQL workspace")
    osub = op.add_subparsers(dest="org_command", metavar="ACTION", required=True)
    p = osub.add_parser("add", parents=[common], help="add an organization (its database role and record)")
    p.add_argument("org", help="an id: lower-case letters, digits, '_' or '-' (e.g. acme)")
    p.add_argument("--name", help="display name (default: the id)")
    p.add_argument("--admin-url", required=True, help=admin_help)
    p.set_defaults(func=cmd_org_add, opens_workspace=True)
    p = osub.add_parser("list", parents=[common],
                        help="the organizations your role may use (with --admin-url: all, with their analysts)")
    p.add_argument("--admin-url", help=admin_help)
    p.set_defaults(func=cmd_org_list, opens_workspace=True)

    up = sub.add_parser("user", help="analysts of a shared PostgreSQL workspace")
    usub = up.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    p = usub.add_parser("add", parents=[common],
                        help="create an analyst's database role (or add an existing one) in organizations")
    p.add_argument("role", help="the analyst's database role (their login)")
    p.add_argument("--organization", dest="member_of", action="append", required=True, metavar="ORG",
                   help="an organization the analyst works in (repeatable)")
    p.add_argument("--admin-url", required=True, help=admin_help)
    p.add_argument("--password-stdin", action="store_true", help="read the role's password from standard input")
    p.set_defaults(func=cmd_user_add, opens_workspace=True)
    p = usub.add_parser("remove", parents=[common],
                        help="take an analyst out of organizations (without --organization: out of the workspace)")
    p.add_argument("role", help="the analyst's database role")
    p.add_argument("--organization", dest="member_of", action="append", metavar="ORG",
                   help="an organization to leave (repeatable)")
    p.add_argument("--admin-url", required=True, help=admin_help)
    p.set_defaults(func=cmd_user_remove, opens_workspace=True)
