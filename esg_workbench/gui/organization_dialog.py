"""Signing in to a shared PostgreSQL workspace: the organization to work in.

A database role in one organization opens straight into it; a role in several is asked
which one (the dialog lists them by name, the last one chosen for this workspace first
selected). A DuckDB workspace has one organization and asks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QLabel, QListWidget, QListWidgetItem, QVBoxLayout,
                               QWidget)

from esg_workbench.workspace.organizations import Organization


@dataclass
class NeedsOrganization:
    """open_signed_in's answer when the role must choose: the organizations to offer."""

    url: str | None
    role: str
    organizations: list[Organization]


def open_signed_in(url: str | None, organization: str | None = None):
    """Open the workspace (in a worker thread): a Workspace, or NeedsOrganization when
    the role belongs to several organizations and none was chosen."""
    from esg_workbench.workspace import open_workspace, organizations
    from esg_workbench.workspace.postgres_security import OrganizationChoiceNeeded

    try:
        return open_workspace(url, organization_id=organization)
    except OrganizationChoiceNeeded as exc:
        named = {o.id: o for o in organizations.available_organizations(url)}
        return NeedsOrganization(url, exc.role,
                                 [named.get(o, Organization(o, o)) for o in exc.organizations])


def organization_caption(workspace) -> str:
    """' — organization acme' for a shared workspace, '' otherwise (title and status bar)."""
    return f" — organization {workspace.organization_id}" if getattr(workspace, "secured", False) else ""


class OrganizationDialog(QDialog):
    """Which organization to work in, for a role that belongs to several. Emits `chosen`
    with the organization's id; deletes itself when closed."""

    chosen = Signal(str)

    def __init__(self, needs: NeedsOrganization, settings: QSettings | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("organizationDialog")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowTitle("Choose an organization")
        self.setMinimumWidth(420)
        self.settings = settings
        self.key = f"organization/{needs.url or 'default'}"
        intro = QLabel(f"Your database role <b>{needs.role}</b> works for several organizations. "
                       "Which one do you want to work in? You see and change only its data.")
        intro.setWordWrap(True)
        self.list = QListWidget()
        self.list.setObjectName("organizationList")
        last = settings.value(self.key) if settings is not None else None
        for org in needs.organizations:
            item = QListWidgetItem(org.name if org.name == org.id else f"{org.name}  ({org.id})")
            item.setData(Qt.ItemDataRole.UserRole, org.id)
            self.list.addItem(item)
            if org.id == last:
                self.list.setCurrentItem(item)
        if self.list.currentItem() is None:
            self.list.setCurrentRow(0)
        self.list.itemDoubleClicked.connect(lambda _item: self.accept())
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Sign in")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.list)
        layout.addWidget(self.buttons)

    def value(self) -> str | None:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def accept(self) -> None:
        if self.value() is None:
            return
        if self.settings is not None:
            self.settings.setValue(self.key, self.value())
        chosen = self.value()
        super().accept()
        self.chosen.emit(chosen)
