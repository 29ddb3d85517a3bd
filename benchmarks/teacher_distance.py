"""How far students are from their teacher, and from the reference, on one evaluation set.

    python benchmarks/teacher_distance.py --pretrained ani1x --energy wb97x_dz.energy --forces wb97x_dz.forces \
        --students runs/a/student/model.pt runs/b/student/model.pt

A student's error against the reference mixes two things: the teacher's own error and the student's distance from
its teacher. This scores every model against the reference and every student against the teacher's predictions;
the teacher's own members (one network each) against their ensemble give the scale of that distance, and against
the reference what one of the teacher's networks achieves alone. ``--curvature`` adds each model's distance from the
teacher's curvature: Hessian-element RMSE (kcal/mol/Å²) and harmonic-frequency RMSE (cm-1, at the set's geometries,
not re-optimised: :mod:`kdframe.frequencies`), by autograd Hessians of every configuration (the set has no reference
Hessians).
Energies are compared after per-element offsets refit on the set (``kdframe.evaluation.refit_offsets``), so that the
student's and the teacher's different offset alignments do not count; dE and F need no refit. Writes a markdown
table (kcal/mol, kcal/mol/Å) to stdout. ``--mean`` adds the students' averaged predictions: if the students of several
seeds err independently, their mean is closer to the teacher than each of them. ``--members`` lists each member against
the reference, E also without the refit (on the pretrained networks' own scale); ``--per-molecule`` splits dE by
molecule.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from kdframe.config import resolve_path
from kdframe.data.dataset import Dataset
from kdframe.data.readers import read_dataset
from kdframe.errors import KdframeError
from kdframe.evaluation import REFIT, Metrics, conformer_pair_indices, mean_predictions, metrics_of, predict
from kdframe.plugins import registry
from kdframe.potential import Potential
from kdframe.units import EV_TO_KCAL_MOL

COLUMNS = (f"{REFIT} rmse (kcal/mol)", "dE rmse (kcal/mol)", "F rmse (kcal/mol/Å)")
CURVATURE = ("H rmse (kcal/mol/Å²)", "freq rmse (cm-1)")


def padded_with_nan(hessian: np.ndarray, data: Dataset) -> np.ndarray:
    """A predicted Hessian (A, 3, width, 3), 0 past each configuration's atoms, as a label: NaN there."""
    n_atoms = np.repeat(data.n_atoms, data.n_atoms)
    inside = np.arange(hessian.shape[2])[None, :] < n_atoms[:, None]
    return np.where(inside[:, None, :, None], hessian, np.nan)


