"""SSH key pairs for remote access: generate, import, fingerprint (``SHA256:``), ``authorized_keys`` lines."""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = ["KEY_TYPES", "fingerprint", "generate", "parse_public_key"]

KEY_TYPES = ("ed25519", "rsa")
_RSA_BITS = 3072
_MIN_RSA_BITS = 2048
_OPENSSH_NAMES = {
    "ssh-ed25519": "ed25519",
    "ssh-rsa": "rsa",
    "ecdsa-sha2-nistp256": "ecdsa",
    "ecdsa-sha2-nistp384": "ecdsa",
    "ecdsa-sha2-nistp521": "ecdsa",
}


def generate(key_type: str) -> tuple[str, str]:
    """A new key pair as (OpenSSH public key line, OpenSSH private key PEM)."""
    private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if key_type == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    elif key_type == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
    else:
        raise ValueError(f"key type must be one of {', '.join(KEY_TYPES)}")
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode(), pem


def parse_public_key(text: str) -> tuple[str, str]:
    """Validate one OpenSSH public key line; returns (canonical ``type base64`` line, key type).

    Refuses private keys, several keys, unknown types and RSA keys under 2048 bits.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) != 1 or "PRIVATE KEY" in text:
        raise ValueError("expected exactly one OpenSSH public key line (ssh-ed25519/ssh-rsa/ecdsa-sha2-*)")
    parts = lines[0].split()
    if len(parts) < 2 or parts[0] not in _OPENSSH_NAMES:
        raise ValueError("not an OpenSSH public key: expected 'ssh-ed25519 AAAA...' or 'ssh-rsa AAAA...'")
    try:
        key = serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except (ValueError, binascii.Error, TypeError):
        raise ValueError("the OpenSSH public key does not decode") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
        raise ValueError(f"RSA keys need at least {_MIN_RSA_BITS} bits")
    if not isinstance(key, ed25519.Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError("unsupported public key type")
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return line, _OPENSSH_NAMES[parts[0]]


def fingerprint(public_line: str) -> str:
    """OpenSSH's ``SHA256:<base64 without padding>`` fingerprint of the key blob."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
