"""The keyring wrapper against a real Secret Service.

scripts/test.sh runs the suite inside a private D-Bus session with an unlocked
gnome-keyring, so these tests store real secrets in a real (throw-away) keyring. Without
one they skip, or fail under ESG_REQUIRE_SERVICES=1. The refusal tests need no keyring:
they swap in an insecure backend with ``keyring.set_keyring`` and restore the real one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import keyring
import keyring.backend
import keyring.core
import pytest
from keyring.backends import SecretService, chainer, fail, null
from keyring.errors import KeyringLocked, PasswordSetError

from esg_workbench import credentials
from esg_workbench.core.errors import KeyringUnavailable

# The helper of tests/conftest.py, repeated here: `from conftest import` is fragile
# once a second conftest.py (tests/benchmarks) is loaded under the same module name.
REQUIRE_SERVICES = os.environ.get("ESG_REQUIRE_SERVICES") == "1"


def service_missing(what: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is not available and ESG_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(f"{what} is not available")


SECRET = "s3cr3t-Value-that-must-never-show"


@pytest.fixture
def restore_backend():
    """Put back the backend keyring chose (and its limit) after a test swapped it."""
    previous = keyring.get_keyring()
    yield
    keyring.backend._limit = None
    keyring.set_keyring(previous)


@pytest.fixture
def secret_service(restore_backend):
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        service_missing("A D-Bus session (run the tests with scripts/test.sh)")
    backend = keyring.get_keyring()
    if not isinstance(backend, SecretService.Keyring):
        service_missing(f"A Secret Service keyring (keyring chose {type(backend).__module__})")
    return backend


@pytest.fixture
def connector_id(secret_service):
    """A fresh connector id; its entry is removed afterwards, whatever the test did."""
    cid = f"esg-test-{uuid.uuid4().hex}"
    yield cid
    credentials.delete_secret(cid)


def assert_secret_not_shown(error: KeyringUnavailable, secret: str = SECRET) -> None:
    assert secret not in str(error)
    assert secret not in error.describe()
    cause = error.__cause__ or error.__context__
    while cause is not None:
        assert secret not in str(cause) and secret not in repr(cause.args)
        cause = cause.__cause__ or cause.__context__


# --- with a real Secret Service ----------------------------------------------------


def test_round_trip(connector_id):
    credentials.store_secret(connector_id, SECRET)
    assert credentials.load_secret(connector_id) == SECRET
    credentials.delete_secret(connector_id)
    assert credentials.load_secret(connector_id) is None


def test_store_replaces_the_previous_secret(connector_id):
    credentials.store_secret(connector_id, "first")
    credentials.store_secret(connector_id, "second")
    assert credentials.load_secret(connector_id) == "second"
    credentials.delete_secret(connector_id)
    # replaced, not added: one delete leaves nothing behind
    assert credentials.load_secret(connector_id) is None


def test_missing_entry_loads_as_none_and_deletes_quietly(connector_id):
    assert credentials.load_secret(connector_id) is None
    credentials.delete_secret(connector_id)
    credentials.delete_secret(connector_id)


def test_secrets_are_kept_per_connector(connector_id):
    other = connector_id + "-other"
    try:
        credentials.store_secret(connector_id, "one")
        credentials.store_secret(other, "two")
        assert credentials.load_secret(connector_id) == "one"
        assert credentials.load_secret(other) == "two"
        credentials.delete_secret(other)
        assert credentials.load_secret(connector_id) == "one"
    finally:
        credentials.delete_secret(other)


@pytest.mark.parametrize(
    "secret",
    [
        "pässwörd-€-ß",
        "密码🔑パスワード",
        "quotes ' \" and \\back\\slashes; DROP TABLE x;--",
        "line one\nline two\ttab",
        "  leading and trailing spaces  ",
        "",
    ],
)
def test_unicode_and_odd_secrets_round_trip(connector_id, secret):
    credentials.store_secret(connector_id, secret)
    assert credentials.load_secret(connector_id) == secret


def test_long_secret_round_trips(connector_id):
    # A PEM private key is a few KB; service-account JSON files and tokens can be more.
    secret = ("-----BEGIN PRIVATE KEY-----\n" + "AbC+/xyz019é€" * 8000)[:100_000]
    credentials.store_secret(connector_id, secret)
    assert credentials.load_secret(connector_id) == secret


def test_secret_lands_in_the_secret_service(connector_id):
    """Other Secret Service clients find it: it is in the keyring, not in a file of ours."""
    if shutil.which("secret-tool") is None:
        service_missing("secret-tool (Debian package libsecret-tools)")
    credentials.store_secret(connector_id, SECRET)
    found = subprocess.run(
        ["secret-tool", "lookup", "service", credentials.SERVICE, "username", connector_id],
        capture_output=True, text=True, timeout=30,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout == SECRET


def test_check_backend_names_the_secret_service(secret_service):
    description = credentials.check_backend()
    assert "SecretService" in description
    assert "keyring.backends.SecretService.Keyring" in description


def test_locked_keyring_is_reported(secret_service):
    """A locked collection whose unlock prompt cannot be shown becomes KeyringUnavailable.

    Uses a collection of its own (made through gnome-keyring's internal interface with a
    known password) so the keyring of the other tests stays unlocked. The prompt gnome-
    keyring tries to show fails without a display; its Gtk warning in the output is
    expected. With a display it would pop up, so the test does not run there.
    """
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        pytest.skip("would pop up an unlock prompt on this desktop")
    import secretstorage
    from secretstorage.util import DBusAddressWrapper, format_secret, open_session

    bus = secretstorage.dbus_init()
    internal = DBusAddressWrapper(
        "/org/freedesktop/secrets", "org.gnome.keyring.InternalUnsupportedGuiltRiddenInterface", bus
    )
    master = format_secret(open_session(bus), b"esg-test-master", "text/plain")
    label = {"org.freedesktop.Secret.Collection.Label": ("s", f"esg-test-locked-{uuid.uuid4().hex[:8]}")}
    try:
        (path,) = internal.call("CreateWithMasterPassword", "a{sv}(oayays)", label, master)
    except Exception as exc:  # not gnome-keyring: no way to make a locked collection unattended
        pytest.skip(f"cannot create a locked collection here ({type(exc).__name__})")
    collection = secretstorage.Collection(bus, path)
    try:
        collection.lock()
        assert collection.is_locked()
        locked = SecretService.Keyring()
        locked.preferred_collection = path
        keyring.set_keyring(locked)

        with pytest.raises(KeyringUnavailable) as caught:
            credentials.store_secret(f"esg-test-{uuid.uuid4().hex}", SECRET)
        assert "locked" in str(caught.value)
        assert "Unlock" in caught.value.hint
        assert_secret_not_shown(caught.value)
    finally:
        internal.call("UnlockWithMasterPassword", "o(oayays)", path, master)
        collection.delete()
        bus.close()


# --- refused backends: no Secret Service needed ---------------------------------------


def _assert_every_operation_refused(backend_name: str) -> None:
    cid = f"esg-test-{uuid.uuid4().hex}"
    for operation in (
        lambda: credentials.store_secret(cid, SECRET),
        lambda: credentials.load_secret(cid),
        lambda: credentials.delete_secret(cid),
        credentials.check_backend,
    ):
        with pytest.raises(KeyringUnavailable) as caught:
            operation()
        message = str(caught.value)
        assert backend_name in message
        assert "GNOME Keyring or KWallet" in message or "keyrings.alt" in message
        assert_secret_not_shown(caught.value)


def test_fail_backend_is_refused(restore_backend):
    keyring.set_keyring(fail.Keyring())
    _assert_every_operation_refused("keyring.backends.fail.Keyring")


def test_null_backend_is_refused(restore_backend):
    keyring.set_keyring(null.Keyring())
    _assert_every_operation_refused("keyring.backends.null.Keyring")


def test_empty_chain_is_refused(restore_backend):
    # keyring's own limit: let only the chainer through, so it has nothing to chain.
    keyring.core.init_backend(limit=lambda backend: isinstance(backend, chainer.ChainerBackend))
    assert isinstance(keyring.get_keyring(), chainer.ChainerBackend)
    assert list(keyring.get_keyring().backends) == []
    _assert_every_operation_refused("keyring.backends.chainer.ChainerBackend")


def test_plaintext_backend_is_refused(restore_backend, tmp_path):
    alt_file = pytest.importorskip("keyrings.alt.file", reason="keyrings.alt is not installed")
    plaintext = alt_file.PlaintextKeyring()
    plaintext.file_path = str(tmp_path / "keyring_pass.cfg")
    keyring.set_keyring(plaintext)
    with pytest.raises(KeyringUnavailable, match="keyrings.alt"):
        credentials.store_secret("esg-test-plain", SECRET)
    assert not (tmp_path / "keyring_pass.cfg").exists()


# --- error translation ---------------------------------------------------------------


def test_unreachable_dbus_is_reported(restore_backend, monkeypatch, tmp_path):
    """The real SecretService backend with a D-Bus address that leads nowhere."""
    pytest.importorskip("secretstorage")
    keyring.set_keyring(SecretService.Keyring())
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    cid = f"esg-test-{uuid.uuid4().hex}"
    for operation in (
        lambda: credentials.store_secret(cid, SECRET),
        lambda: credentials.load_secret(cid),
        lambda: credentials.delete_secret(cid),
    ):
        with pytest.raises(KeyringUnavailable) as caught:
            operation()
        assert "D-Bus" in str(caught.value)
        assert_secret_not_shown(caught.value)


class _BrokenKeyring(keyring.backend.KeyringBackend):
    """A backend that fails the way real ones do; storing echoes the password it got."""

    priority = 1

    def __init__(self, failure: Exception):
        self.failure = failure

    def get_password(self, service, username):
        raise self.failure

    def set_password(self, service, username, password):
        raise PasswordSetError(f"cannot store {password!r} for you")

    def delete_password(self, service, username):
        raise self.failure


@pytest.mark.parametrize(
    "failure, expected",
    [
        (KeyringLocked("Failed to unlock the collection!"), "locked"),
        (ConnectionRefusedError(111, "Connection refused"), "ConnectionRefusedError"),
        (RuntimeError("The name org.freedesktop.secrets was not provided"), "org.freedesktop.secrets"),
    ],
)
def test_backend_errors_become_readable_without_the_secret(restore_backend, failure, expected):
    keyring.set_keyring(_BrokenKeyring(failure))

    with pytest.raises(KeyringUnavailable) as caught:
        credentials.load_secret("esg-test-broken")
    assert expected in str(caught.value)
    assert caught.value.__cause__ is failure  # kept for debugging: it holds no secret

    with pytest.raises(KeyringUnavailable) as caught:
        credentials.store_secret("esg-test-broken", SECRET)
    assert_secret_not_shown(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_bad_arguments_are_refused_without_echo():
    with pytest.raises(ValueError):
        credentials.load_secret("")
    with pytest.raises(TypeError) as caught:
        credentials.store_secret("esg-test", SECRET.encode())  # type: ignore[arg-type]
    assert SECRET not in str(caught.value)


def test_keyring_is_imported_lazily():
    """Importing the module must not import keyring: that costs start-up time."""
    code = "import sys, esg_workbench.credentials; print('keyring' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
