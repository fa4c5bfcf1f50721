"""Shared fixtures: every test fails if it leaks asyncio tasks; one real control plane for
the session, wiped after each test that uses it."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import settings

from tests.support.controlplane import TestControlPlane

# Property-based tests (tests/unit/test_fuzz_*.py) run the same examples on every `make test`:
# derandomized (the seed comes from the test's own source), no example database on disk, no
# per-example deadline (a loaded CI machine is slow, not wrong). Each test sets max_examples;
# inputs that once found a bug stay as @example(...) on the test.
settings.register_profile("deterministic", derandomize=True, database=None, deadline=None)
settings.load_profile("deterministic")


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running after it ends."""
    before = asyncio.all_tasks()
    yield
    gc.collect()  # unclosed sockets surface here, in the test that leaked them
    current = asyncio.current_task()
    for _ in range(20):
        leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
        if not leaked:
            return
        await asyncio.sleep(0.05)
    names = ", ".join(sorted(t.get_name() for t in leaked))
    for t in leaked:
        t.cancel()
    pytest.fail(f"test leaked asyncio tasks: {names}")


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestControlPlane]:
    """The real Kubernetes control plane the whole session shares (started once)."""
    cp = TestControlPlane(tmp_path_factory.mktemp("control-plane")).start()
    yield cp
    cp.stop()


@pytest.fixture
def kube(control_plane: TestControlPlane) -> Iterator[TestControlPlane]:
    """The shared control plane, left clean for the next test: what this test made is deleted."""
    yield control_plane
    control_plane.wipe()
