"""MACE through cuequivariance-torch: on CPU its pure-torch fallback runs the same model as e3nn.

GPU speed is not measured here (benchmarks/); these tests check that kdframe builds, converts,
differentiates and saves cuequivariance models and that they predict what the e3nn model predicts.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("cuequivariance_torch")
from test_plugin_mace import HEADS, fresh, make_potential, molecules  # noqa: E402

from kdframe import derivatives  # noqa: E402
from kdframe.batch import Batch  # noqa: E402
from kdframe.errors import ConfigError  # noqa: E402
from kdframe.potential import Potential  # noqa: E402
from kdframe_mace import with_cuequivariance  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:cuequivariance_ops_torch is not available")


@pytest.fixture(scope="module")
def batch() -> Batch:
    return Batch.from_atoms(molecules(names=["CH3OH", "HCOOH", "NH3"]))


def predictions(potential: Potential, batch: Batch) -> dict[str, torch.Tensor]:
    """Energies, atom energies, forces and one Hessian-vector product per head."""
    b = fresh(batch)
    out = potential(b, create_graph=True)
    v = torch.randn(batch.n_atoms, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    hvp = [derivatives.hessian_vector_product(out["forces"][..., h], b.positions, v, create_graph=False,
                                              retain_graph=True) for h in range(len(HEADS))]
    return {"energy": out["energy"], "atom_energies": out["atom_energies"], "forces": out["forces"],
            "hvp": torch.stack(hvp, -1)}


@pytest.mark.parametrize("reduced_cg", [False, True])
def test_conversion_keeps_energies_forces_and_hessian_vector_products(batch, reduced_cg):
    e3nn = make_potential(reduced_cg=reduced_cg)
    cueq = with_cuequivariance(e3nn, True)
    assert cueq.hyperparameters["cuequivariance"] and not e3nn.hyperparameters.get("cuequivariance", False)
    assert type(cueq.net.mace.products[0].symmetric_contractions).__module__.startswith("cuequivariance_torch")
    assert cueq.n_weights() == e3nn.n_weights()
    expected, got = predictions(e3nn, batch), predictions(cueq, batch)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-8, atol=1e-8)
    back = with_cuequivariance(cueq, False)
    for name, value in e3nn.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], value, rtol=0, atol=1e-12, msg=name)


def test_reduced_basis_has_fewer_weights_than_the_original():
    assert make_potential(reduced_cg=True).n_weights() < make_potential().n_weights()


def test_cuequivariance_model_trains_and_saves(batch, tmp_path):
    potential = make_potential(cuequivariance=True)
    out = potential(fresh(batch), create_graph=True)
    loss = out["energy"].square().mean() + out["forces"].square().mean()
    grads = torch.autograd.grad(loss, potential.trainable_weights(), allow_unused=True)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    potential.save(tmp_path / "cueq.pt")
    loaded = Potential.load(tmp_path / "cueq.pt")
    torch.testing.assert_close(loaded(fresh(batch))["energy"], potential(fresh(batch))["energy"], rtol=0, atol=0)


def test_saved_model_does_not_depend_on_the_cuequivariance_backend(batch):
    """The torch fallback and the fused CUDA kernels hold other constant buffers: none is saved, and a
    model whose polynomial modules hold other constants (here: one more) loads a saved state strictly."""
    potential = make_potential(cuequivariance=True)
    names = potential.net.cueq_modules
    assert len(names) > 5 and any(potential.net.get_submodule(n).state_dict() for n in names)
    saved = potential.state_dict()
    assert not [k for k in saved for n in names if k.startswith(f"net.{n}.")]
    assert len(saved) > 20  # weights are still saved
    other_backend = make_potential(cuequivariance=True)
    torch.nn.init.zeros_(other_backend.trainable_weights()[0])
    other_backend.net.get_submodule(names[0]).register_buffer("backend_constant", torch.ones(3))
    other_backend.load_state_dict(saved)
    torch.testing.assert_close(other_backend(fresh(batch))["energy"], potential(fresh(batch))["energy"], rtol=0, atol=0)


def test_converter_refuses_other_architectures():
    from kdframe.plugins import registry

    other = Potential(registry().lookup("architectures", "toy", "test"), {}, [1, 6])
    with pytest.raises(ConfigError, match="only mace models convert"):
        with_cuequivariance(other, True)
