"""The store's own keys: token signing keys, security-token sealing keys, and the master key sealing them all.

Private halves are sealed under the master key the store records, bound to what they belong to (a key's
``kid``, an access key and its owner), so a sealed value copied elsewhere does not open. Rotation starts a new
key and retires the active one, which keeps verifying (or opening) what it made until that would have expired.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable

from cryptography.hazmat.primitives.asymmetric import ed25519

from authmw.errors import ChangeRefused, ConfigurationError
from authmw.sessions import MAX_DURATION
from authmw.store import signingkeys
from authmw.store.base import StoreBase
from authmw.store.database import Tx, table_exists
from authmw.store.secrets import Keyring, SealError
from authmw.tokens import PrivateKey, PublicKey

__all__ = [
    "ACTIVE_SEALING_KEY",
    "RETIRED_KEYS_KEPT",
    "KeyManagement",
    "access_key_context",
    "add_sealing_key",
    "add_signing_key",
    "sealer",
    "signing_key_context",
]

#: How long a retired signing key still verifies tokens: the longest token life (7 days) and an hour of slack.
RETIRED_KEYS_KEPT = 7 * 24 * 3600 + 3600
ACTIVE_SEALING_KEY = "SELECT 1 FROM signing_keys WHERE retired_at IS NULL AND algorithm = 'A256GCM'"


def access_key_context(access_key: str, user_id: str) -> str:
    """What an access-key secret is sealed to: its key and its owner (moving it to another user breaks it)."""
    return f"access_key:{access_key}:{user_id}"


def signing_key_context(kid: str) -> str:
    return f"signing_key:{kid}"


def sealer(tx: Tx, keyring: Keyring) -> Callable[[bytes, str], str]:
    """Seal under the master key the store records (read in the write transaction ``tx``, so a rotation
    committed by another process is followed, never undone); the first secret records the ring's key."""
    row = tx.one("SELECT value FROM authmw_meta WHERE name = 'sealing_key'")
    recorded = int(row[0]) if row else 0
    if not recorded:
        key_id = keyring.sealing_key_id
        tx.run("UPDATE authmw_meta SET value = ? WHERE name = 'sealing_key'", (int(key_id, 16),))
    else:
        key_id = f"{recorded:08x}"
        if not keyring.knows(key_id):
            raise ChangeRefused(_foreign_key(key_id))
    return lambda plaintext, context: keyring.seal(plaintext, context, key_id=key_id)


def add_signing_key(tx: Tx, keyring: Keyring, now: int, algorithm: str = "EdDSA") -> str:
    raw, public = signingkeys.generate(algorithm)
    kid = secrets.token_hex(8)
    tx.run(
        "INSERT INTO signing_keys VALUES (?, ?, ?, ?, ?, NULL)",
        (kid, algorithm, sealer(tx, keyring)(raw, signing_key_context(kid)), public, now),
    )
    return kid


def add_sealing_key(tx: Tx, keyring: Keyring, now: int) -> str:
    kid = secrets.token_hex(8)
    tx.run(
        "INSERT INTO signing_keys VALUES (?, 'A256GCM', ?, '', ?, NULL)",
        (kid, sealer(tx, keyring)(secrets.token_bytes(32), signing_key_context(kid)), now),
    )
    return kid


