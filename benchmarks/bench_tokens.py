"""IAM token benchmarks: ``TokenVerifier.verify`` (cached and uncached) against PyJWT's own ``jwt.decode``;
security tokens of temporary credentials: ``SessionSealer.resolve`` (cached and uncached) and a whole signed
request with a temporary key against the same request with a permanent key.

Layer: core verify (house rule 15), same harness as ``bench_signing.py``: cases calibrated to ``--batch-ms``
batches, ``--repeats`` round-robin rounds, GC off while timing, medians. The tokens and verifiers are built
before the clock starts; "not cached" forgets the token before each check, so the whole decode path runs.

    python benchmarks/bench_tokens.py [--json PATH] [--repeats 15] [--batch-ms 50] [--check]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authmw.models import Request, Session
from authmw.sessions import SessionSealer, new_temporary_key
from authmw.signing import StaticKeys, Verifier, sign_request
from authmw.tokens import TokenSigner, TokenVerifier
from bench_signing import (
    Case,
    Neighbours,
    Verdict,
    _package,
    _us,
    case_record,
    machine,
    print_preamble,
    run_cases,
    same_op,
)

CACHED = "TokenVerifier.verify, EdDSA token, cached"
UNCACHED = "TokenVerifier.verify, EdDSA token, not cached"
PYJWT = "peer: jwt.decode, same EdDSA token and key"
UNCACHED_ES256 = "TokenVerifier.verify, ES256 token, not cached"
PYJWT_ES256 = "peer: jwt.decode, same ES256 token and key"
SEALED_CACHED = "SessionSealer.resolve, security token, cached"
SEALED_UNCACHED = "SessionSealer.resolve, security token with a session policy, not cached"
AESGCM_OPEN = "reference: AESGCM.decrypt of the same token's bytes"
TEMPORARY_REQUEST = "Verifier.verify, SDK-HMAC-SHA256 GET signed with a temporary key (token cached)"
PERMANENT_REQUEST = "Verifier.verify, same GET signed with a permanent key"
SESSION_POLICY = '{"Version":"1.1","Statement":[{"Effect":"Allow","Action":["modelarts:notebook:get"]}]}'
USER = {"user_id": "u" * 32, "user_name": "alice", "domain_id": "d" * 32, "domain_name": "acme"}
PROJECT = {"project_id": "p" * 32, "project_name": "cn-north-4"}


def _uncached(verifier: TokenVerifier, token: str) -> None:
    verifier.forget(token)
    verifier.verify(token)


def _session() -> Session:
    access, secret = new_temporary_key()
    now = int(time.time())
    return Session(
        access, secret, now, now + 86400, "u" * 32, "worker", "d" * 32, "op_svc_modelarts",
        "a" * 32, "modelarts_agency", "e" * 32, "acme", policy=SESSION_POLICY,
    )  # fmt: skip


def _unsealed(sealer: SessionSealer, token: str, access: str) -> None:
    sealer._cache.clear()  # forget the token: the whole open path runs (decrypt, JSON, session policy)
    sealer.resolve(token, access)


def _request(access: str, secret: str, token: str | None) -> Request:
    host = "modelarts.cn-north-4.myhuaweicloud.com"
    signed = sign_request(
        "GET", f"https://{host}/v1/p/notebooks?limit=10", {"Host": host}, b"",
        access_key=access, secret_key=secret, security_token=token,
    )  # fmt: skip
    return Request.build("GET", signed.url.split(host, 1)[1], list(signed.headers.items()), b"")


def security_token_cases() -> list[Case]:
    key = os.urandom(32)
    sealer = SessionSealer({"k1": key}, active="k1")
    session = _session()
    token = sealer.seal(session)
    sealer.resolve(token, session.access_key)
    raw = sealed_bytes(token)
    box = AESGCM(key)
    aad = b"authmw security token v1 k1"
    permanent = new_temporary_key()
    verifier = Verifier(keys=StaticKeys({permanent[0]: permanent[1]}), security_tokens=sealer, max_skew=10**9)
    temporary_request = _request(session.access_key, session.secret_key, token)
    permanent_request = _request(*permanent, None)
    assert verifier.verify(temporary_request).session == session
    verifier.verify(permanent_request)
    return [
        Case(SEALED_CACHED, "authmw", same_op(sealer.resolve, token, session.access_key)),
        Case(SEALED_UNCACHED, "authmw", same_op(_unsealed, sealer, token, session.access_key)),
        Case(AESGCM_OPEN, "reference", same_op(lambda: box.decrypt(raw[:12], raw[12:], aad))),
        Case(TEMPORARY_REQUEST, "authmw", same_op(verifier.verify, temporary_request)),
        Case(PERMANENT_REQUEST, "authmw", same_op(verifier.verify, permanent_request)),
    ]


def sealed_bytes(token: str) -> bytes:
    body = token.rsplit(".", 1)[1]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def cases() -> list[Case]:
    out = security_token_cases()
    for algorithm, key, names in (
        ("EdDSA", ed25519.Ed25519PrivateKey.generate(), (UNCACHED, PYJWT)),
        ("ES256", ec.generate_private_key(ec.SECP256R1()), (UNCACHED_ES256, PYJWT_ES256)),
    ):
        token, _claims = TokenSigner("k1", key, algorithm=algorithm).issue(**USER, **PROJECT)
        verifier = TokenVerifier({"k1": key.public_key()}, algorithms=(algorithm,))
        public = key.public_key()
        if algorithm == "EdDSA":
            verifier.verify(token)
            out.append(Case(CACHED, "authmw", same_op(verifier.verify, token)))
        out.append(Case(names[0], "authmw", same_op(_uncached, verifier, token)))
        out.append(
            Case(names[1], "peer", same_op(lambda t=token, k=public, a=algorithm: jwt.decode(t, k, algorithms=[a])))
        )
    return out


def verdicts(found: list[Case]) -> list[Verdict]:
    by = {case.name: case.median for case in found}
    out = []
    cached, uncached, peer = by.get(CACHED), by.get(UNCACHED), by.get(PYJWT)
    if cached is None or uncached is None or peer is None:
        return [Verdict("token targets", None, "cases not run")]
    out.append(Verdict("X-Auth-Token check with a cached token ≤ 1 µs", cached <= 1000, f"median {_us(cached)} µs"))
    ratio = peer / cached
    out.append(
        Verdict(
            "cached check ≥ 30× faster than jwt.decode of the same token",
            ratio >= 30,
            f"jwt.decode {_us(peer)} µs ÷ {_us(cached)} µs = {ratio:,.0f}×",
        )
    )
    ratio = uncached / peer
    out.append(
        Verdict(
            "uncached EdDSA verification within 1.2× of PyJWT's own cost",
            ratio <= 1.2,
            f"{_us(uncached)} µs ÷ jwt.decode {_us(peer)} µs = {ratio:.2f}×",
        )
    )
    sealed = by.get(SEALED_CACHED)
    if sealed is not None:
        out.append(Verdict("security-token validation (cached) ≤ 3 µs", sealed <= 3000, f"median {_us(sealed)} µs"))
    return out


def table(found: list[Case]) -> str:
    rows = ["| case | median µs/op | min µs | IQR µs | ops × repeats |", "|---|---:|---:|---:|---:|"]
    for case in found:
        q1, q3 = case.quartiles
        rows.append(
            f"| {case.name} | {_us(case.median)} | {_us(min(case.per_op_ns))} | {_us(q1)}–{_us(q3)} | "
            f"{case.n} × {len(case.per_op_ns)} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write raw per-batch results as JSON")
    parser.add_argument("--repeats", type=int, default=15, help="timed batches per case (default 15)")
    parser.add_argument("--batch-ms", type=float, default=50.0, help="target duration of one batch (default 50)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    facts = machine()
    facts["pyjwt"] = _package("pyjwt")
    neighbours = Neighbours()
    found = cases()
    run_cases(found, args.repeats, args.batch_ms)
    facts["other_busy_cpus"] = neighbours.busy_cpus()
    facts["load_average_end"] = os.getloadavg()
    print_preamble("Token benchmarks", facts, args, f"cryptography {facts['cryptography']}, PyJWT {facts['pyjwt']}")
    print(table(found))
    out = verdicts(found)
    print("\n### Targets\n")
    for verdict in out:
        print(verdict.line())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "machine": facts,
            "results": [case_record(case, group=case.group) for case in found],
            "targets": [{"target": v.target, "met": v.met, "detail": v.detail} for v in out],
            "recorded_at": time.time(),
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 1 if args.check and any(v.met is False for v in out) else 0


if __name__ == "__main__":
    sys.exit(main())
