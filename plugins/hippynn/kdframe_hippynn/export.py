"""A trained HIP-NN potential as a hippynn ``GraphModule`` for hippynn's own tools."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from kdframe.errors import ConfigError
from kdframe.io import atomic_write
from kdframe.potential import Potential

from .architecture import HipnnArchitecture


def save_hippynn_model(potential: Potential, path: str | os.PathLike, dtype: torch.dtype = torch.float64) -> Path:
    """Write ``potential``'s hippynn graph (``torch.save`` of its ``GraphModule``) with kdframe's reference energies
    folded in, so hippynn gives kdframe's energies: each head's ``HEnergy{h:03d}`` node reads the one-hot species
    features with a bias-free linear layer (hippynn's per-species constant term), to which ``ref[Z]`` is added.

    Load with ``torch.load(path, weights_only=False)``; ``model.node_from_name("HEnergy000")`` is the energy node
    for ``hippynn.interfaces.ase_interface.HippynnCalculator(node, en_unit=1.0, dist_unit=1.0)`` (eV and Å).
    The graph keeps kdframe's pair finder, so loading needs ``kdframe_hippynn`` importable; hippynn's ASE
    calculator replaces that pair finder with its own. The file is in ``dtype``, float64 by default even for a float32
    model: reference energies of hundreds of eV per atom lose up to 1e-4 eV each in float32 (meV per box). The file
    is a pickle: load it only from a source you trust. Returns the path."""
    if not isinstance(potential.architecture, HipnnArchitecture):
        raise ConfigError("model.architecture", f"is {potential.architecture.name!r}; only hippynn models export",
                          ["hippynn"])
    graph = copy.deepcopy(potential.net.graph).cpu().to(dtype)
    for h in range(len(potential.heads)):
        one_hot = graph.get_module(graph.node_from_name(f"HEnergy{h:03d}")).layers[0]
        with torch.no_grad():  # columns follow the species order without the padding 0
            one_hot.weight[0] += potential.reference_energies[potential.species, h].to(one_hot.weight)
    atomic_write(path, lambda f: torch.save(graph, f))
    return Path(path)