def per_molecule_table(data: Dataset, teacher: np.ndarray, students: dict[str, np.ndarray]) -> str:
    """dE rmse (kcal/mol) per molecule with two or more conformers, over the pairs the reference's dE column uses
    (also against the teacher, so that every column scores the same pairs): where a student departs from its teacher."""
    reference = data.labels["energy"]
    first, second = conformer_pair_indices(data, reference)
    header = ["molecule", "pairs", "teacher, reference"]
    header += [f"{name}, {against}" for name in students for against in ("reference", "teacher")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m, name in enumerate(data.molecule_names):
        pairs = data.molecule[first] == m
        if not pairs.any():
            continue
        i, j = first[pairs], second[pairs]

        def rmse(predicted: np.ndarray, against: np.ndarray) -> str:
            error = (predicted[i] - predicted[j]) - (against[i] - against[j])
            return f"{np.sqrt(np.mean(error**2)) * EV_TO_KCAL_MOL:.2f}"

        cells = [rmse(teacher, reference)] + [rmse(e, a) for e in students.values() for a in (reference, teacher)]
        lines.append(f"| {name} | {pairs.sum()} | " + " | ".join(cells) + " |")
    return "\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", required=True, help="the teacher: a registered pretrained ensemble")
    parser.add_argument("--students", nargs="+", required=True, help="students' model.pt files")
    parser.add_argument("--data", default="bundled:extensibility.h5")
    parser.add_argument("--energy", required=True, help="the reference energy label, e.g. wb97x_dz.energy")
    parser.add_argument("--forces", required=True, help="the reference forces label, e.g. wb97x_dz.forces")
    parser.add_argument("--mean", action="store_true", help="also score the mean of the students' predictions")
    parser.add_argument("--per-molecule", action="store_true",
                        help="also list dE per molecule, each student against the reference and the teacher")
    parser.add_argument("--curvature", action="store_true",
                        help="also every model's Hessian and frequency distance from the teacher's")
    parser.add_argument("--members", action="store_true",
                        help="also list each member against the reference, E with and without the offset refit")
    args = parser.parse_args()
    pretrained = registry().pretrained
    if args.pretrained not in pretrained:
        parser.error(f"--pretrained {args.pretrained}: not a registered pretrained ensemble (valid: {sorted(pretrained)})")
    torch.set_num_threads(1)
    try:  # every input read before any prediction
        data = read_dataset(resolve_path(args.data, Path.cwd()), {"energy": args.energy, "forces": args.forces})
        student_models = [Potential.load(path).eval() for path in args.students]
    except KdframeError as error:
        parser.error(str(error))
    width = int(data.n_atoms.max()) if args.curvature else None
    member_predictions = [predict(m, data, hessian_width=width) for m in pretrained[args.pretrained]().eval().members]
    teacher = mean_predictions(member_predictions)  # the ensemble's energies and forces, each member run once
    against_teacher = data.with_labels(teacher_energy=teacher.energy, teacher_forces=teacher.forces,
                                       **({"teacher_hessian": padded_with_nan(teacher.hessian, data)} if width else {}))

    def row(name: str, metrics: Metrics, columns: tuple[str, ...] = COLUMNS) -> str:
        return f"| {name} | " + " | ".join(f"{metrics.values[c]:.2f}" for c in columns) + " |"

    print(f"Set `{args.data}`; E after per-element offsets refit on the set.\n")
    print("| model, against | E | dE | F |\n|---|---|---|---|")
    teacher_scores = metrics_of(teacher, data, "energy", "forces", refit=True)
    print(row(f"teacher ({args.pretrained}), reference", teacher_scores))
    members = {"reference": [metrics_of(p, data, "energy", "forces", refit=True) for p in member_predictions],
               "teacher": [metrics_of(p, against_teacher, "teacher_energy", "teacher_forces", refit=True)
                           for p in member_predictions]}
    for against, scores in members.items():
        for extreme, pick in (("lowest", min), ("highest", max)):
            spread = Metrics({c: pick(m.values[c] for m in scores) for c in COLUMNS})
            print(row(f"its {len(scores)} members, {against} ({extreme})", spread))
    students = {f"student {i}": predict(model, data, hessian_width=width) for i, model in enumerate(student_models)}
    if args.mean:
        students["mean of the students"] = mean_predictions(list(students.values()))
    for name, student in students.items():
        print(row(f"{name}, reference", metrics_of(student, data, "energy", "forces", refit=True)))
        print(row(f"{name}, teacher", metrics_of(student, against_teacher, "teacher_energy", "teacher_forces",
                                                 refit=True)))
    print()
    for i, path in enumerate(args.students):
        print(f"- student {i}: `{path}`")
    if args.per_molecule:
        print(per_molecule_table(data, teacher.energy, {n: p.energy for n, p in students.items()}))
    if args.curvature:
        print("\n| model, against the teacher | H (kcal/mol/Å²) | frequencies (cm-1) |\n|---|---|---|")
        scored = {**{f"member {i}": p for i, p in enumerate(member_predictions)}, **students}
        for name, prediction in scored.items():
            metrics = metrics_of(prediction, against_teacher, None, hessian_label="teacher_hessian")
            print(row(name, metrics, CURVATURE))
    if args.members:
        print("\n| model, against the reference | E | E (offsets refit) | dE | F |\n|---|---|---|---|---|")
        for name, scores in [*((f"member {i}", m) for i, m in enumerate(members["reference"])),
                             ("teacher", teacher_scores)]:
            print(row(name, scores, ("E rmse (kcal/mol)", *COLUMNS)))


if __name__ == "__main__":
    main()
