"""Fixture: a started agent store on disk (no fsync: the tests that need durability
open their own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.agent.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "agent.db", fsync=False)
    s.start()
    yield s
    s.close()
