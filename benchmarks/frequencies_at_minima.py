"""Harmonic frequencies of curvature-distilled students at their own minima, against their teacher's at its own.

    python benchmarks/frequencies_at_minima.py --configs configs/hessian/ani1ccx_curvature_w3.yaml \
        --out benchmarks/results/curvature_minima.md

The hessian workflow scores frequencies at the data's geometries, most of them distorted (normal-mode samples, MD
frames), where a few soft or imaginary modes weigh heavily. A chemist compares frequencies at minima. For every
optimised conformer (origin ``opt:``) of a run's test molecules this optimises the geometry with the run's pretrained
teacher (float64, BFGS to ``--fmax``), then each trained model (student, control) from the teacher's minimum to its
own, and compares the sorted harmonic frequencies (cm-1, :mod:`kdframe.frequencies`) mode by mode; the frequencies
at the teacher's minimum without re-optimising are scored too, and (as the run's report.md) those at the test
split's own geometries against the data's Hessian labels. The runs must be finished (``kdframe run CONFIG``) and
their data must record each configuration's origin, as ``kdframe data sample`` writes it.
Several configs give a row each; configs named alike but for a ``_seedN`` suffix are one recipe, and each recipe
gets the mean of its runs' student / control ratios.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import torch
from ase import Atoms
from ase.optimize import BFGS

from kdframe.calculator import KdframeCalculator
from kdframe.config import resolve_path
from kdframe.data.dataset import Dataset
from kdframe.errors import KdframeError
from kdframe.evaluation import evaluate, predict
from kdframe.frequencies import harmonic_frequencies
from kdframe.potential import Ensemble, Potential
from kdframe.workflows.base import Run, load_config

sys.path.insert(0, str(Path(__file__).parent))
from common import command_line, print_and_write, provenance  # noqa: E402

STAGES = ("student", "control")
MAX_STEPS = 2000
FREQ_RMSE = "freq rmse (cm-1)"
SEED_SUFFIX = re.compile(r"_seed\d+$")  # configs of one recipe at other seeds


def optimised(model: Potential | Ensemble, numbers: np.ndarray, positions: np.ndarray, fmax: float) -> tuple[np.ndarray, bool]:
    """The geometry BFGS reaches from ``positions`` on ``model`` (float64), and whether it converged to ``fmax``."""
    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = KdframeCalculator(model)
    converged = BFGS(atoms, logfile=None).run(fmax=fmax, steps=MAX_STEPS)
    return atoms.get_positions(), bool(converged)


def frequencies(model: Potential | Ensemble, numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Sorted harmonic frequencies (cm-1) of ``model`` at ``positions``, Hessian by autograd."""
    n = len(numbers)
    one = Dataset(species=np.asarray(numbers, np.int64), positions=np.asarray(positions, np.float64),
                  atom_ptr=np.array([0, n]), molecule=np.zeros(1, np.int64), molecule_names=["m"])
    hessian = predict(model, one, hessian_width=n).hessian
    return harmonic_frequencies(hessian, numbers, positions)


