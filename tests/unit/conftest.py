"""Unit-test fixtures: GeoIP databases with known answers (see tests/geoip_fixtures.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:  # tests/ is not a package; make tests/geoip_fixtures.py importable
    sys.path.insert(0, _TESTS)

from geoip_fixtures import MAXMIND_DIR, build_fixture_db  # noqa: E402


@pytest.fixture(scope="session")
def fixture_db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The known-answer database (variant "a"), built once per session. Do not modify it: copy it."""
    return build_fixture_db(tmp_path_factory.mktemp("geoip") / "fixture.mmdb")


@pytest.fixture(scope="session")
def fixture_db_b_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The known-answer database, variant "b" (CASES[0] relabelled), for hot-reload tests."""
    return build_fixture_db(tmp_path_factory.mktemp("geoip") / "fixture-b.mmdb", variant="b")


@pytest.fixture(scope="session")
def maxmind_dir() -> Path:
    """MaxMind's public test databases, vendored in tests/data/maxmind (MIT)."""
    return MAXMIND_DIR
