"""Prometheus metrics of the sidecar: decisions by outcome and error code, decision latency, upstream errors."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from authmw.admission import Observer
from authmw.errors import AuthmwError
from authmw.models import AuthContext

__all__ = ["Metrics"]

_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5)


class Metrics:
    """One registry per app, the sidecar's or authz's (tests can build several apps in one process)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "authmw_decisions", "Pipeline decisions", ["outcome", "error_code"], registry=self.registry
        )
        self.latency = Histogram(
            "authmw_decision_seconds", "Time to decide a request", buckets=_BUCKETS, registry=self.registry
        )
        self.upstream_errors = Counter(
            "authmw_upstream_errors", "Requests the upstream could not answer", registry=self.registry
        )
        self.reloads = Counter("authmw_reloads", "Configuration reloads", ["result"], registry=self.registry)
        self.shared_state_fallbacks = Gauge(
            "authmw_shared_state_fallbacks",
            "Requests checked in this process alone while the shared state was unreachable (shared_state_fallback)",
            registry=self.registry,
        )
        self.audit_records_lost = Gauge(
            "authmw_audit_records_lost",
            "Audit records lost because the audit log did not keep up (its buffer was full); see the warnings",
            registry=self.registry,
        )

    def watch(self, records_lost: Callable[[], float], fallbacks: Callable[[], float] | None) -> None:
        """Read the process's lost audit records (and, with Redis, its shared-state fallbacks) at each scrape."""
        self.audit_records_lost.set_function(records_lost)
        if fallbacks is not None:
            self.shared_state_fallbacks.set_function(fallbacks)

    def decided(self, outcome: str, error_code: str, seconds: float) -> None:
        self.decisions.labels(outcome, error_code).inc()
        self.latency.observe(seconds)

    def observer(self) -> Observer:
        """What :func:`~authmw.admission.admit` tells of one request's decision, counted with the time from now."""
        started = time.perf_counter()

        def observe(context: AuthContext, error: AuthmwError | None) -> None:
            refused = error or context.error
            outcome = "allow" if refused is None else "deny" if error is not None else "dry-run-deny"
            self.decided(outcome, refused.code if refused else "", time.perf_counter() - started)

        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
