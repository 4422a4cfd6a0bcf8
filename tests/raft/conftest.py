"""Options for the Raft tests: `pytest tests/raft --rewrite` regenerates golden traces."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    try:
        parser.addoption(
            "--rewrite",
            action="store_true",
            default=False,
            help="regenerate golden interaction traces under tests/raft/testdata",
        )
    except ValueError:
        pass  # already registered by another conftest


@pytest.fixture
def rewrite(request: pytest.FixtureRequest) -> bool:
    try:
        return bool(request.config.getoption("--rewrite"))
    except ValueError:
        return False
