"""The frozen app's entry point: the same `esg-workbench` command as the console script
(no command opens the desktop app, any command runs headless).

One hidden extra, for the packaging test and for anyone checking a build by hand:
`esg-workbench --self-check` imports every connector type, the SQLAlchemy dialects and
keyring backend the app loads by name, and the shipped catalog and factors, then prints
one JSON line and exits 0 only if all of them loaded. PyInstaller cannot see imports made
by name at run time, so this is where a missing hidden import shows up, before a user
picks that connector type.
"""

from __future__ import annotations

import importlib
import json
import sys


def self_check() -> int:
    from esg_workbench import __version__
    from esg_workbench.connectors.registry import _TYPES

    results: dict[str, str] = {}

    def check(name: str, load) -> None:
        try:
            load()
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none stops the check
            results[name] = f"{type(exc).__name__}: {exc}"

    for type_name, (module, class_name) in _TYPES.items():
        check(f"connector:{type_name}", lambda m=module, c=class_name: getattr(importlib.import_module(m), c))

    import sqlalchemy

    for url in ("duckdb:///:memory:", "postgresql+psycopg://u@localhost/db", "mysql+pymysql://u@localhost/db",
                "sqlite://", "hana://u@localhost:30015"):
        # create_engine resolves the dialect and imports its driver; it does not connect
        check(f"dialect:{url.split(':')[0]}", lambda u=url: sqlalchemy.create_engine(u).dispose())

    def keyring_backends() -> None:
        # keyring finds its backends through entry points: the platform's own must be
        # importable in the bundle (whether a keyring daemon runs is the user's machine's
        # business, reported by the app itself)
        modules = {"linux": ("keyring.backends.SecretService", "keyring.backends.kwallet", "secretstorage"),
                   "darwin": ("keyring.backends.macOS",),
                   "win32": ("keyring.backends.Windows",)}.get(sys.platform, ())
        for module in modules:
            importlib.import_module(module)
        from keyring.backend import get_all_keyring

        get_all_keyring()

    check("keyring", keyring_backends)

    def resources() -> None:
        from esg_workbench.mapping.catalog import load_catalog
        from esg_workbench.mapping.factors import builtin

        load_catalog()
        builtin()

    def units() -> None:
        from esg_workbench.mapping.units import factor

        factor("l", "m**3")  # pint reads its unit definitions file on the first use

    check("resources", resources)
    check("units", units)

    failed = {k: v for k, v in results.items() if v != "ok"}
    print(json.dumps({"version": __version__, "checked": sorted(results), "failed": failed}))
    return 1 if failed else 0


def run(argv: list[str]) -> int:
    if argv[:1] == ["--self-check"]:
        return self_check()
    if argv[:1] == ["--cx-worker"]:  # MySQL reads' helper process (esg_workbench/connectors/cx_worker.py)
        from esg_workbench.connectors.cx_worker import serve

        serve()
        return 0
    from esg_workbench.cli import main

    return main(argv)


if __name__ == "__main__":
    import multiprocessing

    multiprocessing.freeze_support()  # a frozen app's child processes start here too
    raise SystemExit(run(sys.argv[1:]))
