"""Fixtures for tests/chart (helpers live in helpers.py)."""

import os

import pytest

from helpers import CI_VALUES, values_file


@pytest.fixture(params=CI_VALUES, ids=lambda p: os.path.basename(p).removesuffix("-values.yaml"))
def ci_values(request) -> tuple[str, dict]:
    return os.path.basename(request.param).removesuffix("-values.yaml"), values_file(request.param)
