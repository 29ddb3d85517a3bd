"""PairNet's tests: kdframe's conformance kit, plus what is particular to this network."""

from __future__ import annotations

from importlib import metadata

import pydantic
import pytest
import torch

from kdframe.batch import Batch
from kdframe.errors import DataError
from kdframe.potential import Potential
from kdframe.testing import ArchitectureConformance, make_batch, molecules
from kdframe_pairnet import PairNetArchitecture

torch.set_num_threads(1)

SMALL = {"width": 8, "n_interactions": 2, "n_radial": 6, "cutoff": 4.0, "readout_width": 8}


class TestPairnetConformance(ArchitectureConformance):
    """Everything kdframe needs from an architecture: shapes, sums, atom order, forces, HVPs, invariances,
    save/load, training, fidelity heads, smoothness at the cutoff, species, unknown elements, awkward geometries.
    One test, ``test_conformance``, parametrized over ``kdframe.testing.Conformance.CHECKS``
    (``pytest -k cutoff_continuity`` runs one check)."""

    architecture = "pairnet"  # looked up in kdframe's registry: proves the entry point works
    hyperparameters = SMALL


def test_entry_point():
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="kdframe")}
    assert eps.get("pairnet") == "kdframe_pairnet"


def test_hyperparameter_typo_names_the_key():
    with pytest.raises(pydantic.ValidationError, match="widht"):
        PairNetArchitecture().parse({"widht": 8})
    with pytest.raises(pydantic.ValidationError, match="cutoff"):
        PairNetArchitecture().parse({"cutoff": 0.1})


def test_unknown_element_is_an_error():
    model = Potential(PairNetArchitecture(), SMALL, species=[1, 8])
    batch = make_batch(molecules(["methane"]))
    with pytest.raises(DataError, match=r"elements \[6\] are outside"):
        model(batch)


def test_energy_is_smooth_at_the_cutoff():
    """Two atoms just inside and just outside the cutoff: energy and force continuous (cosine envelope)."""
    torch.manual_seed(0)
    model = Potential(PairNetArchitecture(), SMALL, species=[1, 8]).double()

    def pair(r: float) -> dict[str, torch.Tensor]:
        positions = torch.tensor([[0.0, 0.0, 0.0], [r, 0.0, 0.0]], dtype=torch.float64)
        return model(Batch(torch.tensor([8, 1]), positions, torch.zeros(2, dtype=torch.long), 1))

    inside, outside = pair(SMALL["cutoff"] - 1e-6), pair(SMALL["cutoff"] + 1e-6)
    assert float((inside["energy"] - outside["energy"]).abs().max()) < 1e-9
    assert float(outside["forces"].abs().max()) == 0.0 and float(inside["forces"].abs().max()) < 1e-5


def test_the_example_yaml_runs(tmp_path, capsys):
    """examples/kdframe-pairnet/ekd_pairnet.yaml, one epoch per model: PairNet as teacher and as student."""
    from pathlib import Path

    from kdframe.cli import main

    example = Path(__file__).parents[1] / "ekd_pairnet.yaml"
    config = tmp_path / "short.yaml"
    config.write_text(f"extends: {example}\nrun_dir: {tmp_path / 'run'}\ntraining: {{max_epochs: 1}}\n")
    assert main(["run", str(config), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| test | teacher ensemble |" in out and "| test | student |" in out and "| test | control |" in out
    assert Potential.load(tmp_path / "run" / "student" / "model.pt").architecture.name == "pairnet"
