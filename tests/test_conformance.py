"""The architecture conformance kit (kdframe.testing): every built-in plugin and the example pass it (one test
parametrized over architecture and check: ``-k "hippynn and stress"``), and a deliberately broken adapter fails it,
loudly, naming the property."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.autograd.function import once_differentiable

from kdframe.architecture import ModelOutput
from kdframe.batch import Batch
from kdframe.plugins import registry
from kdframe.testing import ArchitectureConformance, Conformance, ConformanceError

from toy import ToyArchitecture, ToyModel

pytest_plugins = ["pytester"]
torch.set_num_threads(1)


def installed(module: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"{module} is not installed")


# --- the built-in plugins and the example pass ------------------------------------------------------
# Each architecture's kit settings (not collected by pytest: test_conformance below runs them, and test_hvp.py
# reads their tiny hyperparameters).
class HippynnConformance(ArchitectureConformance):
    architecture = "hippynn"
    hyperparameters = {"l_max": 1, "n_interaction_layers": 1, "width": 8, "n_atom_layers": 1, "n_sensitivities": 6,
                       "dist_soft_max": 4.0, "dist_hard_max": 5.0}


def _torchani_round_trip(batch: Batch) -> Batch:
    from kdframe_torchani import layout

    order = [8, 1, 7, 6]  # a non-ascending element order, as ANI-2x files have
    return layout.from_torchani(*layout.to_torchani(batch, layout.index_table(order)), order)


class TorchaniConformance(ArchitectureConformance):
    architecture = "torchani"
    hyperparameters = {"hidden": [8], "aev": {"radial_cutoff": 4.0, "radial_num_shifts": 6, "angular_cutoff": 3.0,
                                              "angular_num_shifts": 2, "angular_num_sections": 2}}
    layout_round_trip = staticmethod(_torchani_round_trip)


class MaceConformance(ArchitectureConformance):
    architecture = "mace"
    hyperparameters = {"channels": 4, "max_L": 1, "num_interactions": 2, "correlation": 2, "max_ell": 1,
                       "num_radial_basis": 4, "radial_MLP": [8], "MLP_irreps": "4x0e", "r_max": 4.0}


class PairnetConformance(ArchitectureConformance):
    architecture = "pairnet"
    hyperparameters = {"width": 8, "n_interactions": 2, "n_radial": 6, "cutoff": 4.0, "readout_width": 8}


class ToyConformance(ArchitectureConformance):
    """The core tests' toy architecture (registered by conftest.py), passed as an instance."""

    architecture = ToyArchitecture()
    hyperparameters = {"width": 8}


# architecture -> (its kit, the module that must be importable)
KITS = {"hippynn": (HippynnConformance, "kdframe_hippynn"), "torchani": (TorchaniConformance, "kdframe_torchani"),
        "mace": (MaceConformance, "kdframe_mace"), "pairnet": (PairnetConformance, "kdframe_pairnet"),
        "toy": (ToyConformance, None)}


@pytest.mark.parametrize("architecture, check", [
    pytest.param(name, check, id=f"{name}-{check}", marks=[installed(module)] if module else [])
    for name, (_, module) in KITS.items() for check in Conformance.CHECKS])
def test_conformance(architecture, check, tmp_path):
    KITS[architecture][0].run_check(check, tmp_path)


def test_every_architecture_of_this_repository_is_covered():
    """Each architecture whose code lives in this repository has a conformance class above."""
    root = Path(__file__).resolve().parents[1]
    ours = {name for name, arch in registry().architectures.items()
            if root in Path(sys.modules[type(arch).__module__].__file__).resolve().parents}
    covered = set(KITS)
    assert ours - covered == set(), f"no conformance class for {sorted(ours - covered)}: add one here"


# --- a deliberately broken adapter fails ------------------------------------------------------------
class _NormOnce(torch.autograd.Function):
    """|d| whose backward is not itself differentiable: forces work, their gradients do not."""

    @staticmethod
    def forward(ctx, d):
        r = d.norm(dim=-1)
        ctx.save_for_backward(d, r)
        return r

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        d, r = ctx.saved_tensors
        return grad[:, None] * d / r[:, None]


