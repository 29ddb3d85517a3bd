"""How far students are from their teacher, and from the reference, on one evaluation set.

    python benchmarks/teacher_distance.py --pretrained ani1x --energy wb97x_dz.energy --forces wb97x_dz.forces \
        --students runs/a/student/model.pt runs/b/student/model.pt

A student's error against the reference mixes two things: the teacher's own error and the student's distance from
its teacher. This scores every model against the reference and every student against the teacher's predictions;
the teacher's own members (one network each) against their ensemble give the scale of that distance.
Energies are compared after per-element offsets refit on the set (``kdframe.evaluation.refit_offsets``), so that the
student's and the teacher's different offset alignments do not count; dE and F need no refit. Writes a markdown
table (kcal/mol, kcal/mol/Å) to stdout. ``--mean`` adds the students' averaged predictions: if the students of several
seeds err independently, their mean is closer to the teacher than each of them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from kdframe.config import resolve_path
from kdframe.data.readers import read_dataset
from kdframe.errors import KdframeError
from kdframe.evaluation import REFIT, Metrics, mean_predictions, metrics_of, predict
from kdframe.plugins import registry
from kdframe.potential import Potential

COLUMNS = (f"{REFIT} rmse (kcal/mol)", "dE rmse (kcal/mol)", "F rmse (kcal/mol/Å)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", required=True, help="the teacher: a registered pretrained ensemble")
    parser.add_argument("--students", nargs="+", required=True, help="students' model.pt files")
    parser.add_argument("--data", default="bundled:extensibility.h5")
    parser.add_argument("--energy", required=True, help="the reference energy label, e.g. wb97x_dz.energy")
    parser.add_argument("--forces", required=True, help="the reference forces label, e.g. wb97x_dz.forces")
    parser.add_argument("--mean", action="store_true", help="also score the mean of the students' predictions")
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
    member_predictions = [predict(m, data) for m in pretrained[args.pretrained]().eval().members]
    teacher = mean_predictions(member_predictions)  # the ensemble's energies and forces, each member run once
    against_teacher = data.with_labels(teacher_energy=teacher.energy, teacher_forces=teacher.forces)

    def row(name: str, metrics: Metrics) -> str:
        return f"| {name} | " + " | ".join(f"{metrics.values[c]:.2f}" for c in COLUMNS) + " |"

    print(f"Set `{args.data}`; E after per-element offsets refit on the set.\n")
    print("| model, against | E | dE | F |\n|---|---|---|---|")
    print(row(f"teacher ({args.pretrained}), reference", metrics_of(teacher, data, "energy", "forces", refit=True)))
    members = [metrics_of(p, against_teacher, "teacher_energy", "teacher_forces", refit=True)
               for p in member_predictions]
    low = Metrics({c: min(m.values[c] for m in members) for c in COLUMNS})
    high = Metrics({c: max(m.values[c] for m in members) for c in COLUMNS})
    print(row(f"its {len(members)} members, teacher (lowest)", low))
    print(row(f"its {len(members)} members, teacher (highest)", high))
    students = {f"student {i}": predict(model, data) for i, model in enumerate(student_models)}
    if args.mean:
        students["mean of the students"] = mean_predictions(list(students.values()))
    for name, student in students.items():
        print(row(f"{name}, reference", metrics_of(student, data, "energy", "forces", refit=True)))
        print(row(f"{name}, teacher", metrics_of(student, against_teacher, "teacher_energy", "teacher_forces",
                                                 refit=True)))
    print()
    for i, path in enumerate(args.students):
        print(f"- student {i}: `{path}`")


if __name__ == "__main__":
    main()
