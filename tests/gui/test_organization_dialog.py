"""Signing in to a shared PostgreSQL workspace in the desktop app: a role in several
organizations is asked which one, a role in one is not; the window names it."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox

from esg_workbench.gui.organization_dialog import OrganizationDialog
from esg_workbench.sync import operations
from esg_workbench.workspace import open_workspace, organizations
from tests.pg_shared import shared_database


@pytest.fixture
def shared():
    """org-a (alice, with connector 'a-files'), org-b (connector 'b-files'); dave in both."""
    with shared_database() as db:
        alice, bob, dave = db.role("alice"), db.role("bob"), db.role("dave")
        organizations.init_postgres(db.url(alice), db.admin_url, organization="org-a", organization_name="Org A")
        organizations.add_organization(db.admin_url, "org-b", "Org B")
        organizations.add_user(db.admin_url, bob, ["org-b"])
        organizations.add_user(db.admin_url, dave, ["org-a", "org-b"])
        for role, name in ((alice, "a-files"), (bob, "b-files")):
            ws = open_workspace(db.url(role))
            operations.add_connector(ws, name, "files", {"path": "/nonexistent"})
            ws.close()
        yield db


def find_dialog(qtbot, window) -> OrganizationDialog:
    shown = lambda: [d for d in window.findChildren(OrganizationDialog) if d.isVisible()]
    qtbot.waitUntil(lambda: len(shown()) == 1, timeout=20000)
    return shown()[0]


def connector_names(window) -> list[str]:
    return [c.name for c in operations.list_connectors(window.workspace)]


def test_a_role_in_several_organizations_chooses_one_at_sign_in(qtbot, make_window, shared, settings, tmp_path):
    window = make_window(shared.url(shared.role("dave")), wait=False)
    dialog = find_dialog(qtbot, window)
    items = [dialog.list.item(i).text() for i in range(dialog.list.count())]
    assert items == ["Org A  (org-a)", "Org B  (org-b)"]
    dialog.grab().save(str(tmp_path / "organization_dialog.png"))
    second = dialog.list.visualItemRect(dialog.list.item(1)).center()
    qtbot.mouseClick(dialog.list.viewport(), Qt.MouseButton.LeftButton, pos=second)
    with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
        qtbot.mouseClick(dialog.buttons.button(QDialogButtonBox.StandardButton.Ok), Qt.MouseButton.LeftButton)
    assert window.workspace.organization_id == "org-b"
    assert connector_names(window) == ["b-files"]
    assert window.windowTitle().endswith("— organization org-b")
    assert "organization org-b" in window.workspace_label.text()
    assert settings.value(f"organization/{shared.url(shared.role('dave'))}") == "org-b"

    # next time the last choice is preselected; cancelling leaves no workspace open
    window.open_workspace(shared.url(shared.role("dave")))
    dialog = find_dialog(qtbot, window)
    assert dialog.value() == "org-b"
    with qtbot.waitSignal(window.workspace_failed, timeout=5000) as failed:
        qtbot.mouseClick(dialog.buttons.button(QDialogButtonBox.StandardButton.Cancel), Qt.MouseButton.LeftButton)
    assert failed.args == ["No organization was chosen."]
    qtbot.waitUntil(lambda: not window.findChildren(OrganizationDialog))  # closed dialogs are gone


def test_a_role_in_one_organization_is_not_asked(qtbot, make_window, shared):
    window = make_window(shared.url(shared.role("alice")))
    assert window.findChild(OrganizationDialog) is None
    assert window.workspace.organization_id == "org-a"
    assert connector_names(window) == ["a-files"]
    assert window.windowTitle().endswith("— organization org-a")


def test_a_duckdb_workspace_shows_no_organization(qtbot, window):
    assert window.workspace.organization_id == "default"
    assert "organization" not in window.windowTitle()
