"""Which variant of the store the tests run against: --kvstore-variant, else the
KVSTORE_VARIANT environment variable, else "quorum" (the correct one)."""

from __future__ import annotations

import os
import sys

import pytest

# the store is a plain module beside the tests, importable however pytest was started
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--kvstore-variant", choices=("quorum", "broken"), default=None,
                     help="store variant under test (default: $KVSTORE_VARIANT or quorum)")


@pytest.fixture
def variant(request: pytest.FixtureRequest) -> str:
    chosen = request.config.getoption("--kvstore-variant")
    return chosen or os.environ.get("KVSTORE_VARIANT", "quorum")


def pytest_report_header(config: pytest.Config) -> str:
    chosen = config.getoption("--kvstore-variant")
    return f"kvstore variant: {chosen or os.environ.get('KVSTORE_VARIANT', 'quorum')}"
