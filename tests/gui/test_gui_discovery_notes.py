"""Issue 17 in the app: after a discovery the schema browser shows what a file source
detected per table (encoding, number formats) and lists the tables it could not read,
with their error, instead of showing them with only their _esg_* columns."""

from __future__ import annotations

from PySide6.QtCore import Qt

from esg_workbench.gui.schema_browser import SchemaBrowser
from tests.gui.conftest import ok_button, open_dialog
from tests.gui.test_gui_schema_browser import _children, _named


def _files_folder(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    # a German ERP export: Windows-1252, ';'-separated, decimal commas and thousands points
    (folder / "energy.csv").write_bytes("site;supplier;kwh\nBerlin;Müller GmbH;1.234,56\n"
                                        "München;Bäcker AG;987,10\n".encode("cp1252"))
    (folder / "broken.jsonl").write_text('{"kwh": 1}\n{"kwh": 2, oops\n', encoding="utf-8")
    return folder


def _add_files_connector(qtbot, window, folder, name="exports"):
    dialog = open_dialog(qtbot, window, window.act_add)
    qtbot.keyClicks(dialog.name, name)
    dialog.type.setCurrentText("files")
    qtbot.keyClicks(dialog._fields["path"], str(folder))
    assert ok_button(dialog).isEnabled(), dialog.problems.text()
    with qtbot.waitSignal(window.connectors_loaded, timeout=20000):
        qtbot.mouseClick(ok_button(dialog), Qt.MouseButton.LeftButton)
    window.connectors.select(name)


def _tables(qtbot, browser, name):
    tree, proxy = browser.tree, browser.proxy
    with qtbot.waitSignal(browser.level_loaded, timeout=30000, check_params_cb=lambda k: k == "schema"):
        tree.expand(_named(proxy, tree.rootIndex(), name))
    schema = _children(proxy, _named(proxy, tree.rootIndex(), name))[0]
    return {i.data(): i for i in _children(proxy, schema)}


def _loaded_tables(browser, name):
    """The table rows shown under the connector's only schema ({} while it loads)."""
    proxy = browser.proxy
    schemas = _children(proxy, _named(proxy, browser.tree.rootIndex(), name))
    if not schemas:
        return {}
    return {i.data(): i for i in _children(proxy, schemas[0])}


def test_discovery_shows_detections_and_unreadable_tables(qtbot, window, tmp_path):
    _add_files_connector(qtbot, window, _files_folder(tmp_path))
    browser: SchemaBrowser = window.schema
    window.tabs.setCurrentWidget(browser)
    messages = []
    browser.message.connect(messages.append)

    # expanding the never-discovered connector discovers it, as a user does
    tables = _tables(qtbot, browser, "exports")
    assert sorted(tables) == ["broken", "energy"]
    status = browser.status.text()
    assert "2 tables discovered" in status and "1 could not be read: broken (broken.jsonl, line 2" in status
    assert "formats detected in 1 table" in status
    assert messages and messages[-1] == status

    # the unreadable table: a warning icon, its error in the Notes column and the tooltip
    broken = tables["broken"]
    assert "could not read: broken.jsonl, line 2: malformed JSON line" in broken.siblingAtColumn(4).data()
    tip = broken.data(Qt.ItemDataRole.ToolTipRole)
    assert "malformed JSON line" in tip and "What to do" in tip
    assert not broken.data(Qt.ItemDataRole.DecorationRole).isNull()
    assert "could not" not in (tables["energy"].siblingAtColumn(4).data() or "")

    # selecting the readable table shows what was detected under its samples
    with qtbot.waitSignal(browser.samples_loaded, timeout=20000):
        browser.tree.setCurrentIndex(tables["energy"])
    detected = browser.detected.text()
    assert browser.detected.isVisibleTo(browser)
    assert detected.startswith("Detected: ")
    assert "cp1252" in detected and "decimal ','" in detected and "thousands '.'" in detected
    assert "Windows-1252" in tables["energy"].data(Qt.ItemDataRole.ToolTipRole)
    browser.grab().save(str(tmp_path / "detected.png"))
    assert "Müller GmbH" in [browser.samples.index(r, 1).data() for r in range(browser.samples.rowCount())]

    # selecting the unreadable one shows its error there instead
    browser.tree.setCurrentIndex(tables["broken"])
    assert browser.detected.text().startswith("Could not read broken: broken.jsonl, line 2")
    assert browser.detected.isVisibleTo(browser)
    browser.grab().save(str(tmp_path / "discovery_notes.png"))  # (to look at: pytest --basetemp)

    # Refresh re-discovers: the counts and the error are in its message too
    with qtbot.waitSignal(browser.refreshed, timeout=30000):
        browser.refresh("exports")
    assert "no change since the last discovery" in browser.status.text()
    assert "1 could not be read: broken" in browser.status.text()

    # once the file is fixed, a refresh clears the warning
    (tmp_path / "exports" / "broken.jsonl").write_text('{"kwh": 1}\n{"kwh": 2}\n', encoding="utf-8")
    with qtbot.waitSignal(browser.refreshed, timeout=30000):
        browser.refresh("exports")
    assert "could not be read" not in browser.status.text()
    qtbot.waitUntil(lambda: "broken" in _loaded_tables(browser, "exports"), timeout=30000)
    assert "could not" not in (_loaded_tables(browser, "exports")["broken"].siblingAtColumn(4).data() or "")


def test_findings_texts_without_qt():
    from esg_workbench.gui.catalog import DiscoveryFindings

    nothing = DiscoveryFindings()
    assert nothing.summary("erp", 1) == "erp: 1 table discovered." and nothing.details() == ""
    assert nothing.table_text("public.x") == ""
    many = DiscoveryFindings(notes={"a": ["column 'kwh': decimal ','"]},
                             unreadable={t: f"{t}.json: broken\nWhat to do: fix it" for t in "bcde"})
    summary = many.summary("files", 5)
    assert summary.startswith("files: 5 tables discovered; 4 could not be read: b (b.json: broken); ")
    assert "e (e.json" not in summary and "…" in summary and "What to do" not in summary
    assert summary.endswith("formats detected in 1 table (select a table to see them).")
    assert many.table_text("a") == "Detected: column 'kwh': decimal ','"
    assert many.table_text("b") == "Could not read b: b.json: broken\nWhat to do: fix it"
