"""Shared fixtures. No test writes to the real cache: ``XDG_CACHE_HOME`` points into
``tmp_path`` for every test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneyard_text2sql.database import connect_readonly, ensure_database


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty cache folder for each test (``XDG_CACHE_HOME``)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


@pytest.fixture(scope="session")
def company_db(tmp_path_factory) -> Path:
    """The company database, built once per session outside any cache."""
    return ensure_database(tmp_path_factory.mktemp("db") / "company.sqlite")


@pytest.fixture
def company(company_db):
    """A read-only connection to :func:`company_db`."""
    conn = connect_readonly(company_db)
    yield conn
    conn.close()
