"""GUI responsiveness while a 1,000,000-row sync runs, while browsing thousands of tables,
and during a mapping apply.

Run with `scripts/bench.sh` (marker `benchmark`). A dedicated PostgreSQL database
(`esg_bench_gui`, built once with generate_series and reused) holds `readings`
(1,000,000 rows). The real main window syncs it into a fresh DuckDB workspace through
the Sync button while a QTimer on the GUI thread ticks every 10 ms; the lag of a tick is
how much later than due it fired, i.e. how long the event loop could not run. The
maximum, p99 and median lag are printed with the sync's time. Goal: never over 50 ms.

The second benchmark browses a database of ESG_BENCH_GUI_TABLES (5,000) tables and prints
the lag per phase (discovery, listing the tables, listing them again from the catalog,
merging a discovery made by another process, filtering). Goal: never over 100 ms.

The third applies the sample electricity mapping to ESG_BENCH_GUI_APPLY_ROWS (1,000,000)
landed readings from the Mapping tab (Apply, the progress, the KPI recompute, the KPIs tab
reloading), each run a fresh process on a copy of one landed workspace;
ESG_BENCH_BASELINE=<checkout> interleaves that version's runs (ESG_BENCH_ROUNDS, default 2).
Goal: never over 50 ms.

Every stall over STALL_REPORT_MS is listed with what the GUI thread did in it: its own CPU
time, its time runnable but waiting for a core (Linux's schedstat), and the rest, blocked
(waiting for the GIL held by another thread). ESG_BENCH_GUI_STACKS=1 samples the GUI
thread's stack (and, in the apply, the other threads') during stalls; ESG_BENCH_GUI_SWITCH
sets another GIL switch interval to compare. Nothing about timing is asserted; the only
assertions are that every row and table landed and every landed row was mapped.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

pytestmark = [pytest.mark.benchmark, pytest.mark.timeout(1800)]

PG_HOST = os.environ.get("ESG_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ESG_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("ESG_TEST_PG_USER", "postgres")
DB = os.environ.get("ESG_BENCH_GUI_DB", "esg_bench_gui")
ROWS = 1_000_000
TICK_MS = 10
STALL_REPORT_MS = 50  # stalls listed with the GUI thread's own CPU time in them
GOAL_MS = 50


def _connect(database: str):
    """An autocommit connection to `database`, made first if it does not exist."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not available: {exc}")
    with admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            admin.execute(f'CREATE DATABASE "{database}"')
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=database, autocommit=True)


def _window_on(qtbot, tmp_path, connector: str, database: str):
    """The main window on a new workspace with one PostgreSQL connector, selected."""
    if os.environ.get("ESG_BENCH_GUI_SWITCH"):  # try another GIL switch interval (seconds)
        import sys

        sys.setswitchinterval(float(os.environ["ESG_BENCH_GUI_SWITCH"]))
    from PySide6.QtCore import QSettings

    from esg_workbench.gui.main_window import MainWindow
    from esg_workbench.sync import operations

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(f"duckdb:///{tmp_path / 'ws.duckdb'}", settings=settings)
    window.show()
    with qtbot.waitSignal(window.connectors_loaded, timeout=30000):
        pass
    operations.add_connector(window.workspace, connector, "postgres", {
        "host": PG_HOST, "port": PG_PORT, "database": database, "schema": "public", "username": PG_USER})
    with qtbot.waitSignal(window.connectors_loaded, timeout=30000):
        window.refresh_connectors(select=connector)
    return window


def _close(qtbot, window) -> None:
    window.close()
    qtbot.waitUntil(lambda: not window.pool.busy, timeout=30000)
    window.pool.shutdown()
    window.deleteLater()


