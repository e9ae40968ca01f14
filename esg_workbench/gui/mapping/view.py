"""The canvas view: zoom (Ctrl+wheel, Ctrl+= / Ctrl+- / Ctrl+0), pan (middle button or
Space + drag, or the scroll bars), rubber-band selection, and bringing an item into view
when a validation message selects it."""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QPainter, QWheelEvent
from PySide6.QtWidgets import QGraphicsItem, QGraphicsView

MIN_ZOOM, MAX_ZOOM = 0.2, 3.0
#: Fit never zooms out further than this: below it column names are too small to read
#: (the rest is a scroll away; Ctrl+- still zooms out to MIN_ZOOM for an overview)
READABLE_ZOOM = 0.7


class MappingView(QGraphicsView):
    zoom_changed = Signal(float)

    def __init__(self, scene, parent=None):
        super().__init__(scene, parent)
        self.setObjectName("mappingCanvas")
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.BoundingRectViewportUpdate)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._pan_from: QPointF | None = None
        self._space = False
        scene.focus_item.connect(self.bring_into_view)

    # --- zoom -------------------------------------------------------------------------------

    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, zoom: float) -> None:
        zoom = max(MIN_ZOOM, min(MAX_ZOOM, zoom))
        factor = zoom / self.zoom
        if abs(factor - 1) > 1e-6:
            self.scale(factor, factor)
            self.zoom_changed.emit(self.zoom)

    def zoom_in(self) -> None:
        self.set_zoom(self.zoom * 1.25)

    def zoom_out(self) -> None:
        self.set_zoom(self.zoom / 1.25)

    def zoom_reset(self) -> None:
        self.set_zoom(1.0)

    def fit(self) -> None:
        rect = self.scene().itemsBoundingRect().adjusted(-20, -20, 20, 20)
        if rect.isEmpty():
            return
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        if self.zoom > 1.0:
            self.set_zoom(1.0)
        elif self.zoom < READABLE_ZOOM:
            self.set_zoom(READABLE_ZOOM)
            self.centerOn(rect.left() + self.viewport().width() / self.zoom / 2,
                          rect.top() + self.viewport().height() / self.zoom / 2)
        self.zoom_changed.emit(self.zoom)

    def fit_width(self) -> None:
        """Zoom so the rows fill the width (no more than 100 %), scrolled to the top."""
        rect = self.scene().itemsBoundingRect().adjusted(-20, -20, 20, 20)
        if rect.isEmpty():
            return
        available = self.viewport().width() - 4
        self.set_zoom(max(READABLE_ZOOM, min(1.0, available / rect.width())))
        self.centerOn(rect.center().x(), rect.top() + self.viewport().height() / self.zoom / 2)

    def wheelEvent(self, event: QWheelEvent) -> None:
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            steps = event.angleDelta().y() / 120.0
            self.set_zoom(self.zoom * (1.15 ** steps))
            event.accept()
            return
        super().wheelEvent(event)

    # --- pan --------------------------------------------------------------------------------

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.MiddleButton or (self._space and event.button() == Qt.MouseButton.LeftButton):
            self._pan_from = event.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        if self._pan_from is not None:
            delta = event.position() - self._pan_from
            self._pan_from = event.position()
            self.pan(-delta.x(), -delta.y())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:
        if self._pan_from is not None:
            self._pan_from = None
            self.viewport().unsetCursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def pan(self, dx: float, dy: float) -> None:
        self.horizontalScrollBar().setValue(int(self.horizontalScrollBar().value() + dx))
        self.verticalScrollBar().setValue(int(self.verticalScrollBar().value() + dy))

    def keyPressEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            event.accept()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            self.viewport().unsetCursor()
            event.accept()
            return
        super().keyReleaseEvent(event)

    # --- focus ------------------------------------------------------------------------------

    def bring_into_view(self, item: QGraphicsItem) -> None:
        rect = item.sceneBoundingRect()
        node = item.parentItem() or item
        self.ensureVisible(node.sceneBoundingRect().intersected(rect.adjusted(-200, -120, 200, 120)), 40, 40)
        self.ensureVisible(rect, 40, 40)
