import pytest
import torch

from kdframe.plugins import registry

from toy import ToyArchitecture, write_ani_file

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
