"""Conformer energy differences (dE) molecule by molecule: a pretrained teacher ensemble against its students.

    python benchmarks/conformer_errors.py --pretrained ani1ccx --students runs/a/student/model.pt runs/b/student/model.pt

The evaluation's dE (kdframe.evaluation.conformer_pairs: every within-molecule pair of labelled conformers) pools all
molecules; this splits it per molecule, to see which ones the students miss. Writes a markdown table to stdout:
dE RMSE (kcal/mol) per molecule and model, with the number of labelled conformers and pairs. With --by-origin, a
second table splits the pairs by how the two configurations were made (the ANI-layout file's per-group `origins`):
both optimised conformers (`opt:`), one of them a normal-mode sample or MD frame, or both.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np
import torch

from kdframe.config import resolve_path
from kdframe.data.readers import read_dataset
from kdframe.evaluation import conformer_pair_indices, conformer_pairs, predict
from kdframe.plugins import registry
from kdframe.potential import Potential
from kdframe.units import EV_TO_KCAL_MOL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", required=True, help="the teacher: a registered pretrained ensemble")
    parser.add_argument("--students", nargs="+", required=True, help="students' model.pt files")
    parser.add_argument("--data", default="bundled:extensibility.h5")
    parser.add_argument("--energy", default="ccsd(t)_dz.energy", help="the reference energy label")
    parser.add_argument("--by-origin", action="store_true", help="also split the pairs by the configurations' origins")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data_path = resolve_path(args.data, Path.cwd())
    data = read_dataset(data_path, {"energy": args.energy})
    models = {f"teacher ({args.pretrained})": registry().pretrained[args.pretrained]()}
    models |= {f"student {i}": Potential.load(path) for i, path in enumerate(args.students)}
    energies = {name: predict(model.eval(), data, forces=False).energy for name, model in models.items()}
    reference = data.labels["energy"]
    for i, path in enumerate(args.students):
        print(f"- student {i}: `{path}`")
    print(f"\n| molecule | conformers | pairs | {' | '.join(models)} |\n|---|---|---|{'---|' * len(models)}")
    for m in np.unique(data.molecule):
        rows = np.flatnonzero(data.molecule == m)
        molecule = data.subset(rows)
        pairs = {name: conformer_pairs(molecule, reference[rows], e[rows]) for name, e in energies.items()}
        n_pairs = len(next(iter(pairs.values()))[0])
        if n_pairs == 0:
            continue
        rmse = [rmse_kcal(ref, pred) for ref, pred in pairs.values()]
        print(f"| {data.molecule_names[m]} | {int((~np.isnan(reference[rows])).sum())} | {n_pairs} | "
              + " | ".join(f"{x:.2f}" for x in rmse) + " |")
    if args.by_origin:
        print_by_origin(data, data_path, reference, energies)


def rmse_kcal(reference: np.ndarray, predicted: np.ndarray) -> float:
    """RMSE in kcal/mol of energies (differences) in eV."""
    return float(np.sqrt(np.mean((reference - predicted) ** 2)) * EV_TO_KCAL_MOL)


PAIR_KINDS = ("both optimised", "one thermal", "both thermal")


def row_origins(data, path: Path) -> np.ndarray:
    """Each configuration's origin (`opt:c0`, `nms:300K:c0`, `md:500K:c0`, ...), from the file's group attributes."""
    with h5py.File(path, "r") as f:
        try:
            per_group = {name: json.loads(f[name].attrs["origins"]) for name in data.molecule_names}
        except KeyError as exc:
            raise SystemExit(f"{path}: --by-origin needs each molecule group's `origins` attribute ({exc})") from None
    origins = np.empty(len(data.molecule), dtype=object)
    for m, name in enumerate(data.molecule_names):
        origins[data.molecule == m] = per_group[name]
    return origins


def print_by_origin(data, path: Path, reference: np.ndarray, energies: dict[str, np.ndarray]) -> None:
    """dE RMSE of every model over the pairs of each kind (PAIR_KINDS: how many of the two are not optimised)."""
    thermal = np.array([not o.startswith("opt:") for o in row_origins(data, path)])
    i, j = conformer_pair_indices(data, reference)  # the order of conformer_pairs' differences
    kind = thermal[i].astype(int) + thermal[j].astype(int)
    pairs = [conformer_pairs(data, reference, e) for e in energies.values()]
    print(f"\n| pairs | count | {' | '.join(energies)} |\n|---|---|{'---|' * len(energies)}")
    for k, label in enumerate(PAIR_KINDS):
        rows = kind == k
        if not rows.any():
            continue
        rmse = [rmse_kcal(ref[rows], pred[rows]) for ref, pred in pairs]
        print(f"| {label} | {int(rows.sum())} | " + " | ".join(f"{x:.2f}" for x in rmse) + " |")


if __name__ == "__main__":
    main()
