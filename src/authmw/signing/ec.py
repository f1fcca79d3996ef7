"""Asymmetric keys derived from an AK/SK pair: NIST P-256 ECDSA and SM2 (GB/T 32918.2).

huaweicloudsdkcore derives the private scalar deterministically from the access key and secret, so the
server can recompute the public key from what its store already holds. P-256 uses ``cryptography``; SM2 is
not in OpenSSL's public API, so its small amount of curve arithmetic lives here (verification only needs
public data, signing is used by the client signer and tests).
"""

from __future__ import annotations

import secrets
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from authmw.signing.digests import SHA256, SM3, Digest

__all__ = ["derive_scalar", "p256_sign", "p256_verify", "sm2_sign", "sm2_verify"]

_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# SM2 recommended curve parameters (GB/T 32918.5).
_SM2_P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
_SM2_A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
_SM2_B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
_SM2_N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
_SM2_G = (
    0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7,
    0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0,
)
_SM2_DEFAULT_ID = b"1234567812345678"

_Jacobian = tuple[int, int, int]
_Affine = tuple[int, int]


def derive_scalar(algorithm: str, access_key: str, secret_key: str, order: int, digest: Digest) -> int:
    """The SDK's counter-mode KDF: the first HMAC output ≤ n-2, plus one."""
    key = secret_key.encode()
    prefix = b"\x00\x00\x00\x01" + algorithm.encode() + b"\x00" + access_key.encode()
    for counter in range(255):
        candidate = int.from_bytes(digest.mac(key, prefix + bytes((counter,)) + b"\x00\x00\x01\x00"), "big")
        if candidate <= order - 2:
            return candidate + 1
    raise ValueError("no usable scalar")  # probability ~2**-8000: not reachable in practice


@lru_cache(maxsize=1024)
def _p256_private(access_key: str, secret_key: str) -> ec.EllipticCurvePrivateKey:
    scalar = derive_scalar("SDK-ECDSA-P256-SHA256", access_key, secret_key, _P256_N, SHA256)
    return ec.derive_private_key(scalar, ec.SECP256R1())


def p256_sign(access_key: str, secret_key: str, message: bytes) -> str:
    """Hex DER ECDSA-SHA256 signature with the key derived from AK/SK."""
    return _p256_private(access_key, secret_key).sign(message, ec.ECDSA(hashes.SHA256())).hex()


def p256_verify(access_key: str, secret_key: str, message: bytes, signature_hex: str) -> bool:
    try:
        signature = bytes.fromhex(signature_hex)
        _p256_private(access_key, secret_key).public_key().verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


# --- SM2 -------------------------------------------------------------------------------------------


def _double(point: _Jacobian) -> _Jacobian:
    x, y, z = point
    if y == 0 or z == 0:
        return (0, 1, 0)
    p = _SM2_P
    yy = y * y % p
    s = 4 * x * yy % p
    zz = z * z % p
    m = (3 * x * x + _SM2_A * zz * zz) % p
    nx = (m * m - 2 * s) % p
    ny = (m * (s - nx) - 8 * yy * yy) % p
    nz = 2 * y * z % p
    return (nx, ny, nz)


def _add(a: _Jacobian, b: _Jacobian) -> _Jacobian:
    if a[2] == 0:
        return b
    if b[2] == 0:
        return a
    p = _SM2_P
    x1, y1, z1 = a
    x2, y2, z2 = b
    z1z1 = z1 * z1 % p
    z2z2 = z2 * z2 % p
    u1 = x1 * z2z2 % p
    u2 = x2 * z1z1 % p
    s1 = y1 * z2 * z2z2 % p
    s2 = y2 * z1 * z1z1 % p
    if u1 == u2:
        return _double(a) if s1 == s2 else (0, 1, 0)
    h = (u2 - u1) % p
    r = (s2 - s1) % p
    hh = h * h % p
    hhh = h * hh % p
    v = u1 * hh % p
    nx = (r * r - hhh - 2 * v) % p
    ny = (r * (v - nx) - s1 * hhh) % p
    nz = h * z1 * z2 % p
    return (nx, ny, nz)