class _WeightConstantInBackward(torch.autograd.Function):
    """x Wᵀ + b whose input gradient treats W as a constant: forces lose part of their dependence on W."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return x @ weight.T + bias

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return grad @ weight.detach(), grad.T @ x, grad.sum(0)


class FlawedModel(ToyModel):
    """The toy network with one adapter bug switched on."""

    def __init__(self, hp, species, n_heads, flaw: str):
        super().__init__(hp, species, n_heads)
        self.flaw = flaw
        self.n_heads = n_heads
        if flaw == "unsaved_random_buffer":
            self.register_buffer("scale", 1.0 + torch.rand(()), persistent=False)

    def _linear(self, layer, x):
        if self.flaw == "detached_weights":
            return torch.nn.functional.linear(x, layer.weight.detach(), layer.bias.detach())
        if self.flaw == "weight_constant_in_backward" and layer is self.radial:
            return _WeightConstantInBackward.apply(x, layer.weight, layer.bias)
        return layer(x)

    def forward(self, batch: Batch) -> ModelOutput:
        flaw = self.flaw
        positions = batch.positions.detach() if flaw == "detached_positions" else batch.positions
        pairs = torch.ones(batch.n_atoms, batch.n_atoms, dtype=torch.bool)
        if flaw != "mixes_configurations":
            pairs &= batch.conf_index[:, None] == batch.conf_index[None, :]
        i, j = torch.nonzero(pairs & ~torch.eye(batch.n_atoms, dtype=torch.bool), as_tuple=True)
        d = positions[i] - positions[j]
        r = _NormOnce.apply(d) if flaw == "once_differentiable" else d.norm(dim=-1)
        envelope = 0.5 * (torch.cos(torch.pi * r / self.cutoff) + 1) * (r < self.cutoff)
        if flaw == "hard_cutoff":  # pairs switched off at the cutoff without an envelope
            envelope = (r < self.cutoff).to(r.dtype)
        g = torch.exp(-((r[:, None] - self.centres) ** 2)) * envelope[:, None]
        features = g.new_zeros(batch.n_atoms, g.shape[1]).index_add(0, i, g)
        embedding = self.embedding.weight.detach() if flaw == "detached_weights" else self.embedding.weight
        element = self.embed_index[batch.species]
        if flaw == "ignores_species":  # one embedding row for every element
            element = torch.zeros_like(element)
        h = embedding[element] + self._linear(self.radial, features)
        atom = self._linear(self.readout[2], self.readout[1](self._linear(self.readout[0], h)))
        if flaw == "not_rotation_invariant":  # depends on x relative to the configuration's centre
            centre = batch.sum_per_conf(positions) / batch.atoms_per_conf()[:, None]
            atom = atom + 0.05 * (positions[:, 0] - centre[batch.conf_index, 0])[:, None] ** 2
        if flaw == "unsaved_random_buffer":
            atom = atom * self.scale
        if flaw == "duplicated_heads":
            atom = atom[:, :1].expand(-1, self.n_heads)
        energy = batch.sum_per_conf(atom)
        if flaw == "atom_order":  # each configuration's atom energies reversed: sums unchanged
            counts = batch.atoms_per_conf()
            starts = torch.cumsum(counts, 0) - counts
            atom = atom[starts[batch.conf_index] + counts[batch.conf_index] - 1 - batch.local_index()]
        if flaw == "energy_not_sum":
            energy = energy + 0.1
        if flaw == "energy_without_head_axis":
            energy = energy[:, 0]
        return ModelOutput(energy=energy, atom_energies=atom)


class FlawedArchitecture(ToyArchitecture):
    name = "toy"  # the registry's toy: registered, so save/load works

    def __init__(self, flaw: str):
        self.flaw = flaw

    def build(self, hyperparameters, species, heads):
        return FlawedModel(hyperparameters, species, len(heads), self.flaw)


# flaw -> (the check that must fail, words its message must contain)
FLAWS = {
    "energy_not_sum": ("energy_is_sum_of_atom_energies", "ModelOutput.energy vs per-configuration sum"),
    "energy_without_head_axis": ("output_contract", "ModelOutput.energy has shape (3,), expected (3, 1)"),
    "atom_order": ("atom_order", "atom energies after permuting the atoms"),
    "mixes_configurations": ("batch_independence", "alone vs inside one batch"),
    "detached_positions": ("forces_match_finite_differences", "not differentiable in Batch.positions"),
    "not_rotation_invariant": ("rotation_invariance", "energies after a random rotation"),
    "once_differentiable": ("hessian_vector_products_match_finite_differences", "double backward failed"),
    "weight_constant_in_backward": ("hvp_loss_gradients_match_finite_differences", "in the weights (relative)"),
    "unsaved_random_buffer": ("save_load_round_trip", "reloaded model vs the saved one"),
    "detached_weights": ("training_lowers_the_loss", "energy loss has no gradient"),
    "duplicated_heads": ("heads", "the two head columns are the same"),
    "hard_cutoff": ("cutoff_continuity", "the energy jumps by"),
    "ignores_species": ("species_dependence", "does the network ignore the atomic number"),
}


@pytest.mark.parametrize("flaw", list(FLAWS))
def test_a_broken_adapter_fails_the_named_check(flaw):
    check, words = FLAWS[flaw]
    kit = Conformance(FlawedArchitecture(flaw), {"width": 8})
    with pytest.raises(ConformanceError, match=f"^{check}: ") as failure:
        getattr(kit, f"check_{check}")()
    assert words in str(failure.value)
    print(f"{flaw}: {failure.value}")


@pytest.mark.parametrize("flaw", ["hard_cutoff", "ignores_species"])
def test_the_new_checks_catch_bugs_that_pass_every_other_check(flaw):
    """A hard cutoff and an embedding that ignores the atomic number passed all 18 older checks; now one check
    fails, naming the bug, and only that one."""
    others = [c for c in Conformance.CHECKS if c not in ("registered", "save_load_round_trip")]  # FlawedArchitecture
    results = Conformance(FlawedArchitecture(flaw), {"width": 8}).run(others)  # is not the registry's toy class
    failed = {name: result for name, result in results.items() if result and result.startswith("FAILED")}
    assert list(failed) == [FLAWS[flaw][0]], failed


def test_the_hard_cutoff_check_names_the_distance():
    kit = Conformance(FlawedArchitecture("hard_cutoff"), {"width": 8})
    with pytest.raises(ConformanceError, match=r"cutoff_continuity: the energy jumps by .* eV moving atom 3 \(Z=1\) "
                                               r"away from atom 0 \(Z=8\) of water from r = \d\.\d{4} to \d\.\d{4} Å \(head \d\), where the forces account for .* a hard "
                                               r"cutoff\?"):
        kit.check_cutoff_continuity()


def test_a_network_that_takes_unknown_elements_for_padding_is_refused_by_the_core():
    """The unknown_elements check goes through Potential, which refuses elements outside the model's set before the
    network sees them (hippynn's network alone takes Z=0 for padding and Z=2 for nothing)."""
    assert Conformance(FlawedArchitecture("none"), {"width": 8}).run(["unknown_elements"]) == {"unknown_elements": None}


def test_the_not_registered_hint_is_printed_once():
    from kdframe.testing import _HINTED

    _HINTED.discard("surely_not_registered")
    results = Conformance("surely_not_registered").run()
    hints = [r for r in results.values() if "pip install" in r]
    assert len(hints) == 1 and all("not registered" in r or "no architecture" in r for r in results.values())


def test_every_check_is_described_once():
    """The checks are one registry: each has a docstring, the module docstring and --list are made from them."""
    import kdframe.testing as testing

    for name in Conformance.CHECKS:
        assert testing.describe(name) and f"``{name}``: " in testing.__doc__
    assert not [n for n in dir(ArchitectureConformance) if n.startswith("test_") and n != "test_conformance"]


def test_failure_messages_say_by_how_much():
    kit = Conformance(FlawedArchitecture("energy_not_sum"), {"width": 8})
    with pytest.raises(ConformanceError, match=r"max \|difference\| = 0\.1 .* > tolerance 1e-09 .*worst at "
                                               r"configuration \d, head 0"):
        kit.check_energy_is_sum_of_atom_energies()


def test_flaws_are_caught_only_where_they_are():
    """A flaw in one property leaves the unrelated checks passing (messages point at the real bug)."""
    results = Conformance(FlawedArchitecture("not_rotation_invariant"), {"width": 8}).run(
        ["energy_is_sum_of_atom_energies", "translation_invariance", "permutation_invariance", "rotation_invariance",
         "forces_match_finite_differences"])
    assert [name for name, r in results.items() if r] == ["rotation_invariance"], results
    results = Conformance(FlawedArchitecture("atom_order"), {"width": 8}).run(
        ["energy_is_sum_of_atom_energies", "permutation_invariance", "atom_order"])
    assert [name for name, r in results.items() if r] == ["atom_order"], results


def test_the_pytest_base_class_fails_loudly(pytester):
    """The route a plugin author takes: subclass ArchitectureConformance; a broken adapter fails its tests."""
    pytester.makepyfile(test_broken=textwrap.dedent("""
        import pydantic
        import torch

        from kdframe.architecture import Architecture, EnergyModel, ModelOutput
        from kdframe.testing import ArchitectureConformance


        class Hyperparameters(pydantic.BaseModel):
            model_config = pydantic.ConfigDict(extra="forbid")


        class Net(EnergyModel):
            def __init__(self, n_heads):
                super().__init__()
                self.w = torch.nn.Parameter(torch.rand(n_heads) + 0.5)

            def forward(self, batch):
                # |R_i|^2 about the origin: rotation-invariant, not translation-invariant; no shared weights
                atom = batch.positions.pow(2).sum(-1, keepdim=True) * self.w
                return ModelOutput(energy=batch.sum_per_conf(atom), atom_energies=atom)


        class Unregistered(Architecture):
            name = "unregistered_example"
            Hyperparameters = Hyperparameters

            def build(self, hyperparameters, species, heads):
                return Net(len(heads))


        class TestBrokenConformance(ArchitectureConformance):
            architecture = Unregistered()
        """))
    reports = pytester.inline_run("-p", "no:cacheprovider")
    passed, skipped, failed = reports.listoutcomes()
    failures = {rep.nodeid.rsplit("[", 1)[1].rstrip("]"): rep.longreprtext for rep in failed}
    assert sorted(failures) == ["heads", "registered", "save_load_round_trip", "species_dependence",
                                "translation_invariance"], failures
    assert "ConformanceError: registered: architecture 'unregistered_example' is not in kdframe's registry" \
        in failures["registered"]
    assert "Potential.load failed" in failures["save_load_round_trip"]  # the registry again
    assert "ConformanceError: translation_invariance: energies after translating every atom by (3, -7.5, 12.25) " \
           "Å: max |difference| = " in failures["translation_invariance"]
    assert "ConformanceError: heads: the heads share no weights" in failures["heads"]
    assert "ConformanceError: species_dependence: " in failures["species_dependence"]
    assert len(passed) == len(Conformance.CHECKS) - 5
    assert not skipped
