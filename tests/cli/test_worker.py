"""``shudi worker``'s checks before Faust starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.cli.errors import EXIT_USAGE, CommandError
from streams.cli.worker import check_data_dir


def test_a_writable_data_dir_is_made_and_left_clean(tmp_path: Path) -> None:
    data = tmp_path / "a" / "data"
    check_data_dir(data)
    assert data.is_dir()
    assert list(data.iterdir()) == []  # the probe is gone


def test_a_data_dir_that_cannot_be_written_stops_the_worker_in_one_line(tmp_path: Path) -> None:
    # A path under a regular file: no directory can be made there, whoever runs the test (root ignores
    # permission bits; the read-only and full file systems are the disk-full row of bench.faults).
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CommandError) as info:
        check_data_dir(blocker / "data")
    assert info.value.exit_code == EXIT_USAGE
    message = info.value.format_message()
    assert str(blocker / "data") in message
    assert "not writable" in message
    assert "\n" not in message
