#!/usr/bin/env bash
# Run the test suite: scripts/test.sh [pytest args]
#
# pytest runs inside a private D-Bus session with a throw-away, unlocked gnome-keyring,
# so the keyring tests use a real Secret Service without touching the user's own
# keyring. The keyring's files live in a temporary directory removed afterwards.
# Without dbus-run-session or gnome-keyring-daemon, pytest runs directly and the keyring
# tests skip (or fail under ESG_REQUIRE_SERVICES=1).
set -euo pipefail

cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"

if ! command -v dbus-run-session >/dev/null || ! command -v gnome-keyring-daemon >/dev/null; then
    echo "test.sh: dbus-run-session or gnome-keyring-daemon not found (Debian: dbus, gnome-keyring);" \
         "running without a keyring, the keyring tests will skip" >&2
    exec python -m pytest "$@"
fi

keyring_home="$(mktemp -d "${TMPDIR:-/tmp}/esg-test-keyring.XXXXXX")"
trap 'rm -rf "$keyring_home"' EXIT
mkdir -m 700 "$keyring_home/data" "$keyring_home/run"

# The session bus and what it starts write to stderr (an fd-limit warning as root; the
# keyring's attempt to show an unlock prompt without a display, in the locked-keyring
# test). That goes to a log of its own instead of among pytest's output, and is shown
# only when the run fails.
dbus_log="$keyring_home/dbus-daemon.log"
printf '#!/bin/sh\nexec %s "$@" 2>>"%s"\n' "$(command -v dbus-daemon)" "$dbus_log" >"$keyring_home/dbus-daemon"
chmod +x "$keyring_home/dbus-daemon"

# Inside the session: XDG_DATA_HOME holds the keyring file and XDG_RUNTIME_DIR the
# daemon's control socket (without it gnome-keyring leaves a directory in ~/.cache).
# The password "pw" only protects this throw-away keyring. gnome-keyring-daemon exits by
# itself when the session bus closes at the end.
status=0
# shellcheck disable=SC2016  # the single quotes are for the inner shell
KEYRING_HOME="$keyring_home" dbus-run-session --dbus-daemon="$keyring_home/dbus-daemon" -- sh -c '
    export XDG_DATA_HOME="$KEYRING_HOME/data" XDG_RUNTIME_DIR="$KEYRING_HOME/run"
    unset KEYRING_HOME
    if ! printf pw | gnome-keyring-daemon --unlock --components=secrets >/dev/null; then
        echo "test.sh: gnome-keyring-daemon did not start; the keyring tests will skip" >&2
    fi
    exec python -m pytest "$@"
' sh "$@" || status=$?

if [ "$status" -ne 0 ] && [ -s "$dbus_log" ]; then
    echo "--- test.sh: D-Bus session log (fd-limit and prompter lines are expected) ---" >&2
    cat "$dbus_log" >&2
fi
exit "$status"
