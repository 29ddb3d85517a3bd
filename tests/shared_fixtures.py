"""Fixtures shared by the core's tests (tests/) and the built-in plugins' tests (plugins/*/tests/).

Each of those directories' ``conftest.py`` imports them from here (``tests`` is on pytest's ``pythonpath``,
see pyproject.toml), so a plugin's tests run from their own directory as well as in the whole suite.
Importing this module registers the toy architecture (tests/toy.py) and keeps torch to one thread.
"""

import os

import pytest
import torch

from kdframe.plugins import registry

from toy import ToyArchitecture, write_ani_file

# This repository's plugins only: another architecture plugin installed beside them must not change the tests.
os.environ.setdefault("KDFRAME_PLUGINS", "hippynn,torchani,mace,qc,pairnet")
torch.set_num_threads(1)
registry().architectures.setdefault("toy", ToyArchitecture())


@pytest.fixture(autouse=True)
def toy_architecture():
    """The toy architecture stays registered when a test rebuilds the (cached) registry."""
    registry().architectures.setdefault("toy", ToyArchitecture())


@pytest.fixture
def ani_file(tmp_path):
    path = tmp_path / "morse.h5"
    write_ani_file(path)
    return path
