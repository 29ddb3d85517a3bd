"""Each member's energies and forces from an ensemble's own forward.

The ensemble runs as it always does (so members that share work, e.g. the AEV of ANI ensembles, still share it);
a forward hook on every member records its energies, then one gradient per member gives its forces. Used by the
ASE calculator (members' spread as ``energy_std``, ``forces_std``) and by teacher labelling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .batch import Batch
from .potential import Ensemble, Potential


def members_of(model: Potential | Ensemble) -> list[Potential]:
    """An ensemble's members; a single potential is its own one member."""
    return list(model.members) if isinstance(model, Ensemble) else [model]


def forward_with_members(model: Potential | Ensemble, batch: Batch, head: int = 0, forces: bool = False,
                         stress: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``model(batch, forces=forces, stress=stress)`` (all heads) and each member's energies for ``head``,
    (n_members, n_conf), float64; without ``forces`` and ``stress`` they are still attached to the graph, for
    :func:`member_gradients`."""
    members = members_of(model)
    caught: list[torch.Tensor] = []
    hooks = [member.register_forward_hook(lambda module, inputs, out: caught.append(out["energy"][:, head]))
             for member in members]
    try:
        with torch.enable_grad():
            out = model(batch, forces=forces, stress=stress)
    finally:
        for hook in hooks:
            hook.remove()
    if len(caught) != len(members):
        raise RuntimeError(f"{len(caught)} member outputs recorded for {len(members)} members")
    return out, torch.stack(caught)


def member_gradients(energies: torch.Tensor, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """For each of ``inputs``, d(each member's summed energies)/d(input), stacked over members: (n_members,
    *input.shape). One gradient per member; the graph is kept until the last."""
    last = len(energies) - 1
    per_member = [torch.autograd.grad(e.sum(), inputs, retain_graph=i < last) for i, e in enumerate(energies)]
    return [torch.stack([g[k] for g in per_member]) for k in range(len(inputs))]


__all__ = ["members_of", "forward_with_members", "member_gradients"]
