"""No import loop among kdframe's modules or subpackages (issue 21): scripts/import_cycles.py, read with ast."""

from __future__ import annotations

from repo_scripts import load_script


def test_no_import_cycle_among_modules_or_subpackages(capsys):
    assert load_script("scripts/import_cycles.py").main([]) == 0, capsys.readouterr().out
