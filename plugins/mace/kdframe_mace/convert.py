"""Switch a trained MACE potential between the e3nn and cuequivariance implementations, and export it to mace.

Typical use: train on CPU with e3nn, run MD on a GPU with cuequivariance kernels (or back again).
The weights are remapped by mace's own converters (``mace.cli.convert_e3nn_cueq`` and
``convert_cueq_e3nn``); those only log a warning on a shape mismatch, so the converted potential
is checked against the original on a probe configuration before it is returned.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from kdframe.batch import Batch
from kdframe.errors import ConfigError
from kdframe.io import atomic_write
from kdframe.potential import Potential

from .architecture import MaceArchitecture


def with_cuequivariance(potential: Potential, enabled: bool) -> Potential:
    """A new potential equal to ``potential`` but built with ``cuequivariance: enabled`` (the input is unchanged)."""
    if not isinstance(potential.architecture, MaceArchitecture):
        raise ConfigError("model.architecture", f"is {potential.architecture.name!r}; only mace models convert", ["mace"])
    hp = potential.architecture.parse(potential.hyperparameters)
    if hp.cuequivariance == enabled:
        return copy.deepcopy(potential)
    if enabled:
        from mace.cli.convert_e3nn_cueq import transfer_weights
    else:
        from mace.cli.convert_cueq_e3nn import transfer_weights

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # fused kernels need CUDA
    source = copy.deepcopy(potential).to(device)
    target = Potential(
        potential.architecture, {**potential.hyperparameters, "cuequivariance": enabled},
        potential.species, potential.heads, potential.reference_energies,
    ).to(device=device, dtype=source.net.float_dtype)
    transfer_weights(
        source.net.mace, target.net.mace, num_product_irreps=hp.max_L, correlation=hp.correlation,
        num_layers=hp.num_interactions, use_reduced_cg=hp.reduced_cg, keep_last_layer_irreps=False,
    )
    check_same_predictions(source, target, probe_batch(potential.species, hp.r_max).to(device))
    return target.to(potential.reference_energies.device)


def probe_batch(species: list[int], r_max: float) -> Batch:
    """One configuration with every element twice on a jittered line, neighbours well within r_max."""
    numbers = torch.tensor(species * 2, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    positions = torch.zeros(len(numbers), 3, dtype=torch.float64)
    positions[:, 0] = min(1.3, r_max / 2) * torch.arange(len(numbers), dtype=torch.float64)
    positions += 0.1 * torch.randn(positions.shape, generator=generator, dtype=torch.float64)
    return Batch(species=numbers, positions=positions, conf_index=torch.zeros(len(numbers), dtype=torch.long), n_conf=1)


def check_same_predictions(source: Potential, target: Potential, batch: Batch) -> None:
    """Raise if the converted potential's energies or forces differ beyond float round-off."""
    expected, converted = source(batch), target(batch)
    tolerance = 1e-6 if source.net.float_dtype == torch.float64 else 1e-3  # eV and eV/Å
    for key in ("energy", "forces"):
        error = float((expected[key] - converted[key]).detach().abs().max())
        if not error <= tolerance:
            raise RuntimeError(
                f"mace cuequivariance conversion changed the {key} by {error:.3g} (tolerance {tolerance:g}); "
                "the two implementations disagree for this model"
            )


def save_mace_model(potential: Potential, path: str | os.PathLike, dtype: torch.dtype = torch.float64) -> Path:
    """Write ``potential`` as a plain mace model file (the whole pickled ``ScaleShiftMACE``, as ``mace_run_train``
    writes it) for mace's own tools: ``mace.calculators.MACECalculator(model_paths=path)``, ``mace_create_lammps_model``
    and fine-tuning. kdframe's per-species reference energies become the model's E0s (head by head), so mace gives
    kdframe's energies; a cuequivariance model is converted back to e3nn first. The file is in ``dtype``, float64 by
    default even for a float32 model: E0s of hundreds of eV per atom lose up to 1e-4 eV each in float32 (meV per box).
    The file is a pickle: load it only from a source you trust. Returns the path."""
    if not isinstance(potential.architecture, MaceArchitecture):
        raise ConfigError("model.architecture", f"is {potential.architecture.name!r}; only mace models export", ["mace"])
    mace = with_cuequivariance(potential, False).net.mace.cpu().to(dtype)  # a new potential: changing it is safe
    e0 = potential.reference_energies[potential.species].T  # (n_heads, n_elements), mace's layout
    mace.atomic_energies_fn.atomic_energies = e0.to(mace.atomic_energies_fn.atomic_energies)
    atomic_write(path, lambda f: torch.save(mace, f))
    return Path(path)