def _queued_ms() -> float:
    """How long the calling thread has been runnable but waiting for a core (Linux's
    schedstat), in ms; 0 where it cannot be read."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


class LagMeter:
    """A timer every TICK_MS on the GUI thread: how late each tick comes is how long the
    event loop was blocked."""

    def __init__(self):
        from PySide6.QtCore import QElapsedTimer, Qt, QTimer

        self.lags: list[float] = []
        # ticks over STALL_REPORT_MS: (lag, the GUI thread's CPU in it, its time runnable but waiting for a
        # core, ms); the rest of a stall the thread was blocked: waiting for the GIL (or a lock)
        self.busy: list[tuple[float, float, float]] = []
        self.busy_at: list[float] = []  # (their monotonic seconds)
        self._cpu = time.thread_time()
        self._queued = _queued_ms()
        self.times: list[float] = []  # monotonic seconds of each tick
        self._clock = QElapsedTimer()
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        elapsed = self._clock.nsecsElapsed() / 1e6
        self._clock.restart()
        lag = max(0.0, elapsed - TICK_MS)
        self.lags.append(lag)
        cpu, queued = time.thread_time(), _queued_ms()
        if lag > STALL_REPORT_MS:
            self.busy.append((lag, (cpu - self._cpu) * 1000, queued - self._queued))
            self.busy_at.append(time.monotonic())
        self._cpu, self._queued = cpu, queued
        self.times.append(time.monotonic())

    def start(self) -> None:
        self._clock.start()
        self._cpu, self._queued = time.thread_time(), _queued_ms()
        self._timer.start()
        if os.environ.get("ESG_BENCH_GUI_STACKS") and getattr(self, "stalls", None) is None:
            self.stalls = StallSampler()

    def stop(self) -> None:
        self._timer.stop()

    def close(self) -> None:
        self.stop()
        if getattr(self, "stalls", None) is not None:
            self.stalls.stop()


class StallSampler:
    """With ESG_BENCH_GUI_STACKS=1: a thread that looks at the GUI thread's stack whenever
    the event loop has not run for STALL_MS, and prints the most frequent stacks at the
    end (where the window froze). Sampling needs the GIL, so a stall inside one long C call
    shows the Python line that made the call."""

    STALL_MS = 40

    def __init__(self):
        import collections
        import threading

        self.gui = threading.get_ident()
        self.seen: collections.Counter = collections.Counter()
        self.samples: list[tuple[float, dict[str, str]]] = []  # (monotonic, {other thread: its stack's top})
        self._last = time.monotonic()
        self._running = True
        from PySide6.QtCore import QTimer

        self._beat = QTimer()
        self._beat.setInterval(5)
        self._beat.timeout.connect(self._tick)
        self._beat.start()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        self._last = time.monotonic()

    def _watch(self) -> None:
        import sys
        import threading
        import traceback

        names = {t.ident: t.name for t in threading.enumerate()}
        while self._running:
            if len(names) != threading.active_count():
                names = {t.ident: t.name for t in threading.enumerate()}
            time.sleep(0.01)
            if (time.monotonic() - self._last) * 1000 > self.STALL_MS:
                frames = sys._current_frames()
                frame = frames.get(self.gui)
                if frame is not None:
                    stack = traceback.extract_stack(frame)[-8:]
                    self.seen["".join(f"    {f.filename.split('esg_workbench/')[-1]}:{f.lineno} {f.name}\n"
                                      for f in stack)] += 1
                # what the other threads were at (the one holding the GIL released it here)
                others = {names.get(ident, str(ident)): "; ".join(
                    f"{f.filename.split('/')[-1]}:{f.lineno} {f.name}" for f in traceback.extract_stack(other)[-5:])
                    for ident, other in frames.items() if ident not in (self.gui, threading.get_ident())}
                if frame is not None:
                    others["GUI"] = "; ".join(f"{f.filename.split('/')[-1]}:{f.lineno} {f.name}" for f in stack[-6:])
                self.samples.append((time.monotonic(), others))

    def stop(self) -> None:
        self._running = False
        self._beat.stop()
        print(f"\nGUI thread stacks during stalls over {self.STALL_MS} ms (samples every 10 ms):")
        for stack, count in self.seen.most_common(8):
            print(f"  {count} samples:\n{stack}")


def _source_database() -> None:
    with _connect(DB) as conn:
        have = conn.execute("SELECT to_regclass('public.readings') IS NOT NULL").fetchone()[0]
        if have and conn.execute("SELECT count(*) FROM readings").fetchone()[0] == ROWS:
            return
        conn.execute("DROP TABLE IF EXISTS readings")
        conn.execute("""
            CREATE TABLE readings (
                id bigint PRIMARY KEY,
                site text NOT NULL,
                carrier text NOT NULL,
                kwh numeric(14,3) NOT NULL,
                note text,
                updated_at timestamptz NOT NULL
            )""")
        conn.execute(f"""
            INSERT INTO readings
            SELECT g, 'SITE-' || (g % 250), (ARRAY['electricity','gas','diesel','heat'])[1 + g % 4],
                   (g % 100000) * 1.125, CASE WHEN g % 9 = 0 THEN NULL ELSE 'Zürich Süd ' || g END,
                   timestamptz '2023-01-01' + g * interval '30 seconds'
            FROM generate_series(1, {ROWS}) g""")
        conn.execute("ANALYZE readings")


def test_gui_event_loop_lag_during_a_million_row_sync(qtbot, tmp_path):
    from PySide6.QtCore import Qt

    _source_database()
    window = _window_on(qtbot, tmp_path, "bench", DB)
    panel = window.sync
    window.tabs.setCurrentWidget(panel)
    qtbot.waitUntil(lambda: panel.sync_button.isEnabled(), timeout=30000)

    meter = LagMeter()
    lags = meter.lags
    started = time.monotonic()
    meter.start()
    with qtbot.waitSignal(window.jobs.ended, timeout=1_500_000):
        qtbot.mouseClick(panel.sync_button, Qt.MouseButton.LeftButton)
    meter.close()
    seconds = time.monotonic() - started
    job = window.jobs.job("bench")
    result = job.result
    assert result is not None and result.status.value == "success", job.log
    assert result.rows_written == ROWS

    ordered = sorted(lags)
    p99 = ordered[int(len(ordered) * 0.99) - 1] if ordered else 0.0
    over = sum(1 for v in lags if v > GOAL_MS)
    print()
    print(f"GUI lag during a {ROWS:,}-row sync ({result.streams[0].chunks_planned} chunks, "
          f"{seconds:.1f} s, {ROWS / seconds:,.0f} rows/s), timer every {TICK_MS} ms, {len(lags):,} ticks:")
    print(f"  max lag {max(lags):.1f} ms, p99 {p99:.1f} ms, median {statistics.median(lags):.1f} ms; "
          f"{over} tick(s) over the {GOAL_MS} ms goal (load {open('/proc/loadavg').read().split()[0]})")
    if meter.busy:
        print(f"  stalls over {STALL_REPORT_MS} ms (lag / GUI thread CPU in it / waiting for a core): "
              + ", ".join(f"{lag:.0f}/{cpu:.0f}/{queued:.0f} ms" for lag, cpu, queued in meter.busy))

    _close(qtbot, window)


TABLES = int(os.environ.get("ESG_BENCH_GUI_TABLES", "5000"))
WIDE_DB = DB + "_wide"


def _wide_database() -> None:
    """A database with TABLES small tables (built once, reused)."""
    with _connect(WIDE_DB) as conn:
        have = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        if have == TABLES:
            return
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        for first in range(1, TABLES + 1, 1000):  # a transaction per thousand (lock table size)
            last = min(first + 999, TABLES)
            conn.execute(f"""
                DO $$ BEGIN
                  FOR i IN {first}..{last} LOOP
                    EXECUTE format('CREATE TABLE t_%s (id bigint PRIMARY KEY, site text, kwh numeric(12,3),
                                    updated_at timestamptz)', lpad(i::text, 5, '0'));
                  END LOOP;
                END $$""")


def test_gui_event_loop_lag_while_browsing_thousands_of_tables(qtbot, tmp_path):
    """Discover a database with thousands of tables and fill the schema tree's table
    level, list the tables again from the workspace's catalog (no discovery), merge a
    discovery made by another process into the open tree, then filter it: the timer's lag
    in each phase shows whether the window ever froze (goal: never over 100 ms)."""
    _wide_database()
    window = _window_on(qtbot, tmp_path, "wide", WIDE_DB)
    browser = window.schema
    window.tabs.setCurrentWidget(browser)

    meter = LagMeter()
    lags = meter.lags
    phases: dict[str, tuple[float, list[float]]] = {}
    meter.start()

    def phase(name: str, signal_kind: str, act) -> None:
        first, started = len(lags), time.monotonic()
        with qtbot.waitSignal(browser.level_loaded, timeout=600000, check_params_cb=lambda k: k == signal_kind):
            act()
        qtbot.wait(50)  # the turns right after the level is complete belong to it too
        phases[name] = (time.monotonic() - started, lags[first:])

    connector = browser.proxy.index(0, 0)
    discovered_first = len(lags)
    with qtbot.waitSignal(browser.level_loaded, timeout=600000, check_params_cb=lambda k: k == "connector"):
        browser.tree.expand(connector)
    phases["discover"] = (0.0, lags[discovered_first:])
    phase("list (after discovery)", "schema", lambda: None)
    schema = browser.proxy.index(0, 0, browser.proxy.index(0, 0))
    assert browser.proxy.rowCount(schema) == TABLES

    def relist() -> None:  # forget the level (as a refresh does), open it again
        from esg_workbench.gui.schema_browser import STATE, _placeholder

        item = browser.model.itemFromIndex(browser.proxy.mapToSource(schema))
        browser.tree.collapse(schema)
        meter.stop()  # (removing the rows is not what is measured here)
        item.removeRows(0, item.rowCount())
        item.setData(None, STATE)
        item.appendRow(_placeholder())
        meter.start()
        browser.tree.expand(browser.proxy.index(0, 0, browser.proxy.index(0, 0)))

    phase("list from the catalog", "schema", relist)
    from esg_workbench.sync import operations

    if hasattr(browser, "catalogs_seen"):  # (not in versions before the merge existed)
        from esg_workbench.workspace import open_workspace

        # "another process" discovers again (its own workspace connection; not measured:
        # in another process it would not share this one's GIL), then the window notices
        meter.stop()
        other = open_workspace(window.workspace_url)
        try:
            operations.discover_connector(other, "wide")
        finally:
            other.close()
        meter.start()
        window.watch.setInterval(100)
        phase("merge a discovery made elsewhere", "merged", lambda: None)
        window.watch.setInterval(10_000)

    started, first = time.monotonic(), len(lags)
    browser.filter.setText("t_0421")
    matches = sum(1 for i in range(1, TABLES + 1) if "t_0421" in f"t_{i:05d}")  # (10 of 5,000)
    qtbot.waitUntil(lambda: browser.proxy.rowCount(browser.proxy.index(0, 0, browser.proxy.index(0, 0))) == matches,
                    timeout=30000)
    phases["filter"] = (time.monotonic() - started, lags[first:])
    meter.close()

    def figures(values: list[float]) -> str:
        ordered = sorted(values)
        p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)] if ordered else 0.0
        over = sum(1 for v in values if v > 100)
        return f"max lag {max(values, default=0):.1f} ms, p99 {p99:.1f} ms, {over} over 100 ms, {len(values):,} ticks"

    print()
    print(f"Schema browser on {TABLES:,} tables (load {open('/proc/loadavg').read().split()[0]}):")
    for name, (seconds, values) in phases.items():
        print(f"  {name:34} {seconds:6.2f} s  {figures(values)}")
    print(f"  {'overall':34} {'':8}  {figures(lags)}")
    if meter.busy:
        print(f"  stalls over {STALL_REPORT_MS} ms (lag / GUI thread CPU in it / waiting for a core): "
              + ", ".join(f"{lag:.0f}/{cpu:.0f}/{queued:.0f} ms" for lag, cpu, queued in meter.busy))

    _close(qtbot, window)


# --- an apply from the Mapping tab -------------------------------------------------------------------

APPLY_ROWS = int(os.environ.get("ESG_BENCH_GUI_APPLY_ROWS", "1000000"))
REPO = Path(__file__).resolve().parents[2]


def test_gui_event_loop_lag_during_a_mapping_apply(tmp_path):
    """The sample electricity mapping (saved as 'bench') applied to APPLY_ROWS landed
    readings from the Mapping tab of the real main window: its Apply action, the progress
    relayed to the notice bar, the Cancel watcher, the recompute of every KPI and the KPIs
    tab reloading after it, while the GUI thread's timer ticks. Each run is a fresh process
    on a copy of one landed workspace; ESG_BENCH_BASELINE=<checkout> runs that version too,
    interleaved with this one (ESG_BENCH_ROUNDS rounds, default 2)."""
    landed = tmp_path / "landed.duckdb"
    _apply_child(REPO, ["land", str(landed), str(APPLY_ROWS)])
    baseline = os.environ.get("ESG_BENCH_BASELINE")
    trees = [("baseline", Path(baseline)), ("this", REPO)] if baseline else [("this", REPO)]
    rounds = int(os.environ.get("ESG_BENCH_ROUNDS", "2" if baseline else "1"))
    runs: list[tuple[str, dict]] = []
    for _ in range(rounds):
        for name, tree in trees:
            copy = tmp_path / f"{name}.duckdb"
            shutil.copyfile(landed, copy)
            runs.append((name, _apply_child(tree, ["apply", str(copy), str(APPLY_ROWS)])))
            copy.unlink()
            assert runs[-1][1]["source_rows"] == APPLY_ROWS, runs[-1][1]
    print(f"\nGUI lag during an apply + KPI recompute of {APPLY_ROWS:,} landed rows from the Mapping tab "
          f"(timer every {TICK_MS} ms; goal: never over {GOAL_MS} ms):")
    for name, r in runs:
        assert Path(r["code"]) == dict(trees)[name], r["code"]  # (the child ran that tree's code)
        print(f"  {name:8} {r['seconds']:6.1f} s, load {r['load']}: max lag {r['max']:.0f} ms, p99 {r['p99']:.1f} ms, "
              f"median {r['median']:.1f} ms; {r['over']} tick(s) over {GOAL_MS} ms, mostly "
              + ", ".join(f"{kind} in {n}" for kind, n in r["kinds"].items()) + f"; {r['messages']} progress messages")
        for stall in r["stalls"]:
            print(f"      {stall}")
        for line in r.get("stacks", []):
            print(f"      {line}")


def _apply_child(tree: Path, args: list[str]) -> dict:
    from tests.benchmarks.test_bench_mapping import run_child

    return run_child(tree, args, script=__file__, timeout=1700)


def _land_for_apply(path: str, rows: int) -> dict:
    from esg_workbench.workspace import open_workspace
    from tests.benchmarks.test_bench_mapping import _land, bench_mapping

    _land(path, rows)
    ws = open_workspace(path)
    bench_mapping(ws)
    ws.close()
    return {"rows": rows}


def _run_until(done, timeout_s: float, watch=lambda: None) -> None:
    """Run the event loop until `done()` (looked at every 20 ms, with `watch()`) or fail
    after timeout_s."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop, deadline = QEventLoop(), time.monotonic() + timeout_s
    poll = QTimer()
    poll.setInterval(20)
    poll.timeout.connect(lambda: (watch(), (done() or time.monotonic() > deadline) and loop.quit()))
    poll.start()
    if not done():
        loop.exec()
    poll.stop()
    if not done():
        raise TimeoutError(f"not done after {timeout_s} s")


