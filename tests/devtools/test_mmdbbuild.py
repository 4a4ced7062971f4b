"""streams.devtools.mmdbbuild: the addresses drawn from a database's own networks."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.devtools.mmdbbuild import build_demo_db, labelled_networks, sample_ips
from streams.pipeline.geodb.labeller import Labeller


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_db(tmp_path_factory.mktemp("mmdb") / "demo.mmdb")


def test_labelled_networks_label_as_the_labeller_does(demo_db: Path) -> None:
    labeller = Labeller.open(demo_db, 1024)
    networks = list(labelled_networks(demo_db))
    assert len(networks) > 100
    for net, territory in networks[::50]:
        assert labeller.label(str(net.network_address + 1)).territory.code == territory.code


def test_unique_sample_ips(demo_db: Path) -> None:
    ips = sample_ips(demo_db, "HK", 300, seed=2, unique=True)
    assert len(ips) == len(set(ips)) == 300
    assert sample_ips(demo_db, "HK", 300, seed=2)[:5] == sample_ips(demo_db, "HK", 300, seed=2)[:5]
