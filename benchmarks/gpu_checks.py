"""Correctness on an accelerator: every architecture on ``--device`` against itself on the CPU, and MACE's
cuequivariance kernels (fused on CUDA) against e3nn on that device.

    python benchmarks/gpu_checks.py --device cuda      # on a GPU machine (benchmarks/gpu_session.sh runs it)
    python benchmarks/gpu_checks.py --device cpu       # here: the same code path, CPU against CPU

Per architecture (seeded small models, float64): energies, forces, stress and one Hessian-vector product of a
batch of molecules and a periodic box, and two training steps that must lower the loss. Writes a markdown table
(``benchmarks/results/gpu_checks_<device>.md``) and exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path

import torch

from common import command_line, provenance

from kdframe import derivatives
from kdframe.batch import Batch
from kdframe.io import atomic_write_text
from kdframe.plugins import registry
from kdframe.potential import Potential
from kdframe.testing import Conformance

ROOT = Path(__file__).resolve().parents[1]
SPECIES = [1, 6, 7, 8]
SMALL = {
    "hippynn": {"l_max": 1, "n_interaction_layers": 1, "width": 8, "n_atom_layers": 1, "n_sensitivities": 6,
                "dist_soft_max": 4.0, "dist_hard_max": 5.0},
    "torchani": {"hidden": [8], "aev": {"radial_cutoff": 4.0, "radial_num_shifts": 6, "angular_cutoff": 3.0,
                                        "angular_num_shifts": 2, "angular_num_sections": 2}},
    "mace": {"channels": 8, "max_L": 1, "num_interactions": 2, "correlation": 2, "max_ell": 2,
             "num_radial_basis": 4, "radial_MLP": [8], "MLP_irreps": "8x0e", "r_max": 4.0},
}
TOLERANCE = {torch.float64: 1e-8, torch.float32: 2e-3}  # max |difference| / max(1, max |reference|)


def batches(architecture: str) -> dict[str, Batch]:
    kit = Conformance(architecture, SMALL[architecture])
    return {"molecules": kit.batch(("water", "methanol", "ammonia", "methane")), "periodic box": kit.periodic_batch()}


def predictions(model: Potential, batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    """E, F, stress (NaN-free entries only) and H·v along a fixed vector, as float64 on the CPU."""
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    b = batch.to(device, dtype)
    b = dataclasses.replace(b, positions=b.positions.detach().clone().requires_grad_(True))
    out = model(b, forces=True, create_graph=True, stress=b.pbc is not None)
    vector = torch.randn(b.n_atoms, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    hv = derivatives.hessian_vector_product(out["forces"][..., 0], b.positions, vector.to(device, dtype), False)
    result = {"energy": out["energy"], "forces": out["forces"], "hvp": hv}
    if "stress" in out:
        result["stress"] = out["stress"]
    return {k: v.detach().double().cpu() for k, v in result.items()}


def relative_gap(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> tuple[float, str]:
    """Worst relative difference over the quantities, and which quantity it was."""
    worst, where = 0.0, "—"
    for key, ref in expected.items():
        gap = float((actual[key] - ref).abs().max()) / max(1.0, float(ref.abs().max()))
        if gap > worst or where == "—":
            worst, where = gap, key
    return worst, where


def trains(model: Potential, batch: Batch, device: torch.device) -> tuple[float, float]:
    """(loss before, loss after) two Adam steps on an energy + force loss toward zero-centred targets."""
    b = batch.to(device, torch.float64)
    target = torch.zeros(b.n_conf, dtype=torch.float64, device=device)
    optimiser = torch.optim.Adam(model.trainable_weights(), lr=1e-2)
    losses = []
    for _ in range(3):
        optimiser.zero_grad()
        step = dataclasses.replace(b, positions=b.positions.detach().clone().requires_grad_(True))
        out = model(step, forces=True, create_graph=True)
        energy = out["energy"][:, 0]
        loss = (energy - energy.detach().mean() - target).pow(2).mean() + out["forces"].pow(2).mean()
        losses.append(float(loss))
        loss.backward()
        optimiser.step()
    return losses[0], losses[-1]


def architecture_rows(device: torch.device) -> list[tuple[str, str, bool]]:
    rows = []
    for name in SMALL:
        torch.manual_seed(0)
        model = Potential(registry().architectures[name], SMALL[name], SPECIES).double()
        for what, batch in batches(name).items():
            expected = predictions(model.to("cpu"), batch, torch.device("cpu"))
            actual = predictions(model.to(device), batch, device)
            gap, where = relative_gap(actual, expected)
            ok = gap <= TOLERANCE[torch.float64]
            rows.append((f"{name}: {what}, {device.type} vs CPU (E, F, stress, H·v; float64)",
                         f"{gap:.2e} (worst: {where})", ok))
        before, after = trains(model.to(device), batches(name)["molecules"], device)
        rows.append((f"{name}: 2 Adam steps on {device.type}", f"loss {before:.4g} -> {after:.4g}", after < before))
    return rows


def cuequivariance_rows(device: torch.device) -> list[tuple[str, str, bool]]:
    """MACE with cuequivariance kernels vs the e3nn model it was converted from, on ``device``."""
    try:
        import cuequivariance_torch  # noqa: F401
    except ImportError:
        return [("mace cuequivariance: cuequivariance-torch importable", "not installed", False)]
    try:
        import cuequivariance_ops_torch  # noqa: F401 - the fused CUDA kernels
        fused = "fused kernels (cuequivariance_ops_torch) importable"
    except ImportError:
        fused = "no cuequivariance_ops_torch: torch fallback"
    from kdframe_mace import with_cuequivariance

    rows = [("mace cuequivariance: kernels", fused, device.type != "cuda" or fused.startswith("fused"))]
    for dtype in (torch.float64, torch.float32):
        torch.manual_seed(0)
        e3nn = Potential(registry().architectures["mace"], {**SMALL["mace"], "dtype": str(dtype)[6:]}, SPECIES)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cue = with_cuequivariance(e3nn, True)
        for what, batch in batches("mace").items():
            expected = predictions(e3nn.to(device), batch, device)
            actual = predictions(cue.to(device), batch, device)
            gap, where = relative_gap(actual, expected)
            rows.append((f"mace cuequivariance vs e3nn on {device.type}: {what} ({str(dtype)[6:]})",
                         f"{gap:.2e} (worst: {where})", gap <= TOLERANCE[dtype]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="result file (default: benchmarks/results/gpu_checks_<device>.md)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"gpu_checks_{device.type}.md")
    rows = architecture_rows(device) + cuequivariance_rows(device)
    failed = [r for r in rows if not r[2]]
    table = "\n".join(f"| {what} | {value} | {'pass' if ok else 'FAIL'} |" for what, value, ok in rows)
    text = f"""# Correctness on {device.type}: each architecture vs the CPU, cuequivariance vs e3nn

- command: `{command_line()}`
- {provenance(device.type)}
- tolerance: max |difference| / max(1, max |reference|) <= {TOLERANCE[torch.float64]:g} in float64,
  {TOLERANCE[torch.float32]:g} in float32

| check | result | verdict |
|---|---|---|
{table}

**{len(rows) - len(failed)} of {len(rows)} passed.**
"""
    atomic_write_text(out, text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
