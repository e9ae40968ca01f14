"""The mapping canvas (desktop half of issue 4), laid out like orange-canvas-core:

* document.py      the controller: the Mapping being edited, its QUndoStack, the landed
                   columns, the validation problems (model -> Qt signals)
* commands.py      each model operation as a QUndoCommand
* scene.py, items.py, view.py
                   the canvas: draws the document, follows its signals
* interactions.py  one small state object per gesture (dragging a column, proposals)
* transform_editor.py, validation_panel.py, preview.py, dialogs.py
                   the panels around the canvas
* panel.py         the Mapping tab; tasks.py the background work it runs

`install_mapping_tabs(window)` adds the Mapping and KPIs tabs to the main window.
"""

from __future__ import annotations


def install_mapping_tabs(window) -> None:
    """Add the Mapping and KPIs tabs to a MainWindow and wire them to its workspace,
    its sample data and its status bar."""
    from esg_workbench.gui.kpi_chart import chart_icon
    from esg_workbench.gui.kpi_panel import KpiPanel
    from esg_workbench.gui.mapping.panel import MappingPanel

    window.mapping = MappingPanel(window.pool)
    window.kpis = KpiPanel(window.pool)
    window.mapping.settings = window.kpis.settings = window.settings  # (remembered folders)
    window.tabs.addTab(window.mapping, mapping_icon(), "Mapping")
    window.tabs.addTab(window.kpis, chart_icon(), "KPIs")

    def workspace_ready(workspace) -> None:
        window.mapping.set_workspace(workspace)
        window.kpis.set_workspace(workspace)

    def sample_loaded(_summary) -> None:
        window.mapping.reload()
        window.kpis.refresh()

    window.workspace_ready.connect(workspace_ready)
    window.sample_loaded.connect(sample_loaded)
    window.mapping.applied.connect(lambda _result: window.kpis.refresh())
    window.mapping.kpis_requested.connect(lambda: window.tabs.setCurrentWidget(window.kpis))
    window.jobs.ended.connect(lambda _job: window.mapping.refresh_sources())  # new or drifted columns
    window.mapping.message.connect(window.show_message)
    window.kpis.message.connect(window.show_message)
    if getattr(window, "workspace", None) is not None:
        workspace_ready(window.workspace)


def mapping_icon():
    """Two boxes joined by a curve (the Mapping tab)."""
    from PySide6.QtCore import QPointF, QRectF, Qt
    from PySide6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap

    pixmap = QPixmap(32, 32)
    pixmap.fill(Qt.GlobalColor.transparent)
    p = QPainter(pixmap)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(QPen(QColor("#37474f"), 1.6))
    p.setBrush(QColor("#e3f2fd"))
    p.drawRoundedRect(QRectF(2, 4, 10, 24), 2, 2)
    p.setBrush(QColor("#e8f5e9"))
    p.drawRoundedRect(QRectF(20, 4, 10, 24), 2, 2)
    path = QPainterPath(QPointF(12, 10))
    path.cubicTo(QPointF(17, 10), QPointF(15, 22), QPointF(20, 22))
    p.setPen(QPen(QColor("#1565c0"), 2))
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.drawPath(path)
    p.end()
    return QIcon(pixmap)
