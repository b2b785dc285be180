"""Shared fixtures: the real llama.cpp build and the real catalog models (no mocks)."""

from __future__ import annotations

import pytest

from localllms import defaults
from localllms.build import BuildInfo, current_build, use_build_for_binding
from localllms.models import ResolvedModel, resolve


@pytest.fixture(scope="session")
def threads() -> int:
    """Every core, resolved once for the test run (as a notebook resolves THREADS) and passed down."""
    return defaults.threads(None)


@pytest.fixture(scope="session")
def build() -> BuildInfo:
    info = current_build()
    use_build_for_binding(info)
    return info


@pytest.fixture(scope="session")
def smollm2() -> ResolvedModel:
    return resolve("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma() -> ResolvedModel:
    return resolve("gemma-3-270m")


@pytest.fixture(scope="session")
def reference(smollm2: ResolvedModel, build: BuildInfo) -> ResolvedModel:
    from localllms.quantize import make_reference

    return make_reference(smollm2, build)
