"""Where each site is, in the app: the mapping canvas's Sites dialog lists the demo's sites
with the countries mapped from the sample ERP, refuses an unknown country with a readable
message, and sets a country by hand in a worker thread."""

from __future__ import annotations

from tests.gui.mapping_demo import panel, ws  # noqa: F401  (panel, ws: fixtures)


def _shown(dialog) -> dict[str, tuple[str, str]]:
    tree = dialog.tree
    return {tree.topLevelItem(i).text(0): (tree.topLevelItem(i).text(1), tree.topLevelItem(i).text(3))
            for i in range(tree.topLevelItemCount())}


def test_sites_dialog_lists_sets_and_refuses(qtbot, panel, ws):
    from esg_workbench.mapping import sites

    assert panel.act_sites.isEnabled()
    dialog = panel.show_sites()
    with qtbot.waitSignal(dialog.loaded, timeout=30000):
        pass
    shown = _shown(dialog)
    assert shown["DE-BER"] == ("DE", "mapping:sample_erp") and shown["SE-GOT"][0] == "SE"

    dialog.tree.setCurrentItem(dialog.tree.topLevelItem(list(shown).index("ES-VLC")))
    assert dialog.site.text() == "ES-VLC" and dialog.country.text() == "ES"
    dialog.country.setText("Atlantis")
    with qtbot.waitSignal(dialog.failed, timeout=30000):
        dialog.set_button.click()
    assert "ISO 3166" in dialog.message.text()
    assert {s["site"]: s["country"] for s in sites.locations(ws)}["ES-VLC"] == "ES"  # nothing changed

    dialog.country.setText("pt")
    with qtbot.waitSignals([dialog.changed, dialog.loaded], timeout=30000):
        dialog.set_button.click()
    assert _shown(dialog)["ES-VLC"] == ("PT", "manual")
    assert "ES-VLC is in PT" in dialog.message.text()
    assert {s["site"]: s["origin"] for s in sites.locations(ws)}["ES-VLC"] == "manual"
    dialog.close()
