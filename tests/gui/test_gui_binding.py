"""The Qt binding itself: PySide6 6.12.0 drops a reference to None on every void method
call, which on Python 3.11 (None is not immortal before 3.12) ends the process with
"none_dealloc" after enough calls. pyproject pins a version without the bug; this test
catches a release that brings it back."""

from __future__ import annotations

import sys

from PySide6.QtGui import QStandardItem
from PySide6.QtWidgets import QLabel


def test_void_calls_keep_nones_reference_count(qtbot):
    label = QLabel()
    qtbot.addWidget(label)
    item = QStandardItem()
    before = sys.getrefcount(None)
    for _ in range(2000):
        label.setText("x")
        item.setSelectable(False)
    assert sys.getrefcount(None) - before > -100, "this PySide6 leaks references to None; see pyproject.toml"
