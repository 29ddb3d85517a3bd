"""kdframe: knowledge distillation for machine-learning interatomic potentials."""

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402  (plugins write `from kdframe import hookimpl`)

__all__ = ["hookimpl", "__version__"]
