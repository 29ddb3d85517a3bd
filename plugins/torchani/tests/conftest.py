"""The core's shared fixtures (tests/shared_fixtures.py: the toy architecture, ``ani_file``) for the
kdframe-torchani plugin's tests, which live with the plugin (docs/plugins.md)."""

from pathlib import Path

import pytest

from kdframe.errors import DataError
from kdframe_torchani import pretrained as pre
from shared_fixtures import ani_file, toy_architecture  # noqa: F401


@pytest.fixture(scope="session")
def ani_wheel(tmp_path_factory) -> Path:
    """The torchani 2.0 wheel: from the user's kdframe cache if fetched before, else from PyPI."""
    cached = pre.cache_root() / "downloads" / pre.WHEEL_FILE
    if cached.is_file():
        return cached
    try:
        return pre.download_wheel(tmp_path_factory.mktemp("wheel"))
    except DataError as exc:
        pytest.skip(f"torchani==2.0 wheel not obtainable from PyPI: {exc}")

