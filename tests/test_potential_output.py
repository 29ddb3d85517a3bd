"""Potential checks what an architecture plugin returns: a wrong type, shape or dtype is one ArchitectureError naming
the architecture and what was expected, never a broadcast table or a traceback."""

from __future__ import annotations

import pytest
import torch

from kdframe.architecture import ModelOutput
from kdframe.cli import main
from kdframe.errors import KdframeError
from kdframe.plugins import registry
from kdframe.errors import ArchitectureError
from kdframe.potential import Potential
from kdframe.testing import make_batch, molecules

from toy import ToyArchitecture, ToyModel


class BentModel(ToyModel):
    def __init__(self, hp, species, n_heads, bend):
        super().__init__(hp, species, n_heads)
        self.bend = bend

    def forward(self, batch):
        out = super().forward(batch)
        if self.bend == "energy_without_head_axis":
            return ModelOutput(out.energy[:, 0], out.atom_energies)
        if self.bend == "atom_energies_per_conf":
            return ModelOutput(out.energy, out.energy)
        if self.bend == "plain_tensor":
            return out.energy
        if self.bend == "tuple":
            return out.energy, out.atom_energies
        if self.bend == "integer_energy":
            return ModelOutput(out.energy.round().long(), out.atom_energies)
        if self.bend == "numpy_energy":
            return ModelOutput(out.energy.detach().numpy(), out.atom_energies)
        if self.bend == "regulariser_vector":
            return ModelOutput(out.energy, out.atom_energies, {"smooth": out.atom_energies.sum(0)})
        if self.bend == "nan":
            return ModelOutput(out.energy * float("nan"), out.atom_energies)
        return out


class BentArchitecture(ToyArchitecture):
    name = "bent_toy"

    def __init__(self, bend):
        self.bend = bend

    def build(self, hyperparameters, species, heads):
        return BentModel(hyperparameters, species, len(heads), self.bend)


BENDS = {
    "energy_without_head_axis": r"ModelOutput.energy has shape \(3,\), expected \(n_conf, n_heads\) = \(3, 2\) for 3 "
                                r"configuration\(s\), 12 atom\(s\) and 2 head\(s\)",
    "atom_energies_per_conf": r"ModelOutput.atom_energies has shape \(3, 2\), expected \(n_atoms, n_heads\) = "
                              r"\(12, 2\)",
    "plain_tensor": r"the network returned Tensor, expected kdframe.architecture.ModelOutput\(energy, atom_energies\)",
    "tuple": r"the network returned tuple, expected kdframe.architecture.ModelOutput",
    "integer_energy": r"ModelOutput.energy has dtype torch.int64, expected a floating-point tensor",
    "numpy_energy": r"ModelOutput.energy is ndarray, expected a tensor of shape \(n_conf, n_heads\) = \(3, 2\)",
    "regulariser_vector": r"ModelOutput.regularisers must be a dict of 0-dim tensors, got \{'smooth': tensor of "
                          r"shape \(2,\)\}",
    "nan": r"the network's first output has non-finite energies",
}


@pytest.mark.parametrize("bend", list(BENDS))
def test_a_wrong_output_is_one_error_naming_the_architecture(bend):
    model = Potential(BentArchitecture(bend), {"width": 8}, [1, 6, 7, 8], ["lo", "hi"])
    batch = make_batch(molecules(["water", "methane", "ammonia"]), torch.float32)
    with pytest.raises(ArchitectureError, match=r"^architecture 'bent_toy' \(test_potential_output.BentModel\): "
                                                + BENDS[bend]) as raised:
        model(batch)
    assert isinstance(raised.value, KdframeError)
    assert "python -m kdframe.testing bent_toy" in str(raised.value)


def test_a_correct_output_passes_and_nan_positions_are_not_blamed_on_the_plugin():
    model = Potential(BentArchitecture("none"), {"width": 8}, [1, 6, 7, 8], ["lo", "hi"])
    batch = make_batch(molecules(["water", "methane"]), torch.float32)
    assert model(batch)["energy"].shape == (2, 2)
    fresh = Potential(BentArchitecture("none"), {"width": 8}, [1, 6, 7, 8])
    batch = make_batch(molecules(["water", "methane"]), torch.float32)
    batch.positions[0, 0] = float("nan")
    fresh(batch, forces=False)  # non-finite output from non-finite input: the data's problem, caught elsewhere


def test_the_cli_reports_a_wrong_shape_instead_of_a_table(tmp_path, ani_file, capsys, monkeypatch):
    """`kdframe evaluate` of a model whose plugin drops the head axis: exit code 2 and one error line (it used to
    print a plausible table from an (n_conf, n_conf) broadcast)."""
    monkeypatch.setitem(registry().architectures, "bent_toy", BentArchitecture("energy_without_head_axis"))
    Potential(BentArchitecture("energy_without_head_axis"), {"width": 8}, [1, 6, 7, 8]).save(tmp_path / "m.pt")
    code = main(["evaluate", "--model", str(tmp_path / "m.pt"), "--data", str(ani_file),
                 "--energy-key", "morse.energy", "--out", str(tmp_path / "out.md")])
    captured = capsys.readouterr()
    assert code == 2, captured.out
    assert "| " not in captured.out
    assert captured.err.startswith("kdframe: error: architecture 'bent_toy' (test_potential_output.BentModel): "
                                   "ModelOutput.energy has shape (")
    assert len(captured.err.strip().splitlines()) == 1
