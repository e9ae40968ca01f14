"""The keyring wrapper: the only place a secret is read or written.

Secrets (passwords, keys, tokens) live in the operating system's keyring under the
service name ``esg-workbench``, one entry per connector, keyed by the connector id.

Before every use the active ``keyring`` backend is checked, and an insecure one is
refused with :class:`KeyringUnavailable` instead of being used: the "fail" and "null"
backends (nothing would be kept), every ``keyrings.alt`` backend (plain text or base64
in a file) and a chain of backends that is empty or holds one of those. There is no
silent fallback to plain text.

Errors of the keyring library and of what lies beneath it (secretstorage, jeepney,
D-Bus, the OS) become :class:`KeyringUnavailable` with a readable message. A message
never contains the secret.

``keyring`` is imported inside the functions, not at module level: importing it and
detecting the backend costs start-up time the app should not pay before a secret is
actually needed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from esg_workbench.core.errors import KeyringUnavailable

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

SERVICE = "esg-workbench"

T = TypeVar("T")

# keyring picks its backend once per process, so a keyring installed or a package
# removed only counts after a restart.
_RESTART_HINT = ("After fixing the keyring, run the command again, or restart the ESG Workbench app: "
                 "the keyring is chosen when the program starts.")

__all__ = ["SERVICE", "store_secret", "load_secret", "delete_secret", "check_backend"]


# --- public API ------------------------------------------------------------------


def store_secret(connector_id: str, secret: str) -> None:
    """Store (or replace) the secret of a connector."""
    _check_connector_id(connector_id)
    if not isinstance(secret, str):
        # Say nothing about the value itself: it may be the secret in another type.
        raise TypeError(f"a secret must be a str, not {type(secret).__name__}")
    backend = _secure_backend()
    _call(backend, f"store the secret of connector {connector_id!r}",
          lambda: backend.set_password(SERVICE, connector_id, secret), secret=secret)


def load_secret(connector_id: str) -> str | None:
    """The secret of a connector, or None when none is stored."""
    _check_connector_id(connector_id)
    backend = _secure_backend()
    return _call(backend, f"read the secret of connector {connector_id!r}",
                 lambda: backend.get_password(SERVICE, connector_id))


def delete_secret(connector_id: str) -> None:
    """Remove the secret of a connector; nothing happens when there is none."""
    _check_connector_id(connector_id)
    backend = _secure_backend()
    from keyring.errors import PasswordDeleteError

    def delete() -> None:
        try:
            backend.delete_password(SERVICE, connector_id)
        except PasswordDeleteError:
            # Every backend reports "no such entry" this way, but a backend may also
            # use it for a real refusal: look again before calling the deletion done.
            if backend.get_password(SERVICE, connector_id) is not None:
                raise

    _call(backend, f"delete the secret of connector {connector_id!r}", delete)


def check_backend() -> str:
    """Describe the keyring backend in use, e.g. "SecretService Keyring
    (keyring.backends.SecretService.Keyring)"; raise KeyringUnavailable if it is not
    a secure one."""
    return _describe(_secure_backend())


# --- the backend check -----------------------------------------------------------


def _secure_backend() -> KeyringBackend:
    """The active keyring backend, refused unless it keeps secrets safely.

    Checked on every call rather than once: the backend can change while the app runs
    (``keyring.set_keyring``), and the check itself is cheap once keyring has chosen.
    """
    try:
        import keyring

        backend = keyring.get_keyring()
    except Exception as exc:  # an import or detection failure: no usable keyring
        raise KeyringUnavailable(
            f"The keyring library could not start ({type(exc).__name__}: {_shorten(str(exc))}). "
            + _how_to_fix(),
            hint=_RESTART_HINT,
        ) from exc

    reason = _insecure_reason(backend)
    if reason is not None:
        raise KeyringUnavailable(
            f"Secrets cannot be kept safely: the keyring in use is {_qualname(backend)}, "
            f"and {reason}. {_how_to_fix(backend)}",
            hint=_RESTART_HINT,
        )
    return backend


def _insecure_reason(backend: KeyringBackend) -> str | None:
    """Why a backend must not hold secrets, or None if it may."""
    from keyring.backends import chainer, fail, null

    if isinstance(backend, fail.Keyring):
        return "no system keyring could be found"
    if isinstance(backend, null.Keyring):
        return "it stores nothing"
    if _is_keyrings_alt(backend):
        return "keyrings.alt keeps secrets in a file, in plain text or only encoded"
    if isinstance(backend, chainer.ChainerBackend):
        members = list(backend.backends)
        if not members:
            return "it chains no usable keyring"
        for member in members:
            # A chain writes to its first member that accepts, and reads from any:
            # one insecure member is enough for a secret to end up in plain text.
            reason = _insecure_reason(member)
            if reason is not None:
                return f"it includes {_qualname(member)}, where {reason}"
    return None


def _is_keyrings_alt(backend: KeyringBackend) -> bool:
    module = type(backend).__module__ or ""
    return module == "keyrings.alt" or module.startswith("keyrings.alt.")


def _how_to_fix(backend: KeyringBackend | None = None) -> str:
    if backend is not None and _is_keyrings_alt(backend):
        return (
            "Uninstall the keyrings.alt package, or choose a secure backend with the "
            "PYTHON_KEYRING_BACKEND environment variable."
        )
    if sys.platform == "darwin":
        return "The macOS Keychain is built in: make sure it is unlocked."
    if sys.platform == "win32":
        return "The Windows Credential Manager is built in: make sure it is enabled."
    return (
        "On Linux, install and unlock GNOME Keyring or KWallet (a Secret Service "
        "provider) in a desktop session with D-Bus; on macOS the Keychain and on "
        "Windows the Credential Manager are built in."
    )


def _qualname(backend: KeyringBackend) -> str:
    cls = type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"


def _display_name(backend: KeyringBackend) -> str:
    """keyring's display name, e.g. "SecretService Keyring" or "macOS Keyring"."""
    try:
        return " ".join(type(backend).name.split())
    except Exception:
        return type(backend).__qualname__