def _multiply(k: int, point: _Affine) -> _Affine | None:
    result: _Jacobian = (0, 1, 0)
    addend: _Jacobian = (point[0], point[1], 1)
    for bit in bin(k)[2:]:
        result = _double(result)
        if bit == "1":
            result = _add(result, addend)
    return _to_affine(result)


def _to_affine(point: _Jacobian) -> _Affine | None:
    x, y, z = point
    if z == 0:
        return None
    zinv = pow(z, -1, _SM2_P)
    zinv2 = zinv * zinv % _SM2_P
    return (x * zinv2 % _SM2_P, y * zinv2 * zinv % _SM2_P)


def _sum(a: _Affine | None, b: _Affine | None) -> _Affine | None:
    if a is None or b is None:
        return a or b
    return _to_affine(_add((a[0], a[1], 1), (b[0], b[1], 1)))


def _minimal(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _za_variants(public: _Affine) -> list[bytes]:
    """Z_A with 32-byte fields (GB/T 32918) and with minimal-length fields (as huaweicloudsdkcore does).

    The two differ only when a coordinate starts with a zero byte; both bind the same key and message.
    """
    fields = (_SM2_A, _SM2_B, _SM2_G[0], _SM2_G[1], public[0], public[1])
    head = (len(_SM2_DEFAULT_ID) * 8).to_bytes(2, "big") + _SM2_DEFAULT_ID
    padded = SM3.raw(head + b"".join(f.to_bytes(32, "big") for f in fields))
    minimal = SM3.raw(head + b"".join(_minimal(f) for f in fields))
    return [padded] if padded == minimal else [padded, minimal]


@lru_cache(maxsize=1024)
def _sm2_keys(access_key: str, secret_key: str) -> tuple[int, _Affine]:
    scalar = derive_scalar("SDK-SM2-SM3", access_key, secret_key, _SM2_N, SM3)
    public = _multiply(scalar, _SM2_G)
    assert public is not None  # scalar is in [1, n-1]
    return scalar, public


def sm2_sign(access_key: str, secret_key: str, message: bytes) -> str:
    """Hex DER SM2 signature (default user id) with the key derived from AK/SK."""
    d, public = _sm2_keys(access_key, secret_key)
    # The SDK hashes Z_A in its minimal-length form; use it so the SDK's own verify() accepts ours too.
    e = int.from_bytes(SM3.raw(_za_variants(public)[-1] + message), "big")
    while True:
        k = secrets.randbelow(_SM2_N - 1) + 1
        # (k + n)·G = k·G; padding k to a fixed bit length keeps the ladder's length from leaking the nonce's.
        padded = k + _SM2_N if (k + _SM2_N).bit_length() > _SM2_N.bit_length() else k + 2 * _SM2_N
        kg = _multiply(padded, _SM2_G)
        assert kg is not None
        r = (e + kg[0]) % _SM2_N
        if r == 0 or r + k == _SM2_N:
            continue
        s = pow(1 + d, -1, _SM2_N) * (k - r * d) % _SM2_N
        if s:
            return encode_dss_signature(r, s).hex()


@lru_cache(maxsize=16)
def _sm2_point(access_key: str, secret_key: str, r: int, s: int) -> tuple[_Affine, _Affine | None]:
    """s·G + (r+s)·P: independent of the message, so every candidate of one request shares it."""
    _, public = _sm2_keys(access_key, secret_key)
    return public, _sum(_multiply(s, _SM2_G), _multiply((r + s) % _SM2_N, public))


def sm2_verify(access_key: str, secret_key: str, message: bytes, signature_hex: str) -> bool:
    try:
        r, s = decode_dss_signature(bytes.fromhex(signature_hex))
    except ValueError:
        return False
    if not (0 < r < _SM2_N and 0 < s < _SM2_N):
        return False
    if (r + s) % _SM2_N == 0:
        return False
    public, point = _sm2_point(access_key, secret_key, r, s)
    if point is None:
        return False
    accepted = False
    for za in _za_variants(public):
        e = int.from_bytes(SM3.raw(za + message), "big")
        accepted |= (e + point[0]) % _SM2_N == r
    return accepted
