"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import MODELS


@pytest.fixture(scope="session")
def fmnist_path() -> Path:
    return MODELS / "fmnist_resnet.onnx"
