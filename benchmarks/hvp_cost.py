"""Training cost of curvature: epoch time of E-F vs E-F-HVP vs E-F-H (methods.md §4), and the errors they reach.

Per architecture, three seeded copies of one model train on the same data, batch size and E/F weights;
E-F-HVP adds H·v along one fresh Rademacher probe per configuration and minibatch, E-F-H the full
Hessian (3 x max_atoms HVPs per minibatch). Epochs are interleaved so machine noise hits all alike;
after them each model's force and Hessian RMSE on held-out configurations is reported. Writes markdown.

    python benchmarks/hvp_cost.py --data bundled:hessian_small.h5 --epochs 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from kdframe.config import resolve_path
from kdframe.data import read_dataset
from kdframe.data.splits import split
from kdframe.evaluation import evaluate
from kdframe.probes import ProbeSettings
from kdframe.schedule import Constant
from kdframe.training import LossTerm

from common import interleaved_epochs, kdframe_epoch, write_epoch_report

HYPER = {
    "hippynn": {"l_max": 0, "n_interaction_layers": 1, "n_atom_layers": 2, "width": 32, "n_sensitivities": 16},
    "torchani": {"hidden": [64, 48]},
    "mace": {"r_max": 5.0, "channels": 16, "max_L": 1, "correlation": 2, "num_interactions": 2, "dtype": "float32"},
}
EF = [LossTerm("energy", "energy", Constant(1.0)), LossTerm("forces", "forces", Constant(10.0))]
MODES = {"E-F": EF, "E-F-HVP": [*EF, LossTerm("hvp", "hessian", Constant(1.0), probe="hessian:probe")],
         "E-F-H": [*EF, LossTerm("hessian", "hessian", Constant(1.0))]}
PROBES = {"hessian:probe": ProbeSettings(kind="rademacher", regime="fresh")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="bundled:hessian_small.h5")
    parser.add_argument("--method", default="xtb", help="label prefix: <method>.energy/.forces/.hessian")
    parser.add_argument("--architectures", nargs="+", default=["hippynn", "torchani"], choices=sorted(HYPER))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20, help="timed epochs per model (after one warm-up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "hvp_cost.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    keys = {q: f"{args.method}.{q}" for q in ("energy", "forces", "hessian")}
    data = read_dataset(resolve_path(args.data, Path.cwd()), keys)
    parts = split(data, {"train": 0.8, "valid": 0.05, "test": 0.15}, 0, "configuration")
    train, test = data.subset(parts["train"]), data.subset(parts["test"])
    timing, errors = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.architectures:
            runners = {f"{arch} {mode}": kdframe_epoch(arch, HYPER[arch], train, args.batch_size, args.device,
                                                       f"{tmp}/{arch}-{mode}", terms=terms, probes=PROBES)
                       for mode, terms in MODES.items()}
            times = interleaved_epochs(runners, args.epochs, args.device)
            med = {name.split(" ", 1)[1]: statistics.median(t) for name, t in times.items()}
            timing.append((arch, med, times))
            for name, run in runners.items():
                m = evaluate(run.trainer.model, test, "energy", "forces", device=args.device, hessian_label="hessian")
                errors.append(f"| {name} | " + " | ".join(f"{m.values[k]:.2f}" for k in (
                    "E rmse (kcal/mol)", "F rmse (kcal/mol/Å)", "H rmse (kcal/mol/Å²)")) + " |")
    ratios = "\n".join(f"| {arch} | {med['E-F']:.3f} | {med['E-F-HVP']:.3f} | {med['E-F-H']:.3f} | "
                       f"{med['E-F-HVP'] / med['E-F']:.2f} | {med['E-F-H'] / med['E-F']:.2f} | "
                       f"**{med['E-F-H'] / med['E-F-HVP']:.2f}** |" for arch, med, _ in timing)
    sizes = np.unique(data.n_atoms)
    summary = f"""| architecture | E-F s/epoch | E-F-HVP s/epoch | E-F-H s/epoch | HVP / E-F | H / E-F | H / HVP |
|---|---|---|---|---|---|---|
{ratios}

Medians of {args.epochs} interleaved epochs after one warm-up. E-F-H takes 3 x (largest molecule's atoms)
= {3 * sizes.max()} HVPs per minibatch, E-F-HVP one, so the H / HVP ratio grows with molecule size
(methods.md: >24x on larger molecules); these have {sizes.min()}-{sizes.max()} atoms.

Held-out errors after {args.epochs + 1} epochs each (equal epochs, not converged; kcal/mol, kcal/mol/Å, kcal/mol/Å²):

| run | E rmse | F rmse | H rmse |
|---|---|---|---|
{chr(10).join(errors)}"""
    details = (f"data: {len(train)} training configurations ({len(data.molecule_names)} molecules of {sizes.min()}-"
               f"{sizes.max()} atoms), {len(test)} held out; loss RMSE + MAE, weights E 1, F 10, HVP / H 1; one fresh "
               f"Rademacher probe per configuration; models: {'; '.join(f'{a} {HYPER[a]}' for a in args.architectures)}")
    all_times = {name: t for _, _, times in timing for name, t in times.items()}
    text = write_epoch_report(args, "hvp_cost.py", "Epoch cost of curvature: E-F vs E-F-HVP vs E-F-H", details, "run",
                              all_times, summary)
    print(text)


if __name__ == "__main__":
    main()
