#!/usr/bin/env bash
# Sync benchmark: scripts/bench.sh [pytest args]
#
# Runs the measured benchmarks under tests/benchmarks (marker `benchmark`, deselected by
# pyproject's addopts in ordinary test runs). Figures are printed, never asserted.
#
# test_bench_sync.py builds (once, then reuses) the PostgreSQL database esg_bench on
# 127.0.0.1:5432 with pgbench_accounts (pgbench -i -s 10) and a wide meter_readings table,
# 1,000,000 rows each, and prints per table, as medians of interleaved rounds with the load
# average: the COPY floor, full sync seconds and their ratio, CPU, peak RSS and chunks of
# the `esg-workbench sync` process, a no-op delta and a 1% delta. Needs pgbench and psql
# (postgresql-client). Environment: ESG_TEST_PG_HOST / _PORT / _USER, ESG_BENCH_DB (default
# esg_bench), ESG_BENCH_ROUNDS (default 5), ESG_BENCH_REBUILD=1 rebuilds the source tables,
# ESG_BENCH_SYNC_ARGS / ESG_BENCH_COMPARE_ARGS (see tests/benchmarks/test_bench_sync.py),
# ESG_BENCH_BASELINE=/path/to/checkout measures that version in the same rounds, and
# ESG_BENCH_10M=1 adds a full sync of 10,000,000 meter_readings rows (time, CPU, peak RSS).
# Only the sync benchmark: scripts/bench.sh -k bench_sync
#
# test_bench_mapping.py lands 1,000,000 readings once and maps and aggregates them in fresh
# processes, printing apply, aggregate, re-apply, re-aggregate, peak RSS, drill-downs and
# the single-SQL limit interleaved. ESG_BENCH_BASELINE=/path/to/checkout interleaves that
# version's runs with this one's (ESG_BENCH_ROUNDS rounds, default 2); ESG_BENCH_10M=1 adds
# 10,000,000 rows (about 12 minutes on a loaded 2-core machine).
# Only the mapping benchmark, before/after: ESG_BENCH_BASELINE=../main scripts/bench.sh -k bench_mapping
set -euo pipefail

cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi

export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"

exec python -m pytest -m benchmark tests/benchmarks -s -p no:cacheprovider "$@"
