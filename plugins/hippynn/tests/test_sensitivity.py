"""The bounded sensitivity: hippynn's where the centres are in range, finite force-loss gradients where one is not."""

import torch
from hippynn.layers.hiplayers.sensitivity import InverseSensitivityModule

from kdframe_hippynn.sensitivity import BoundedInverseSensitivity


def _pair(module_type, collapsed: bool):
    torch.manual_seed(0)
    module = module_type(16, 0.85, 5.0, 6.5)
    if collapsed:
        with torch.no_grad():
            module.mu[0, -1] = 1.9e-17  # a centre no distance uses, drifted to ~0 Å (seen in training)
    return module


def _force_loss_gradient(module) -> torch.Tensor:
    """d/dsigma of a loss on d(sensitivity)/d(distance): the double backward a force loss takes."""
    distances = torch.linspace(0.9, 6.0, 50, requires_grad=True)
    (slope,) = torch.autograd.grad(module(distances, False).sum(), distances, create_graph=True)
    (grad,) = torch.autograd.grad((slope**2).sum(), module.sigma)
    return grad


def test_in_range_it_is_hippynns_sensitivity_bit_for_bit():
    ours, theirs = _pair(BoundedInverseSensitivity, False), _pair(InverseSensitivityModule, False)
    distances = torch.linspace(0.5, 7.0, 40)
    assert torch.equal(ours(distances, False), theirs(distances, False))
    assert torch.equal(_force_loss_gradient(ours), _force_loss_gradient(theirs))


def test_a_collapsed_centre_keeps_the_force_loss_gradient_finite():
    assert not torch.isfinite(_force_loss_gradient(_pair(InverseSensitivityModule, True))).all()  # hippynn's: NaN
    assert torch.isfinite(_force_loss_gradient(_pair(BoundedInverseSensitivity, True))).all()
