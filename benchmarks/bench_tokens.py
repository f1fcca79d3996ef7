"""IAM token benchmarks: ``TokenVerifier.verify`` (cached and uncached) against PyJWT's own ``jwt.decode``.

Layer: core verify (house rule 15), same harness as ``bench_signing.py``: cases calibrated to ``--batch-ms``
batches, ``--repeats`` round-robin rounds, GC off while timing, medians. The tokens and verifiers are built
before the clock starts; "not cached" forgets the token before each check, so the whole decode path runs.

    python benchmarks/bench_tokens.py [--json PATH] [--repeats 15] [--batch-ms 50] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

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
USER = {"user_id": "u" * 32, "user_name": "alice", "domain_id": "d" * 32, "domain_name": "acme"}
PROJECT = {"project_id": "p" * 32, "project_name": "cn-north-4"}


def _uncached(verifier: TokenVerifier, token: str) -> None:
    verifier.forget(token)
    verifier.verify(token)


def cases() -> list[Case]:
    out = []
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
