"""The core's shared fixtures (tests/shared_fixtures.py: the toy architecture, ``ani_file``) for the
kdframe-hippynn plugin's tests, which live with the plugin (docs/plugins.md)."""

from shared_fixtures import ani_file, toy_architecture  # noqa: F401
