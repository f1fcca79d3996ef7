"""Helpers the tests share, imported as ``tests.support.<module>`` (pytest puts the repository root on the path:
``pythonpath`` in pyproject.toml). Fixtures stay in each layer's ``conftest.py``; helpers live here, so no test
module imports another.

- ``world``: a real store with users, keys and workspaces (``build_world``), the echo apps.
- ``forms``: the three forms of authmw served over real HTTP (``running``, ``Form``, ``SETTINGS``).
- ``servers``: uvicorn, werkzeug and wsgiref on ephemeral ports, ``wait_idle``.
- ``proxy``: ``authmw proxy`` as a real process.
- ``raw``: raw HTTP/1.1 requests on a socket, signed, presigned or broken.
- ``agencies``: login, temporary credentials and calls with them.
- ``guard_world``: the guard over an in-memory identity source with an injected clock.
- ``signed``: requests signed by authmw's signer as core ``Request`` values.
- ``wire`` (self-tests in ``test_wire.py``), ``vectors``, ``tokens``: the real client libraries' bytes on
  the wire, the signing conformance vectors, a one-token resolver.
- ``policy_cases``: the policy conformance cases and the documented refusal of each invalid one.
- ``oidc_issuer``: a JWKS-serving OIDC issuer. ``pgutil``: a PostgreSQL schema per test. ``cli``: the
  ``authmw`` command in-process over a fresh store.
- ``budget``: the example budgets of the Hypothesis tests (a tenth unless ``AUTHMW_HYPOTHESIS_BUDGET=full``).
- ``reads``: the read audit of ``.ci/run``. ``child_site``: the ``sitecustomize`` of the Python processes tests
  start (tests/conftest.py).
"""