def _measure_apply(path: str, rows: int) -> dict:
    """(In a child process, on `tree`'s code.) The main window on the landed workspace, the
    Mapping tab showing 'bench'; Apply, until the KPIs tab has reloaded."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    import esg_workbench

    if os.environ.get("ESG_BENCH_GUI_SWITCH"):
        sys.setswitchinterval(float(os.environ["ESG_BENCH_GUI_SWITCH"]))
    app = QApplication.instance() or QApplication([])
    from esg_workbench.gui.main_window import MainWindow

    folder = Path(path).parent
    window = MainWindow(f"duckdb:///{path}", settings=QSettings(str(folder / "settings.ini"),
                                                                QSettings.Format.IniFormat))
    window.show()
    panel = window.mapping
    window.tabs.setCurrentWidget(panel)
    # as an analyst would: the mapping open on the canvas, its preview shown, then Apply
    _run_until(lambda: panel.document.mapping is not None and panel.document.mapping.name == "bench"
               and not panel.preview.busy and not window.pool.busy, 120)
    loaded, applied, messages = [], [], []
    window.kpis.loaded.connect(loaded.append)
    panel.applied.connect(applied.append)
    panel.apply_failed.connect(applied.append)
    meter = LagMeter()
    started = time.monotonic()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    meter.start()
    panel.act_apply.trigger()

    def notice() -> None:  # the progress shown in the notice bar, when it changed
        text = panel.info.label.text()
        if not messages or messages[-1][1] != text:
            messages.append((time.monotonic() - started, text))

    _run_until(lambda: bool(applied) and (bool(loaded) or not isinstance(applied[0], dict)), 1500, notice)
    _run_until(lambda: not window.pool.busy, 60)
    meter.close()
    seconds = time.monotonic() - started
    result = applied[0]
    assert isinstance(result, dict), result
    lags = meter.lags
    ordered = sorted(lags)
    late = [(at - started, lag, cpu, queued, max(0.0, lag - cpu - queued))
            for at, (lag, cpu, queued) in zip(meter.busy_at, meter.busy) if lag > GOAL_MS]
    # what most of each stall was: the GUI thread computing, waiting for a core, or blocked (the GIL)
    kinds = {"computing": 0, "waiting for a core": 0, "blocked": 0}
    for _at, _lag, cpu, queued, blocked in late:
        kinds[max(zip((cpu, queued, blocked), kinds))[1]] += 1
    out = {"code": str(Path(esg_workbench.__file__).parents[1]), "source_rows": result["source_rows"],
           "seconds": seconds, "load": load, "max": max(lags), "p99": ordered[int(len(ordered) * 0.99) - 1],
           "median": statistics.median(lags), "over": len(late), "kinds": kinds, "messages": len(messages),
           "stalls": [f"at {at:6.2f} s: {lag:4.0f} ms late; GUI thread: CPU {cpu:3.0f} ms, waiting for a core "
                      f"{queued:3.0f} ms, blocked {blocked:3.0f} ms "
                      f"(shown: {next((t for s, t in reversed(messages) if s <= at), '')[:48]!r})"
                      for at, lag, cpu, queued, blocked in late]}
    sampler = getattr(meter, "stalls", None)
    if sampler is not None:  # the other threads during each stall
        out["stacks"] = [f"{at - started:6.2f} s  {name}: {stack}" for at, others in sampler.samples
                         for name, stack in others.items()]
    window.close()
    _run_until(lambda: not window.pool.busy, 60)
    window.pool.shutdown()
    return out


if __name__ == "__main__":
    command, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(_land_for_apply(path, count) if command == "land" else _measure_apply(path, count)))
