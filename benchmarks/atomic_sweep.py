"""Atomic-energy distillation over seeds, against cost (issue 25; methods.md §2).

    python benchmarks/atomic_sweep.py --configs hipnn_dft torchani_dft --seeds 0 1 2

Each config of ``configs/atomic/`` runs at each seed: at its own seed in its own run_dir (so ``kdframe run`` of the
config is that seed's run), at other seeds in ``RUN_DIR_seedS``; a finished run is reused, so seeds can be trained
in parallel processes (``--seeds 1``, ``--seeds 2``) and gathered by a last call with all of them. Every model
(teacher, students, controls, Born-Again) is scored on the test split and the extensibility set. Time and peak
memory per atom of one energy + forces call on a periodic box of small molecules (1 thread; memory in a fresh
process) are measured once per model, on the first seed's (the cost depends on the architecture, not the weights).
Writes mean ± std over seeds, the force error against trainable weights, time per atom and memory per atom in one
Pareto figure, and validation learning curves (mean over seeds).
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, provenance  # noqa: E402
from run import PRETRAINED, SPACING, energy_and_forces, molecular_box, peak_memory, time_per_call  # noqa: E402

from kdframe.io import atomic_write_text  # noqa: E402
from kdframe.potential import Ensemble, Potential  # noqa: E402
from kdframe.report import plt, save_figure  # noqa: E402
from kdframe.units import EV_TO_KCAL_MOL  # noqa: E402
from kdframe.workflows.base import Run, load_config  # noqa: E402
from kdframe.workflows.sweep import FORCE_COLUMN, STYLE, read_curve, weights_of  # noqa: E402

CONFIGS = ROOT / "configs" / "atomic"
MODEL, METRICS = "model.pt", "metrics.csv"
COLUMNS = {"E": "E rmse (kcal/mol)", "dE": "dE rmse (kcal/mol)", "F": "F rmse (kcal/mol/Å)"}
SETS = ("test", "extensibility")
STAGE = re.compile(r"(teacher|student|control|born_again)(?:_(\d+))?$")
LINES = ["-", ":", "-.", "--"]  # one per config, repeated beyond four


@dataclass
class Model:
    """One stage of a config (teacher, student_2, ...): its scores per seed and its cost."""
    config: str
    stage: str
    n_weights: int = 0
    scores: list[dict[str, dict[str, float]]] = field(default_factory=list)  # per seed: set -> column -> RMSE
    curves: list[tuple[list[int], list[float]]] = field(default_factory=list)  # per seed: validation F by epoch
    cost: tuple[float, float] = (np.nan, np.nan)  # µs and peak KiB per atom
    first: Potential | Ensemble | None = None  # the first seed's model, whose cost is measured
    path: str | None = None  # its file, pretrained:NAME for a pretrained teacher (None: teachers' files, unmeasured)

    @property
    def order(self) -> tuple:
        """Teacher, Born-Again, then student and control of each size."""
        kind, index = STAGE.match(self.stage).groups()
        return self.config, kind not in ("teacher", "born_again"), kind == "born_again", int(index or 0), kind

    @property
    def kind(self) -> str:
        return STAGE.match(self.stage).group(1).replace("_", "-")

    def mean_std(self, set_name: str, column: str) -> tuple[float, float]:
        values = [s[set_name][column] for s in self.scores]
        return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def run_dir_of(config, seed: int) -> str:
    return config.run_dir if seed == config.seed else f"{config.run_dir}_seed{seed}"


def train_and_score(name: str, seed: int, models: dict[tuple[str, str], Model]) -> None:
    """Run config ``name`` at ``seed`` (or reuse it) and add every stage's scores to ``models``."""
    path = CONFIGS / f"{name}.yaml"
    workflow, config = load_config(path)
    config = config.model_copy(update={"seed": seed, "run_dir": run_dir_of(config, seed)})
    with Run(config, path, workflow, progress=False) as run:
        workflow.run(run)
        stages = sorted(d.name for d in run.dir.iterdir() if STAGE.match(d.name) and (d / MODEL).is_file())
        loaded = {stage: Potential.load(run.dir / stage / MODEL) for stage in stages}
        if "teacher" not in loaded:  # a pretrained ensemble, aligned to this seed's training split as the run does
            loaded["teacher"] = config.teacher.ensemble(run, "teacher", "teacher", seed)
        results = run.scores(loaded)
        for stage, model in loaded.items():
            path = (str(run.dir / stage / MODEL) if stage in stages
                    else f"{PRETRAINED}{config.teacher.pretrained}" if config.teacher.pretrained else None)
            entry = models.setdefault((name, stage), Model(name, stage, weights_of(model), first=model, path=path))
            entry.scores.append({s: {k: by_model[stage].values[c] for k, c in COLUMNS.items()}
                                 for s, by_model in results.items()})
            epochs, values = read_curve(run.dir / stage / METRICS, FORCE_COLUMN.format(split="valid"))
            entry.curves.append((epochs, [v * EV_TO_KCAL_MOL for v in values]))


def measure_cost(model: Model, atoms, repeats: int) -> tuple[float, float]:
    """µs and peak KiB per atom of one energy + forces call of ``model``'s first seed on ``atoms`` (CPU, 1 thread)."""
    cpu = torch.device("cpu")
    seconds = time_per_call(energy_and_forces(model.first.to(cpu).eval(), atoms, cpu), cpu, repeats)
    memory = peak_memory(model.path, len(atoms), SPACING, True, cpu) if model.path else np.nan
    return seconds / len(atoms) * 1e6, memory / len(atoms) / 1024


