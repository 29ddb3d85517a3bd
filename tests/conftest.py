"""The shared fixtures (tests/shared_fixtures.py) for the core's tests."""

from shared_fixtures import ani_file, toy_architecture  # noqa: F401
