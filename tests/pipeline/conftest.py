"""The fixtures of the pipeline tests: one real store world, and each form of authmw served in front of it
(tests/support/forms.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.forms import FORMS, Form, running
from tests.support.world import World, build_world


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = build_world(Path(tmp_path_factory.mktemp("world")))
    yield built
    built.store.close()


@pytest.fixture(scope="package", params=FORMS)
def form(request: pytest.FixtureRequest, world: World) -> Iterator[Form]:
    with running(request.param, world) as started:
        yield started