def pareto_figure(path: Path, models: list[Model], sets: Sequence[str]) -> Path:
    """Force RMSE (mean ± std over seeds) against trainable weights, µs per atom and KiB per atom; a row per set."""
    fig, axes = plt.subplots(len(sets), 3, figsize=(13, 3.6 * len(sets)), sharex="col", squeeze=False)
    configs = sorted({m.config for m in models})
    x_axes = (("trainable weights", lambda m: m.n_weights), ("µs per atom (energy + forces)", lambda m: m.cost[0]),
              ("peak KiB per atom", lambda m: m.cost[1]))
    for row, set_name in zip(axes, sets):
        for ax, (x_label, x_of) in zip(row, x_axes):
            for config, ls in zip(configs, itertools.cycle(LINES)):
                for kind, (colour, marker) in STYLE.items():
                    chosen = sorted((m for m in models if m.config == config and m.kind == kind
                                     and np.isfinite(x_of(m))), key=x_of)
                    if not chosen:
                        continue
                    y = np.array([m.mean_std(set_name, "F") for m in chosen])
                    ax.errorbar([x_of(m) for m in chosen], y[:, 0], yerr=y[:, 1], color=colour, marker=marker,
                                ls=ls if len(chosen) > 1 else "", capsize=2, label=f"{config}: {kind}")
            ax.set_xscale("log")
            ax.set_xlabel(x_label)
        row[0].set_ylabel(f"{set_name} force RMSE (kcal/mol/Å)")
    axes[0][-1].legend(fontsize=6)
    return save_figure(fig, path)


def learning_curves(path: Path, models: list[Model]) -> Path:
    """Validation force RMSE by epoch, mean over the seeds that reached that epoch; one panel per config."""
    configs = sorted({m.config for m in models})
    fig, axes = plt.subplots(1, len(configs), figsize=(5.2 * len(configs), 3.8), sharey=True, squeeze=False)
    for ax, config in zip(axes[0], configs):
        for m in (m for m in models if m.config == config):
            length = min(len(epochs) for epochs, _ in m.curves)
            if not length:  # a pretrained teacher
                continue
            mean = np.mean([values[:length] for _, values in m.curves], axis=0)
            ax.plot(m.curves[0][0][:length], mean, color=STYLE[m.kind][0], lw=1,
                    ls="--" if m.kind == "control" else "-", label=m.stage)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(config, fontsize=9)
        ax.legend(fontsize=6, ncol=2)
    axes[0][0].set_ylabel("validation force RMSE (kcal/mol/Å)")
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["hipnn_dft", "torchani_dft"], help="names in configs/atomic")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--atoms", type=int, default=1000, help="size of the periodic box the cost is measured on")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-only", action="store_true", help="train (or reuse) the runs, write nothing")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "atomic_sweep.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.configs:  # every config (and its files) is valid before hours of training
        load_config(CONFIGS / f"{name}.yaml")
    models: dict[tuple[str, str], Model] = {}
    for name in args.configs:
        for seed in args.seeds:
            train_and_score(name, seed, models)
    if args.train_only:
        return
    box = molecular_box(args.atoms, spacing=SPACING, periodic=True)
    models = dict(sorted(models.items(), key=lambda item: item[1].order))
    for model in models.values():
        model.cost = measure_cost(model, box, args.repeats)
    rows = []
    for model in models.values():
        cells = [f"{model.mean_std(s, c)[0]:.2f} ± {model.mean_std(s, c)[1]:.2f}"
                 for s in SETS for c in COLUMNS]
        rows.append(f"| {model.config} | {model.stage} | {model.n_weights:,} | {model.cost[0]:.1f} | "
                    f"{model.cost[1]:.1f} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    per_seed = "\n".join(f"| {m.config} | {m.stage} | {seed} | " + " | ".join(
        f"{scores[s][c]:.2f}" for s in SETS for c in COLUMNS) + " |"
        for m in models.values() for seed, scores in zip(args.seeds, m.scores))
    stem = args.out.with_suffix("")
    figures = [pareto_figure(stem.parent / f"{stem.name}_pareto.png", list(models.values()), SETS),
               learning_curves(stem.parent / f"{stem.name}_curves.png", list(models.values()))]
    atomic_write_text(args.out, f"""# Atomic-energy distillation: students, controls, Born-Again over seeds

- command: `{command_line()}`
- {provenance('cpu')}
- configs: `configs/atomic/` ({', '.join(args.configs)}); seeds {', '.join(map(str, args.seeds))}. E, dE (conformer
  energy differences within a molecule) and F RMSE (kcal/mol, kcal/mol/Å) against the data's labels, mean ± sample
  std over seeds; ext.: the extensibility set (larger molecules than any trained on). Cost: one energy + forces call on
  a periodic box of {len(box):,} atoms (bundled molecules on a {SPACING} Å grid), median of {args.repeats} after a
  warm-up, 1 thread; peak memory added by the call in a fresh process (VmHWM - VmRSS); models of seed
  {args.seeds[0]}.

| config | model | trainable weights | µs / atom | peak KiB / atom | test E | test dE | test F | ext. E | ext. dE | ext. F |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{' '.join(f'![{p.stem}]({p.name})' for p in figures)}

## Per seed

| config | model | seed | test E | test dE | test F | ext. E | ext. dE | ext. F |
|---|---|---|---|---|---|---|---|---|
{per_seed}
""")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
