"""Secrets at rest: AES-GCM sealing under the master key ring, scrypt password hashes, passphrase sealing.

A sealed value is ``v1.<key id>.<base64(nonce ‖ ciphertext ‖ tag)>``; the key id (8 hex chars of the key's
SHA-256) says which master key sealed it, so a ring holding the new and the old key opens both during a
rotation. Every value is sealed with associated data naming its row (for example ``access_key:AK``), so a
sealed secret copied onto another row does not open.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authmw.errors import ConfigurationError

__all__ = [
    "MASTER_KEY_ENV",
    "MASTER_KEY_FILE_ENV",
    "Keyring",
    "SealError",
    "hash_password",
    "new_master_key",
    "open_with_passphrase",
    "read_key_file",
    "seal_with_passphrase",
    "verify_password",
    "write_key_file",
]

MASTER_KEY_ENV = "AUTHMW_MASTER_KEY"
MASTER_KEY_FILE_ENV = "AUTHMW_MASTER_KEY_FILE"
DEFAULT_MASTER_KEY_FILE = "./authmw.key"
_NONCE = 12
# scrypt cost: N=2**15, r=8, p=1 needs 32 MiB and ~60 ms here, OWASP's recommended floor for interactive logins.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


class SealError(Exception):
    """A sealed value cannot be opened: unknown master key, tampering, or a value copied from another row."""


def new_master_key() -> bytes:
    """A fresh 256-bit master key."""
    return secrets.token_bytes(32)


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def _decode_key(text: str, origin: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{origin}: master key is not base64") from None
    if len(key) != 32:
        raise ConfigurationError(f"{origin}: master key must be 32 bytes (base64 of 32 random bytes)")
    return key


class Keyring:
    """Master keys: the first seals, every one opens. Reloads its file when it meets an unknown key id.

    Build it with :meth:`from_environment` (``AUTHMW_MASTER_KEY`` or ``AUTHMW_MASTER_KEY_FILE``) or
    :meth:`from_keys`. The file holds one base64 key per line, the sealing key first.
    """

    def __init__(self, keys: Sequence[bytes], *, path: Path | None = None) -> None:
        if not keys:
            raise ConfigurationError("the master key ring is empty")
        self._keys: dict[str, AESGCM] = {}
        self._sealing = ""
        self._path = path
        self._lock = threading.Lock()
        self._install(keys)

    def __repr__(self) -> str:
        return f"Keyring(sealing={self._sealing!r}, keys={len(self._keys)}, path={self._path!s})"

    def _install(self, keys: Sequence[bytes]) -> None:
        self._keys = {_key_id(key): AESGCM(key) for key in keys}
        self._sealing = _key_id(keys[0])

    @classmethod
    def from_keys(cls, *keys: bytes) -> Keyring:
        return cls(list(keys))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Keyring:
        file = Path(path)
        return cls(read_key_file(file), path=file)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, *, create: bool = False) -> Keyring:
        """The ring from ``AUTHMW_MASTER_KEY`` (base64, several comma-separated, sealing key first) or else
        the file ``AUTHMW_MASTER_KEY_FILE`` (default ``./authmw.key``), created with mode 0600 if ``create``."""
        env = os.environ if environ is None else environ
        if env.get(MASTER_KEY_ENV):
            return cls([_decode_key(part, MASTER_KEY_ENV) for part in env[MASTER_KEY_ENV].split(",")])
        file = Path(env.get(MASTER_KEY_FILE_ENV) or DEFAULT_MASTER_KEY_FILE)
        if create and not file.exists():
            write_key_file(file, [new_master_key()], exclusive=True)
        return cls.from_file(file)

    @property
    def path(self) -> Path | None:
        """The key file, or None when the keys came from the environment."""
        return self._path

    @property
    def sealing_key_id(self) -> str:
        return self._sealing

    def seal(self, plaintext: bytes, context: str) -> str:
        """Encrypt and authenticate ``plaintext`` bound to ``context`` (the row it belongs to)."""
        nonce = secrets.token_bytes(_NONCE)
        sealed = self._keys[self._sealing].encrypt(nonce, plaintext, context.encode())
        return f"v1.{self._sealing}.{base64.b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str, context: str) -> bytes:
        """Decrypt a value from :meth:`seal`; raises :class:`SealError` (never echoing the value)."""
        try:
            version, key_id, payload = sealed.split(".", 2)
            raw = base64.b64decode(payload, validate=True)
        except (ValueError, binascii.Error):
            raise SealError("malformed sealed value") from None
        if version != "v1" or len(raw) < _NONCE + 16:
            raise SealError("malformed sealed value")
        aead = self._keys.get(key_id) or self._reload(key_id)
        try:
            return aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode())
        except InvalidTag:
            raise SealError(f"sealed value does not open under master key {key_id}") from None

    def _reload(self, key_id: str) -> AESGCM:
        # Another process rotated the master key: its new key is in the shared file.
        with self._lock:
            if key_id not in self._keys and self._path is not None:
                with contextlib.suppress(OSError, ConfigurationError):
                    self._install(read_key_file(self._path))
        aead = self._keys.get(key_id)
        if aead is None:
            raise SealError(f"sealed under master key {key_id}, which is not in the key ring")
        return aead

    def rotated(self) -> tuple[Keyring, bytes]:
        """A ring whose new sealing key comes first, followed by the current keys; and the new key."""
        key = new_master_key()
        ring = Keyring.__new__(Keyring)
        ring._keys = {_key_id(key): AESGCM(key), **self._keys}
        ring._sealing = _key_id(key)
        ring._path = self._path
        ring._lock = threading.Lock()
        return ring, key

    def replace(self, keys: Sequence[bytes]) -> None:
        """Install ``keys`` in place (after a rotation committed)."""
        with self._lock:
            self._install(keys)


def read_key_file(path: Path) -> list[bytes]:
    try:
        info = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read master key file {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(f"master key file {path} is readable by others: chmod 600 it")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [_decode_key(line, str(path)) for line in lines]


def write_key_file(path: Path, keys: Sequence[bytes], *, exclusive: bool = False) -> None:
    """Write the key file atomically with mode 0600 (``exclusive``: refuse to replace an existing file)."""
    body = "".join(base64.b64encode(key).decode() + "\n" for key in keys)
    path = path.resolve()
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
        return
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".authmw-key-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def hash_password(password: str) -> str:
    """An scrypt hash ``scrypt$N$r$p$salt$hash`` (base64 parts)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password.encode(), salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str | None) -> bool:
    """Constant-time check of ``password`` against :func:`hash_password`'s output (False for no hash)."""
    if not encoded:
        return False
    try:
        name, n, r, p, salt, digest = encoded.split("$")
        expected = base64.b64decode(digest)
        actual = _scrypt(password.encode(), base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, binascii.Error):
        return False
    return name == "scrypt" and hmac.compare_digest(actual, expected)