class KeyManagement(StoreBase):
    """Reading, rotating and resealing the keys (the master key ring itself lives in a file or the environment)."""

    def check_keyring(self) -> None:
        """Refuse a master key ring that cannot open what the store holds (a wrong or missing key)."""
        with self.db.read() as tx:
            if not table_exists(tx, self.db.dialect, "authmw_meta"):
                return
            row = tx.one("SELECT value FROM authmw_meta WHERE name = 'sealing_key'")
        if row and int(row[0]) and not self.keyring.knows(f"{int(row[0]):08x}"):
            raise ConfigurationError(_foreign_key(f"{int(row[0]):08x}"))

    def signing_key(self) -> tuple[str, ed25519.Ed25519PrivateKey]:
        """The newest active EdDSA signing key (``kid``, private key), unsealed; it signs sidecar assertions, and
        tokens unless ``token_algorithm`` picks another algorithm."""
        kid, key = self.token_signing_key("EdDSA")
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return kid, key

    def token_signing_key(self, algorithm: str) -> tuple[str, PrivateKey]:
        """The newest active signing key of ``algorithm`` (EdDSA, ES256 or RS256), unsealed."""
        with self.db.read() as tx:
            row = tx.one(
                "SELECT kid, private_sealed FROM signing_keys WHERE retired_at IS NULL AND algorithm = ? "
                "ORDER BY created_at DESC, kid LIMIT 1",
                (algorithm,),
            )
        if row is None:
            hint = "authmw init" if algorithm == "EdDSA" else f"authmw signing-key rotate --algorithm {algorithm}"
            raise ChangeRefused(f"the store has no active {algorithm} signing key: run {hint}")
        raw = self._open(row[1], signing_key_context(row[0]))
        return str(row[0]), signingkeys.private_key(algorithm, raw)

    def public_token_keys(self, algorithms: Iterable[str] = signingkeys.TOKEN_ALGORITHMS) -> dict[str, PublicKey]:
        """``kid`` → public key of every signing key of ``algorithms`` that may still have valid tokens: the active
        ones, and those retired less than the longest token life ago (what ``/.well-known/jwks.json`` lists)."""
        since = self._now() - RETIRED_KEYS_KEPT
        wanted = [a for a in signingkeys.TOKEN_ALGORITHMS if a in set(algorithms)]
        with self.db.read() as tx:
            rows = tx.rows(
                "SELECT kid, algorithm, public_key FROM signing_keys WHERE (retired_at IS NULL OR retired_at > ?) "
                "ORDER BY created_at, kid",
                (since,),
            )
        return {str(kid): signingkeys.public_key(alg, public) for kid, alg, public in rows if alg in wanted}

    def rotate_signing_key(self, algorithm: str = "EdDSA") -> tuple[str, list[str]]:
        """A new signing key of ``algorithm``; its active one is retired (its tokens stay valid until they expire).
        Returns the new ``kid`` and those retired."""
        if algorithm not in signingkeys.TOKEN_ALGORITHMS:
            raise ChangeRefused(f"--algorithm must be one of {', '.join(signingkeys.TOKEN_ALGORITHMS)}")
        with self.db.write() as tx:
            now = self._now()
            retired = [
                str(r[0])
                for r in tx.rows(
                    "SELECT kid FROM signing_keys WHERE retired_at IS NULL AND algorithm = ?", (algorithm,)
                )
            ]
            tx.run(
                "UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL AND algorithm = ?", (now, algorithm)
            )
            kid = add_signing_key(tx, self.keyring, now, algorithm)
        return kid, retired

    def sealing_keys(self) -> tuple[dict[str, bytes], str]:
        """The security-token sealing keys (``kid`` → AES-256 key) that may still open a live token, and the
        active one's ``kid``. A store initialised before temporary credentials existed gets its first key here."""
        since = self._now() - MAX_DURATION - 3600
        with self.db.read() as tx:
            rows = tx.rows(
                "SELECT kid, private_sealed, retired_at FROM signing_keys WHERE algorithm = 'A256GCM' "
                "AND (retired_at IS NULL OR retired_at > ?) ORDER BY created_at DESC, kid",
                (since,),
            )
        active = next((str(kid) for kid, _sealed, retired in rows if retired is None), None)
        if active is None:
            with self.db.write() as tx:
                if tx.one(ACTIVE_SEALING_KEY) is None:
                    add_sealing_key(tx, self.keyring, self._now())
            return self.sealing_keys()
        return {str(kid): self._open(sealed, signing_key_context(kid)) for kid, sealed, _retired in rows}, active

    def rotate_sealing_key(self) -> tuple[str, list[str]]:
        """A new security-token sealing key; the active one is retired (it still opens the tokens it sealed
        until they expire, at most 24 hours). Returns the new ``kid`` and those retired."""
        with self.db.write() as tx:
            now = self._now()
            retired = [
                str(r[0])
                for r in tx.rows("SELECT kid FROM signing_keys WHERE retired_at IS NULL AND algorithm = 'A256GCM'")
            ]
            tx.run("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL AND algorithm = 'A256GCM'", (now,))
            kid = add_sealing_key(tx, self.keyring, now)
        return kid, retired

    def reseal_all(self, key_id: str) -> int:
        """Re-seal every secret under the ring's key ``key_id`` in one transaction, and record it as the
        store's sealing key; returns how many secrets were re-sealed."""
        count = 0
        with self.db.write() as tx:
            for access_key, user_id, sealed in tx.rows("SELECT access_key, user_id, secret_sealed FROM access_keys"):
                context = access_key_context(access_key, user_id)
                resealed = self.keyring.seal(self._open(sealed, context), context, key_id=key_id)
                tx.run("UPDATE access_keys SET secret_sealed = ? WHERE access_key = ?", (resealed, access_key))
                count += 1
            for kid, sealed in tx.rows("SELECT kid, private_sealed FROM signing_keys"):
                context = signing_key_context(kid)
                resealed = self.keyring.seal(self._open(sealed, context), context, key_id=key_id)
                tx.run("UPDATE signing_keys SET private_sealed = ? WHERE kid = ?", (resealed, kid))
                count += 1
            tx.run("UPDATE authmw_meta SET value = ? WHERE name = 'sealing_key'", (int(key_id, 16),))
        return count

    def _open(self, sealed: str, context: str) -> bytes:
        try:
            return self.keyring.open(sealed, context)
        except SealError as exc:
            raise ChangeRefused(f"cannot unseal a stored secret ({exc}): wrong master key?") from None


def _foreign_key(key_id: str) -> str:
    return (
        f"the store's secrets are sealed under master key {key_id}, which this key ring does not hold: "
        "check AUTHMW_MASTER_KEY / AUTHMW_MASTER_KEY_FILE"
    )