def _describe(backend: KeyringBackend) -> str:
    from keyring.backends import chainer

    text = f"{_display_name(backend)} ({_qualname(backend)})"
    if isinstance(backend, chainer.ChainerBackend):
        text += " chaining " + ", ".join(_describe(m) for m in backend.backends)
    return text


# --- error translation -----------------------------------------------------------


def _call(backend: KeyringBackend, action: str, operation: Callable[[], T], *,
          secret: str | None = None) -> T:
    """Run one keyring operation, turning whatever it raises into KeyringUnavailable.

    Any exception counts, not only keyring's own: below keyring, secretstorage, jeepney,
    dbus and the OS raise their own types (a missing D-Bus socket is a plain
    FileNotFoundError). The message is our words plus the error's own text; if the
    secret appears anywhere in the original error, its text is withheld and it is not
    chained either, so no traceback can show it.
    """
    try:
        return operation()
    except KeyringUnavailable:
        raise
    except Exception as exc:
        failure = exc
    # Raised outside the except block: a leaking error must not even ride along as
    # the __context__ of ours.
    leaks = bool(secret) and _mentions(failure, secret)
    detail = "details withheld: they contained the secret" if leaks else _shorten(str(failure))
    error = KeyringUnavailable(_message(backend, action, failure, detail), hint=_hint(failure))
    if leaks:
        del failure
        raise error
    raise error from failure


def _message(backend: KeyringBackend, action: str, exc: Exception, detail: str) -> str:
    from keyring.errors import InitError, NoKeyringError, PasswordSetError

    where = f"the system keyring ({_display_name(backend)})"
    if _is_locked(exc):
        return f"Could not {action}: {where} is locked and was not unlocked."
    if isinstance(exc, (NoKeyringError, InitError)):
        return f"Could not {action}: {where} is not available ({detail})."
    if isinstance(exc, PasswordSetError):
        return f"Could not {action}: {where} refused it ({detail})."
    text = f"Could not {action}: {where} failed with {type(exc).__name__}"
    text += f": {detail}." if detail else "."
    if _from_dbus(backend, exc):
        text += (
            " The Secret Service could not be reached over D-Bus: is a keyring daemon "
            "(GNOME Keyring, KWallet) running in this session?"
        )
    return text


def _is_locked(exc: Exception) -> bool:
    from keyring.errors import KeyringLocked

    # secretstorage's own types, for when they get past keyring unwrapped
    return isinstance(exc, KeyringLocked) or (
        (type(exc).__module__ or "").startswith("secretstorage")
        and type(exc).__name__ in {"LockedException", "PromptDismissedException"}
    )


def _hint(exc: Exception) -> str | None:
    if _is_locked(exc):
        return (
            "Unlock the keyring (on Linux the 'Login' keyring in Passwords and Keys or "
            "KWallet; on macOS Keychain Access) and try again."
        )
    return None  # the class default: install and unlock a system keyring


def _from_dbus(backend: KeyringBackend, exc: Exception) -> bool:
    """Whether the error came from talking to a Secret Service or KWallet over D-Bus."""
    over_dbus = type(backend).__module__ in {
        "keyring.backends.SecretService", "keyring.backends.kwallet", "keyring.backends.libsecret"}
    module = (type(exc).__module__ or "").split(".")[0]
    return module in {"secretstorage", "jeepney", "dbus"} or (over_dbus and isinstance(exc, OSError))


def _mentions(exc: BaseException, secret: str) -> bool:
    """Whether the secret, as is or escaped, appears in the error or anything chained to it."""
    forms = {secret, repr(secret)[1:-1]}
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts = (str(current), repr(current.args))
        if any(form in text for form in forms for text in texts):
            return True
        current = current.__cause__ or current.__context__
    return False


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_connector_id(connector_id: str) -> None:
    if not isinstance(connector_id, str) or not connector_id:
        raise ValueError("a connector id must be a non-empty str")
