"""Undo commands: every edit of the canvas is one of the model's operations wrapped in a
QUndoCommand (redo: `mapping.apply(op)`, undo: `mapping.apply(inverse)`), like
orange-canvas-core's AddNodeCommand over `scheme.add_node`. A gesture that makes several
edits is one macro on the stack (see MappingDocument.macro)."""

from __future__ import annotations

from typing import Hashable

from PySide6.QtGui import QUndoCommand

from esg_workbench.mapping.model import Mapping, Operation

MERGE_ID = 0x4D41  # commands with a merge key merge with the next one of the same key


class OperationCommand(QUndoCommand):
    """One model operation. With a `merge_key`, consecutive commands of the same key
    (typing in one field of the transform editor) become one undo step."""

    def __init__(self, mapping: Mapping, op: Operation, text: str, merge_key: Hashable | None = None,
                 parent: QUndoCommand | None = None):
        super().__init__(text, parent)
        self.mapping = mapping
        self.merge_key = merge_key
        self._redo_op: Operation = op
        self._undo_op: Operation | None = None

    def redo(self) -> None:
        self._undo_op = self.mapping.apply(self._redo_op)

    def undo(self) -> None:
        self._redo_op = self.mapping.apply(self._undo_op)

    def id(self) -> int:
        return MERGE_ID if self.merge_key is not None else -1

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, OperationCommand) or other.merge_key is None or other.merge_key != self.merge_key:
            return False
        # our inverse still restores the state before both; the other's op is the state after both
        self._redo_op = other._redo_op
        self.setText(other.text())
        return True
