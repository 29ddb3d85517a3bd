"""An exponential moving average of the trained weights, validated and kept in place of the last ones.

As MACE's ``--ema`` (through ``torch_ema``): shadow copies of the weights follow every optimiser step with
decay ``min(decay, (1 + t) / (10 + t))`` after ``t`` updates (the warm-up keeps early, untrained weights from
dominating), and are swapped into the model for validation and for the best weights. The update itself is
torch's (:func:`torch.optim.swa_utils.get_ema_multi_avg_fn`); torch's ``AveragedModel`` is not used because it
deep-copies the whole model, which not every architecture's modules allow.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn


class WeightAverage:
    """Exponential moving average of ``params`` (the tensors the optimiser updates)."""

    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float):
        self.params, self.decay = list(params), decay
        self.shadow = [p.detach().clone() for p in self.params]
        self.updates = 0

    def update(self) -> None:
        """Follow the weights after one optimiser step."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        get_ema_multi_avg_fn(decay)(self.shadow, [p.detach() for p in self.params], None)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the duration of the block, the trained ones back after it."""
        trained = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, t in zip(self.params, trained):
                    p.copy_(t)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.params) or any(
                s.shape != p.shape for s, p in zip(state["shadow"], self.params)):
            raise ValueError("its averaged weights do not fit this model")
        self.shadow = [s.to(p.device, p.dtype).clone() for s, p in zip(state["shadow"], self.params)]
        self.updates = int(state["updates"])