def minima(run: Run) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(molecule, atomic numbers, positions) of every ``opt:`` conformer of the run's test molecules, from the
    origins its ANI-layout data file records (none where it records no origins)."""
    test = run.eval_sets["test"]
    found = []
    with h5py.File(resolve_path(run.config.data.train.path, run.config_dir), "r") as f:
        for name in sorted({test.molecule_names[m] for m in test.molecule}):
            origins = json.loads(f[name].attrs.get("origins", "[]"))
            numbers = f[name]["atomic_numbers"][()]
            found += [(name, numbers, f[name]["coordinates"][i]) for i, o in enumerate(origins) if o.startswith("opt")]
    return found


def score(run: Run, fmax: float) -> dict[str, dict]:
    """Frequency errors (cm-1) of each stage of one finished run against its teacher, at minima: RMSE at the model's
    own minimum (``own``), at the teacher's (``teacher``) and at the test split's geometries (``data``), MAE at its
    own minimum; and how many conformers it took."""
    config, test = run.config, run.eval_sets["test"]
    with run:
        teacher = config.distillation.teacher.ensemble(run, "distillation.teacher", "teacher", config.seed).double()
        models = {stage: Potential.load(run.dir / stage / "model.pt").eval() for stage in STAGES}
    at_data = {stage: evaluate(model, test, "energy", "forces", hessian_label="hessian").values[FREQ_RMSE]
               for stage, model in models.items()}  # as the run's report: saved dtype, the data's geometries
    models = {stage: model.double() for stage, model in models.items()}
    conformers = minima(run)
    errors: dict[str, dict[str, list[np.ndarray]]] = {s: {"own": [], "teacher": []} for s in STAGES}
    unconverged = {name: 0 for name in ("teacher", *STAGES)}  # relaxations short of fmax, per model
    for _, numbers, start in conformers:
        at_teacher, ok = optimised(teacher, numbers, start, fmax)
        unconverged["teacher"] += not ok
        reference = frequencies(teacher, numbers, at_teacher)
        for stage, model in models.items():
            own, ok = optimised(model, numbers, at_teacher, fmax)
            unconverged[stage] += not ok
            errors[stage]["own"].append(frequencies(model, numbers, own) - reference)
            errors[stage]["teacher"].append(frequencies(model, numbers, at_teacher) - reference)
    out: dict[str, dict] = {}
    for stage, by_geometry in errors.items():
        own, at_teacher = np.concatenate(by_geometry["own"]), np.concatenate(by_geometry["teacher"])
        out[stage] = {"own": float(np.sqrt(np.mean(own ** 2))), "teacher": float(np.sqrt(np.mean(at_teacher ** 2))),
                      "data": at_data[stage], "mae": float(np.mean(np.abs(own)))}
    out["count"] = {"conformers": len(conformers), "molecules": len({name for name, _, _ in conformers}),
                    "unconverged": unconverged}
    return out


def checked_run(parser: argparse.ArgumentParser, path: Path) -> Run:
    """The run of config ``path`` (its data read and split), or one argparse error unless it is a finished hessian
    run with a pretrained teacher, a student and a control, whose test molecules have optimised conformers."""
    try:
        workflow, config = load_config(path)
    except KdframeError as error:
        parser.error(str(error))
    block = getattr(config, "distillation", None)
    if workflow.name != "hessian" or block is None or isinstance(block.teacher, str) or not block.teacher.pretrained:
        parser.error(f"{path}: not a hessian-workflow run with a pretrained teacher (distillation.teacher: "
                     "{pretrained: NAME})")
    if not block.control:
        parser.error(f"{path}: distillation.control is false; the student is compared with its control")
    missing = [s for s in STAGES if not (resolve_path(config.run_dir, Path.cwd()) / s / "model.pt").is_file()]
    if missing:
        parser.error(f"{path}: stages {missing} not trained in {config.run_dir}; run `kdframe run {path}` first")
    try:  # the data and its labels, as the run reads them
        run = Run(config, path, workflow, progress=False)
    except KdframeError as error:
        parser.error(f"{path}: {error}")
    if not minima(run):
        parser.error(f"{path}: none of the test split's molecules has an optimised conformer in {config.data.train.path} "
                     "(an `origins` attribute with 'opt:' entries per molecule, as `kdframe data sample` writes)")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", required=True, type=Path,
                        help="finished hessian-workflow runs with a pretrained teacher, a student and a control")
    parser.add_argument("--fmax", type=float, default=1e-3, help="BFGS force criterion (eV/Å)")
    parser.add_argument("--out", type=Path, help="markdown file to write (default: stdout only)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = {path: checked_run(parser, path) for path in args.configs}  # every run checked before any optimisation
    command = command_line()
    lines = ["# Harmonic frequencies at minima: students vs controls against their teacher\n",
             f"- command: `{command}`", f"- {provenance('cpu')}",
             "- every `opt:` conformer of each run's test molecules, optimised with the teacher (float64 BFGS, "
             f"fmax {args.fmax:g} eV/Å), then with each model from there; sorted frequencies compared mode by mode "
             "(cm-1 RMSE; translations and rotations projected out)\n",
             "- last columns: RMSE over every test configuration with a Hessian label, at its own geometry (mostly "
             "distorted), as the run's report.md\n",
             "| run | conformers (molecules) | student, own minimum | control, own minimum | ratio "
             "| student, teacher's minimum | control, teacher's minimum | ratio | MAE student / control, own minimum "
             "| student, test geometries | control, test geometries | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ratios: dict[str, dict[str, list[float]]] = {}  # recipe -> geometry -> per-run ratios
    for path, run in runs.items():
        result = score(run, args.fmax)
        s, c, n = result["student"], result["control"], result["count"]
        mine = ratios.setdefault(SEED_SUFFIX.sub("", path.stem), {"own": [], "teacher": [], "data": []})
        for geometry, values in mine.items():
            values.append(s[geometry] / c[geometry])
        lines.append(f"| `{path.name}` | {n['conformers']} ({n['molecules']}) | {s['own']:.1f} | {c['own']:.1f} | "
                     f"{mine['own'][-1]:.2f} | {s['teacher']:.1f} | {c['teacher']:.1f} | {mine['teacher'][-1]:.2f} "
                     f"| {s['mae']:.1f} / {c['mae']:.1f} | {s['data']:.1f} | {c['data']:.1f} | {mine['data'][-1]:.2f} |")
        short = ", ".join(f"{model} {count}" for model, count in n["unconverged"].items() if count)
        if short:
            lines.append(f"| | relaxations short of fmax after {MAX_STEPS} steps: {short} | | | | | | | | | | |")
    lines += ["", "Mean of the per-run student / control RMSE ratios, per recipe (its seeds):", "",
              "| recipe | runs | at own minima | at the teacher's minima | at the test geometries |", "|---|---|---|---|---|"]
    lines += [f"| `{recipe}` | {len(r['own'])} | {np.mean(r['own']):.2f} | {np.mean(r['teacher']):.2f} | {np.mean(r['data']):.2f} |"
              for recipe, r in ratios.items()]
    print_and_write(lines, args.out)


if __name__ == "__main__":
    main()
