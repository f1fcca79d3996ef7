"""How token signing keys of each algorithm are made and stored: the private half's bytes (sealed by the store)
and the public half as hex (Ed25519: raw bytes; ES256 P-256 and RS256 RSA-3072: DER)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authmw.tokens import TOKEN_ALGORITHMS, PrivateKey, PublicKey

__all__ = ["TOKEN_ALGORITHMS", "generate", "private_key", "public_hex", "public_key"]

_RSA_BITS = 3072


def generate(algorithm: str) -> tuple[bytes, str]:
    """A new key: (private bytes, public hex)."""
    key: PrivateKey
    if algorithm == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
        raw = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    elif algorithm in ("ES256", "RS256"):
        key = (
            ec.generate_private_key(ec.SECP256R1())
            if algorithm == "ES256"
            else rsa.generate_private_key(65537, _RSA_BITS)
        )
        raw = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    else:
        raise ValueError(f"token signing keys are {', '.join(TOKEN_ALGORITHMS)}")
    return raw, public_hex(key.public_key())


def private_key(algorithm: str, raw: bytes) -> PrivateKey:
    """The private key stored as ``raw``; ValueError if it is not a key of ``algorithm``."""
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.from_private_bytes(raw)
    key = serialization.load_der_private_key(raw, password=None)
    if algorithm == "ES256" and isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if algorithm == "RS256" and isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return key
    raise ValueError(f"not an {algorithm} key")


def public_key(algorithm: str, text: str) -> PublicKey:
    """The public key stored as hex ``text``."""
    raw = bytes.fromhex(text)
    if algorithm == "EdDSA":
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    key = serialization.load_der_public_key(raw)
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValueError(f"not an {algorithm} key")
    return key


def public_hex(key: PublicKey) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo).hex()
