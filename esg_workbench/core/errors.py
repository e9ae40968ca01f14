"""Errors that reach the user.

Every error carries a plain message (what went wrong, naming the table, chunk or
setting concerned) and a hint (what to do next). ``transient`` tells the sync engine
whether retrying can help: a lost connection can heal, a wrong password cannot.
Messages never contain secrets: connectors build them from their own words, never by
pasting a driver message that may echo a connection string.
"""

from __future__ import annotations


class EsgError(Exception):
    """Base of all errors shown to a user."""

    transient = False
    hint = ""

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint
        #: the provider's own error code (SQLSTATE, MySQL errno, ...) when there is one
        self.code = code

    def __str__(self) -> str:
        return self.message

    def describe(self) -> str:
        """Message and hint together, as shown in the CLI and dialogs."""
        text = self.message
        if self.code:
            text += f" [{self.code}]"
        if self.hint:
            text += f"\nWhat to do: {self.hint}"
        return text


class ConfigError(EsgError):
    hint = "Check the connector settings."


# --- source errors -----------------------------------------------------------------


class SourceError(EsgError):
    """Something went wrong talking to a source system."""


class SourceUnreachable(SourceError):
    transient = True
    hint = "Check the host name and port, that the server is running and that no firewall blocks it."


class AuthenticationFailed(SourceError):
    hint = "Check the user name and password (Edit connector, then Test connection)."


class DatabaseMissing(SourceError):
    hint = "Check the database name in the connector settings."


class PermissionDenied(SourceError):
    hint = "Ask the database administrator to grant SELECT on the schema to this user."


class TableMissing(SourceError):
    hint = "The table may have been dropped or renamed since discovery. Re-discover the connector."


class SchemaDrift(SourceError):
    hint = "Re-discover the connector; a full load reloads the table with its new shape."


class TransientSourceError(SourceError):
    """Connection lost, timeout, deadlock, serialization failure: worth a retry."""

    transient = True
    hint = "The sync retries such errors by itself; if it keeps failing, check the source server."


class KeyringUnavailable(EsgError):
    hint = (
        "Install and unlock a system keyring (GNOME Keyring or KWallet on Linux; "
        "Keychain on macOS and Credential Manager on Windows are built in)."
    )


# --- workspace errors ----------------------------------------------------------------


class WorkspaceError(EsgError):
    hint = "Check the workspace path or URL."


class WorkspaceTooNew(WorkspaceError):
    hint = "Update ESG Workbench to open this workspace."


class NotFound(EsgError):
    pass


class SyncBusy(EsgError):
    hint = "Wait for the running sync of this connector to finish, or cancel it."


class NothingToResume(EsgError):
    """A resume found no interrupted run and no unfinished chunk plan."""


class Cancelled(EsgError):
    """Raised inside the engine when the user cancelled; the run ends `cancelled`."""

    hint = "Resume the sync to continue from the last landed chunk."
