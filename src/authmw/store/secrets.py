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
import fcntl
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authmw.errors import ConfigurationError

__all__ = [
    "MASTER_KEY_ENV",
    "MASTER_KEY_FILE_ENV",
    "Keyring",
    "PassphraseBox",
    "SealError",
    "check_password_hash",
    "hash_password",
    "key_file_lock",
    "key_id_of",
    "new_master_key",
    "read_key_file",
    "use_test_scrypt_cost",
    "verify_password",
    "write_key_file",
]

MASTER_KEY_ENV = "AUTHMW_MASTER_KEY"
MASTER_KEY_FILE_ENV = "AUTHMW_MASTER_KEY_FILE"
DEFAULT_MASTER_KEY_FILE = "./authmw.key"
_NONCE = 12


class SealError(Exception):
    """A sealed value cannot be opened: unknown master key, tampering, or a value copied from another row."""


def new_master_key() -> bytes:
    """A fresh 256-bit master key."""
    return secrets.token_bytes(32)


def key_id_of(key: bytes) -> str:
    """The 8-hex-digit id a sealed value names its master key by."""
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
        self._keys = {key_id_of(key): AESGCM(key) for key in keys}
        self._sealing = key_id_of(keys[0])

    @classmethod
    def from_keys(cls, *keys: bytes) -> Keyring:
        return cls(list(keys))

    @classmethod
    def without_keys(cls) -> Keyring:
        """A ring that seals and opens nothing, for commands that read only public data (``keypair
        authorized-keys`` runs where sshd runs, which must not hold the master key)."""
        ring = cls.__new__(cls)
        ring._keys, ring._sealing, ring._path, ring._lock = {}, "", None, threading.Lock()
        return ring

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
            write_key_file(file, [new_master_key()], exclusive=True)  # a racing init's key wins, both read it
        return cls.from_file(file)

    @property
    def path(self) -> Path | None:
        """The key file, or None when the keys came from the environment."""
        return self._path

    @property
    def sealing_key_id(self) -> str:
        return self._sealing

    def seal(self, plaintext: bytes, context: str, *, key_id: str | None = None) -> str:
        """Encrypt and authenticate ``plaintext`` bound to ``context`` (the row it belongs to), under the
        sealing key or the key ``key_id`` (the one the store records; reloading the key file to find it)."""
        key_id = key_id or self._sealing
        if not key_id:
            raise ConfigurationError("no master key: this command was opened to read public data only")
        aead = self._keys.get(key_id) or self._reload(key_id)
        nonce = secrets.token_bytes(_NONCE)
        sealed = aead.encrypt(nonce, plaintext, context.encode())
        return f"v1.{key_id}.{base64.b64encode(nonce + sealed).decode()}"

    def knows(self, key_id: str) -> bool:
        """Whether ``key_id`` is in the ring (after reloading the key file if it was not)."""
        try:
            self._keys.get(key_id) or self._reload(key_id)
        except SealError:
            return False
        return True

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
        # Another process rotated the master key: its new key is in the shared file. The keys held so far
        # stay, so a value read just before the rotation committed still opens.
        with self._lock:
            if key_id not in self._keys and self._path is not None:
                with contextlib.suppress(OSError, ConfigurationError):
                    held = self._keys
                    self._install(read_key_file(self._path))
                    self._keys = {**self._keys, **{k: v for k, v in held.items() if k not in self._keys}}
        aead = self._keys.get(key_id)
        if aead is None:
            raise SealError(f"sealed under master key {key_id}, which is not in the key ring")
        return aead

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
    """Write the key file durably (file and directory fsynced) with mode 0600.

    ``exclusive``: create it only if absent (two ``init`` racing both end up reading the winner's key).
    """
    body = "".join(base64.b64encode(key).decode() + "\n" for key in keys)
    path = path.absolute()
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".authmw-key-")
    except OSError as exc:
        raise ConfigurationError(f"cannot write master key file {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            try:
                os.link(temp, path)  # atomic create-if-absent of a complete file
            except FileExistsError:
                return
        else:
            os.replace(temp, path)
        _fsync_directory(path.parent)
    finally:
        Path(temp).unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory is: a re-seal must never outlive its key file on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def key_file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock beside the key file, so two rotations never interleave."""
    lock = path.absolute().with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# Password hashing: scrypt N=2**17, r=8, p=1 (128 MiB), OWASP's recommended minimum. Stored hashes must carry
# exactly these parameters: a hash with weaker (or absurdly costly) ones is refused, never trusted.
_N, _R, _P = 2**17, 8, 1
# Export passphrases protect a file open to offline guessing: twice the memory and time.
_EXPORT_N = 2**18
_MAXMEM = 1024 * 1024 * 1024
_DUMMY_SALT = b"authmw-no-password"


def use_test_scrypt_cost() -> None:
    """Hash passwords (N=2**10) and derive export keys (N=2**11) cheaply in this process: for test suites only,
    which hash thousands of passwords. Never called by authmw; production keeps the costs above. A hash records
    its N and one of another N is refused, so every process of a test run must call it (tests/conftest.py)."""
    global _N, _EXPORT_N  # the one switch, read at each call
    _N, _EXPORT_N = 2**10, 2**11


def _scrypt(secret: bytes, salt: bytes, n: int, *, dklen: int = 32) -> bytes:
    return hashlib.scrypt(secret, salt=salt, n=n, r=_R, p=_P, maxmem=_MAXMEM, dklen=dklen)


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid text") from None


def hash_password(password: str) -> str:
    """An scrypt hash ``scrypt$N$r$p$salt$hash`` (base64 parts)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(_utf8(password, "the password"), salt, _N)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password_hash(encoded: str) -> str:
    """``encoded`` if it is a hash :func:`hash_password` could have made; ValueError otherwise."""
    parts = encoded.split("$") if isinstance(encoded, str) else []
    try:
        ok = len(parts) == 6 and parts[:4] == ["scrypt", str(_N), str(_R), str(_P)]
        ok = ok and len(base64.b64decode(parts[4], validate=True)) == 16
        ok = ok and len(base64.b64decode(parts[5], validate=True)) == 32
    except (ValueError, binascii.Error):
        ok = False
    if not ok:
        raise ValueError(f"not an scrypt hash with this authmw's parameters (N={_N}, r={_R}, p={_P})")
    return encoded


def verify_password(password: str, encoded: str | None) -> bool:
    """Constant-time check of ``password`` against :func:`hash_password`'s output.

    A user without a password (or with a hash of foreign parameters) costs the same work and fails.
    """
    try:
        secret = _utf8(password, "the password")
    except ValueError:
        secret = b""
    try:
        _name, _n, _r, _p, salt, digest = check_password_hash(encoded or "").split("$")
        expected, salt_bytes = base64.b64decode(digest), base64.b64decode(salt)
    except ValueError:
        _scrypt(secret, _DUMMY_SALT, _N)
        return False
    return hmac.compare_digest(_scrypt(secret, salt_bytes, _N), expected)


class PassphraseBox:
    """Seals values and authenticates a whole document under keys derived from an export passphrase."""

    def __init__(self, passphrase: str, salt: bytes) -> None:
        material = _scrypt(_utf8(passphrase, "the passphrase"), salt, _EXPORT_N, dklen=64)
        self.salt = salt
        self._aead = AESGCM(material[:32])
        self._mac_key = material[32:]

    @classmethod
    def new(cls, passphrase: str) -> PassphraseBox:
        return cls(passphrase, secrets.token_bytes(16))

    @classmethod
    def for_salt(cls, passphrase: str, salt: str) -> PassphraseBox:
        try:
            raw = base64.b64decode(salt, validate=True)
        except (ValueError, binascii.Error):
            raise SealError("malformed export salt") from None
        return cls(passphrase, raw)

    @property
    def salt_text(self) -> str:
        return base64.b64encode(self.salt).decode()

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = secrets.token_bytes(_NONCE)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plaintext, context.encode())).decode()

    def open(self, sealed: str, context: str) -> bytes:
        try:
            raw = base64.b64decode(sealed, validate=True)
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode())
        except (ValueError, TypeError, binascii.Error, InvalidTag):
            raise SealError("wrong passphrase or tampered export") from None

    def mac(self, data: bytes) -> str:
        return hmac.new(self._mac_key, data, hashlib.sha256).hexdigest()

    def check_mac(self, data: bytes, mac: object) -> None:
        if not isinstance(mac, str) or not hmac.compare_digest(self.mac(data), mac):
            raise SealError("wrong passphrase or tampered export")
