"""One, two and three levels of theory in one multi-fidelity model, over seeds (issue 25); EKD on the same data.

    python benchmarks/multifidelity_levels.py --configs sf_cc mf2 mf3_pool mf3 --seeds 0 1 2

Each config of ``configs/multifidelity/levels/`` runs at each seed in its own run_dir
(``runs/multifidelity/levels/NAME_seedS``; a finished run is reused). The CC head (an EKD student's only head) is
scored (E and dE against CCSD(T), F against wB97X) on the seed's test split and on the extensibility set. Writes
mean ± std over seeds and each config's ratio of means to the first config's (the baseline).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, provenance  # noqa: E402

from kdframe.io import atomic_write_text  # noqa: E402
from kdframe.potential import Potential  # noqa: E402
from kdframe.workflows.base import Run, Scored, load_config  # noqa: E402

CONFIGS = ROOT / "configs" / "multifidelity" / "levels"
COLUMNS = {"E": "E rmse (kcal/mol)", "dE": "dE rmse (kcal/mol)", "F": "F rmse (kcal/mol/Å)"}


def scores(name: str, seed: int, run_root: Path) -> dict[str, dict[str, float]]:
    """set -> column -> RMSE of the evaluated head of config ``name`` trained at ``seed``."""
    path = CONFIGS / f"{name}.yaml"
    workflow, config = load_config(path)
    config = config.model_copy(update={"seed": seed, "run_dir": str(run_root / f"{name}_seed{seed}")})
    # a multi-fidelity model scored at its evaluated head; an EKD run (ekd.yaml) at its student's one head
    stage, head = ("potential", config.evaluate_head) if hasattr(config, "evaluate_head") else ("student", None)
    with Run(config, path, workflow, progress=False) as run:
        workflow.run(run)
        model = Potential.load(Path(config.run_dir) / stage / "model.pt").to(run.device)
        return {s: {k: by_model[stage].values.get(c, np.nan) for k, c in COLUMNS.items()}
                for s, by_model in run.scores({stage: Scored(model, head)}).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["sf_cc", "mf2", "mf3_pool", "mf3"],
                        help="names in configs/multifidelity/levels; the first is the baseline of the ratios")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--run-root", type=Path, default=ROOT / "runs" / "multifidelity" / "levels")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "multifidelity_levels.md")
    args = parser.parse_args()
    for name in args.configs:  # every config (and its files) is valid before hours of training
        load_config(CONFIGS / f"{name}.yaml")
    results = {name: [scores(name, seed, args.run_root) for seed in args.seeds] for name in args.configs}
    sets = list(results[args.configs[0]][0])
    rows, ratios = [], []
    for set_name in sets:
        base = {k: np.mean([r[set_name][k] for r in results[args.configs[0]]]) for k in COLUMNS}
        for name, runs in results.items():
            values = {k: [r[set_name][k] for r in runs] for k in COLUMNS}
            rows.append(f"| {set_name} | {name} | " + " | ".join(
                f"{np.mean(v):.2f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.2f}" for v in values.values()) + " |")
            ratios.append(f"| {set_name} | {name} | " + " | ".join(
                f"{np.mean(values[k]) / base[k]:.2f}" for k in COLUMNS) + " |")
            print(rows[-1], flush=True)
    per_seed = "\n".join(f"| {name} | {seed} | {s} | " + " | ".join(f"{r[s][k]:.2f}" for k in COLUMNS) + " |"
                         for name, runs in results.items() for seed, r in zip(args.seeds, runs) for s in sets)
    atomic_write_text(args.out, f"""# Multi-fidelity: one, two and three levels of theory

- command: `{command_line()}`
- {provenance('cpu')}
- configs: `configs/multifidelity/levels/` ({', '.join(args.configs)}); the CC head (EKD: the student) scored: E and dE
  (conformer energy differences within a molecule) against CCSD(T)/cc-pVDZ, F against wB97X/6-31G*; kcal/mol and
  kcal/mol/Å.
  Test split: each seed's own (10 % of the pool's configurations); extensibility: 32 conformers of 10 larger molecules.

## Mean ± sample std over seeds {', '.join(map(str, args.seeds))}

| set | config | E | dE | F |
|---|---|---|---|---|
{chr(10).join(rows)}

## Ratio of means to {args.configs[0]}

| set | config | E | dE | F |
|---|---|---|---|---|
{chr(10).join(ratios)}

## Per seed

| config | seed | set | E | dE | F |
|---|---|---|---|---|---|
{per_seed}
""")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