def _scrypt(secret: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32)


Opener = Callable[[str, str], bytes]


def _passphrase_key(passphrase: str, salt: bytes) -> AESGCM:
    return AESGCM(_scrypt(passphrase.encode(), salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P))


def seal_with_passphrase(passphrase: str) -> tuple[str, Callable[[bytes, str], str]]:
    """A salt (to record once) and a sealing function, for exports that carry secrets."""
    salt = secrets.token_bytes(16)
    aead = _passphrase_key(passphrase, salt)

    def seal(plaintext: bytes, context: str) -> str:
        nonce = secrets.token_bytes(_NONCE)
        return base64.b64encode(nonce + aead.encrypt(nonce, plaintext, context.encode())).decode()

    return base64.b64encode(salt).decode(), seal


def open_with_passphrase(passphrase: str, salt: str) -> Opener:
    """The opener matching :func:`seal_with_passphrase`; raises :class:`SealError` on a wrong passphrase."""
    try:
        aead = _passphrase_key(passphrase, base64.b64decode(salt, validate=True))
    except (ValueError, binascii.Error):
        raise SealError("malformed export salt") from None

    def open_(sealed: str, context: str) -> bytes:
        try:
            raw = base64.b64decode(sealed, validate=True)
            return aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode())
        except (ValueError, binascii.Error, InvalidTag):
            raise SealError("wrong passphrase or tampered export") from None

    return open_
