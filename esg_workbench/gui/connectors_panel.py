"""The connector list: name, type and a status badge (validated, failing, never
synced, last sync result, syncing with its percentage, resumable)."""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QIcon, QPainter, QPalette
from PySide6.QtWidgets import (
    QLabel,
    QListWidget,
    QListWidgetItem,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from esg_workbench.gui import icons
from esg_workbench.gui.catalog import ConnectorOverview

ROLE_OVERVIEW = Qt.ItemDataRole.UserRole + 1
ROLE_BADGE = Qt.ItemDataRole.UserRole + 2

STATUS_BADGES = {
    "new": ("never synced", "idle"),
    "validated": ("validated", "ok"),
    "failing": ("failing", "error"),
    "sync_success": ("synced", "ok"),
    "sync_partial_success": ("partly synced", "warn"),
    "sync_failed": ("sync failed", "error"),
    "sync_cancelled": ("cancelled", "warn"),
    "sync_running": ("interrupted", "warn"),
}


def badge_for(overview: ConnectorOverview, syncing: int | None = None) -> tuple[str, str]:
    """(text, kind) of a connector's badge."""
    if syncing is not None:
        return (f"syncing {syncing}%", "info")
    text, kind = STATUS_BADGES.get(overview.status, (overview.status.replace("_", " "), "idle"))
    if overview.failed_chunks:
        return (f"{overview.failed_chunks} failed chunk{'s' if overview.failed_chunks != 1 else ''}", "error")
    if overview.resumable and overview.status != "new":
        return ("resumable", "warn")
    return text, kind


class ConnectorDelegate(QStyledItemDelegate):
    """Two lines (name bold, type and location grey) and a coloured badge at the right."""

    def sizeHint(self, option: QStyleOptionViewItem, index) -> QSize:
        fm = QFontMetrics(option.font)
        return QSize(200, fm.height() * 2 + 14)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        overview: ConnectorOverview | None = index.data(ROLE_OVERVIEW)
        text, kind = index.data(ROLE_BADGE) or ("", "idle")
        painter.save()
        style = option.widget.style() if option.widget else None
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""
        opt.icon = QIcon()
        opt.features &= ~QStyleOptionViewItem.ViewItemFeature.HasDecoration
        if style:  # the selection and hover background only
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, option.widget)
        icon_rect = QRect(option.rect.left() + 8, option.rect.center().y() - 10, 20, 20)
        icons.connector_icon().paint(painter, icon_rect)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        rect = option.rect.adjusted(34, 5, -8, -5)
        fm = QFontMetrics(option.font)
        bold = QFont(option.font)
        bold.setBold(True)
        badge_font = QFont(option.font)
        badge_font.setPointSizeF(max(7.0, option.font.pointSizeF() * 0.85))
        bfm = QFontMetrics(badge_font)
        badge_w = bfm.horizontalAdvance(text) + 14
        badge = QRect(rect.right() - badge_w, rect.top() + 2, badge_w, bfm.height() + 4)
        text_color = option.palette.color(QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text)
        name_rect = QRect(rect.left(), rect.top(), rect.width() - badge_w - 6, fm.height())
        painter.setFont(bold)
        painter.setPen(text_color)
        name = overview.name if overview else index.data(Qt.ItemDataRole.DisplayRole)
        painter.drawText(name_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                         QFontMetrics(bold).elidedText(name, Qt.TextElideMode.ElideRight, name_rect.width()))
        if overview:
            painter.setFont(option.font)
            grey = QColor(text_color)
            grey.setAlpha(160)
            painter.setPen(grey)
            where = overview.config.get("database") or overview.config.get("path") or ""
            where = where.rsplit("/", 1)[-1]
            host = overview.config.get("host")
            sub = f"{overview.type}" + (f" · {host}" if host else "") + (f" · {where}" if where else "")
            sub_rect = QRect(rect.left(), rect.top() + fm.height() + 3, rect.width(), fm.height())
            painter.drawText(sub_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                             fm.elidedText(sub, Qt.TextElideMode.ElideRight, sub_rect.width()))
        if text:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(icons.STATUS_COLORS.get(kind, icons.STATUS_COLORS["idle"])))
            painter.drawRoundedRect(badge, badge.height() / 2, badge.height() / 2)
            painter.setPen(QColor("white"))
            painter.setFont(badge_font)
            painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()


class ConnectorsPanel(QWidget):
    current_changed = Signal(object)  # connector name or None

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.toolbar = QToolBar()
        self.toolbar.setIconSize(QSize(16, 16))
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        self.list = QListWidget()
        self.list.setObjectName("connectorList")
        self.list.setItemDelegate(ConnectorDelegate(self.list))
        self.list.setUniformItemSizes(True)
        self.empty = QLabel("No connectors yet.\nAdd one (Ctrl+N) to reach a database.")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setStyleSheet("color: #777;")
        self.empty.setWordWrap(True)
        title = QLabel("Connectors")
        title.setStyleSheet("font-weight: bold;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(title)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.empty, 1)
        self._overviews: dict[str, ConnectorOverview] = {}
        self._syncing: dict[str, int] = {}
        self.list.currentItemChanged.connect(self._current_changed)
        self._show_empty()

    def _show_empty(self) -> None:
        empty = self.list.count() == 0
        self.list.setVisible(not empty)
        self.empty.setVisible(empty)

    def set_connectors(self, overviews: list[ConnectorOverview], select: str | None = None) -> None:
        """Rebuild the list; keeps (or moves to `select`) the current connector and
        always emits current_changed once, so the other panels refresh."""
        current = select or self.current_name()
        self.list.blockSignals(True)
        self.list.clear()
        self._overviews = {o.name: o for o in overviews}
        for o in overviews:
            item = QListWidgetItem(o.name)
            item.setData(ROLE_OVERVIEW, o)
            self.list.addItem(item)
            self._update_item(item)
        if current in self._overviews:
            self.select(current)
        elif overviews:
            self.list.setCurrentRow(0)
        self.list.blockSignals(False)
        self._show_empty()
        self.current_changed.emit(self.current_name())

    def _update_item(self, item: QListWidgetItem) -> None:
        o: ConnectorOverview = item.data(ROLE_OVERVIEW)
        badge = badge_for(o, self._syncing.get(o.name))
        item.setData(ROLE_BADGE, badge)
        tip = f"{o.name} ({o.type}): {badge[0]}"
        if o.status_message:
            tip += "\n" + o.status_message
        item.setToolTip(tip)

    def set_syncing(self, name: str, percent: int | None) -> None:
        if percent is None:
            self._syncing.pop(name, None)
        else:
            self._syncing[name] = percent
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.text() == name:
                self._update_item(item)

    def overview(self, name: str | None) -> ConnectorOverview | None:
        return self._overviews.get(name) if name else None

    def names(self) -> list[str]:
        return list(self._overviews)

    def current_name(self) -> str | None:
        item = self.list.currentItem()
        return item.text() if item else None

    def select(self, name: str) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).text() == name:
                self.list.setCurrentRow(i)
                return

    def _current_changed(self, current, previous) -> None:
        self.current_changed.emit(current.text() if current else None)
