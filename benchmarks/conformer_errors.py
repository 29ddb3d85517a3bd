"""Conformer energy differences (dE) molecule by molecule: a pretrained teacher ensemble against its students.

    python benchmarks/conformer_errors.py --pretrained ani1ccx --students runs/a/student/model.pt runs/b/student/model.pt

The evaluation's dE (kdframe.evaluation.conformer_pairs: every within-molecule pair of labelled conformers) pools all
molecules; this splits it per molecule, to see which ones the students miss. Writes a markdown table to stdout:
dE RMSE (kcal/mol) per molecule and model, with the number of labelled conformers and pairs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from kdframe.config import resolve_path
from kdframe.data.readers import read_dataset
from kdframe.evaluation import conformer_pairs, predict
from kdframe.plugins import registry
from kdframe.potential import Potential
from kdframe.units import EV_TO_KCAL_MOL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", required=True, help="the teacher: a registered pretrained ensemble")
    parser.add_argument("--students", nargs="+", required=True, help="students' model.pt files")
    parser.add_argument("--data", default="bundled:extensibility.h5")
    parser.add_argument("--energy", default="ccsd(t)_dz.energy", help="the reference energy label")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = read_dataset(resolve_path(args.data, Path.cwd()), {"energy": args.energy})
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
        rmse = [np.sqrt(np.mean((ref - pred) ** 2)) * EV_TO_KCAL_MOL for ref, pred in pairs.values()]
        print(f"| {data.molecule_names[m]} | {int((~np.isnan(reference[rows])).sum())} | {n_pairs} | "
              + " | ".join(f"{x:.2f}" for x in rmse) + " |")


if __name__ == "__main__":
    main()
