"""The training loop shared by every workflow and architecture.

Adam; the learning rate is multiplied by ``lr_factor`` when the monitored validation
error has not improved for ``lr_patience`` epochs (``lr_schedule: plateau``), or follows a cosine from ``lr``
down to ``lr_min`` over ``max_epochs`` (``lr_schedule: cosine``); training stops after
``termination_patience`` epochs without improvement or at ``max_epochs``. A checkpoint
is written atomically every epoch and training resumes from it (the one before is kept as
``checkpoint.prev.pt``: a damaged checkpoint is passed over for it, with a note); the shuffle order (and
any fresh probe vectors) of epoch ``e`` depend only on (seed, e), so a resumed run ends
with the same weights. With ``ema_decay`` an exponential moving average of the weights (:mod:`.ema`) is
what is validated and kept as the best weights. ``clip_grad_norm`` caps each step's gradient norm; every epoch's
median and largest norm (before clipping) are logged beside the errors.

Under ``torchrun`` (see :mod:`kdframe.distributed`) ``batch_size`` stays the global batch: every rank
takes its shard of each batch of the same seeded shuffle, gradients are combined by one all-reduce
(weighted by each rank's share of the batch), validation errors are summed over ranks so every rank
takes the same learning-rate and termination decisions, and only rank 0 writes the checkpoint and
metrics. One process in a process group gives exactly the weights of a plain run.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import numpy as np
import pydantic
import torch
from tqdm import tqdm

from .. import distributed
from ..batch import Batch
from ..data.dataset import Dataset
from ..errors import ConfigError, RunStateError
from ..io import atomic_write, atomic_write_text, is_environment_error, make_dir, note, warn, write_error
from ..knowledge.base import KnowledgeSource
from ..potential import Potential, state_copy
from ..probes import ProbeSettings, batch_probes, fresh_rng
from ..teacher import Teacher
from .ema import WeightAverage
from .loss import CURVATURE, NEEDS_FORCES, LossTerm, rmse_mae

CHECKPOINT, PREVIOUS, METRICS = "checkpoint.pt", "checkpoint.prev.pt", "metrics.csv"


class TrainSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)  # lr: .inf would train on NaN

    batch_size: int = pydantic.Field(32, ge=1)
    max_epochs: int = pydantic.Field(400, ge=1)
    lr: float = pydantic.Field(1e-3, gt=0)
    lr_factor: float = pydantic.Field(0.5, gt=0, lt=1)
    lr_patience: int = pydantic.Field(20, ge=1)
    # "cosine": lr -> lr_min over max_epochs whatever the validation error does (an anneal to the end, which a
    # plateau rule on a few noisy validation energies may never reach); lr_factor and lr_patience then unused
    lr_schedule: Literal["plateau", "cosine"] = "plateau"
    lr_min: float = pydantic.Field(0.0, ge=0)
    termination_patience: int = pydantic.Field(40, ge=1)
    weight_l2: float = pydantic.Field(1e-4, ge=0)  # w_L2 on weight matrices (not biases)
    regularisers: dict[str, pydantic.NonNegativeFloat] = {}  # plugin regularisers by name, e.g. {hierarchicality: 0.1}
    dtype: Literal["float32", "float64"] = "float32"
    eval_batch_size: int = pydantic.Field(128, ge=1)
    # "per_atom": energy residuals divided by the atom count (boxes of hundreds of atoms beside small molecules)
    energy_loss: Literal["total", "per_atom"] = "total"
    # validate and keep an exponential moving average of the weights with this decay (MACE's --ema_decay, 0.99);
    # 0 or unset: off (0 switches off one block's inherited average)
    ema_decay: float | None = pydantic.Field(None, ge=0, lt=1)
    # rescale each step's gradient to at most this L2 norm over all weights (MACE's --clip_grad, 10); unset or 0: off
    # (0 switches off one block's inherited clipping)
    clip_grad_norm: float | None = pydantic.Field(None, ge=0)

    @pydantic.model_validator(mode="after")
    def _lr_min_below_lr(self) -> "TrainSettings":
        if self.lr_min >= self.lr:
            raise ValueError(f"lr_min ({self.lr_min:g}) must be below lr ({self.lr:g})")
        return self

    def record(self) -> dict:
        """The settings as a stage records them (:func:`without_later_defaults`)."""
        return without_later_defaults(self.model_dump())


# Settings added after runs were made, with the values that behave as before they existed.
ADDED_LATER = {"energy_loss": ("total",), "ema_decay": (0.0,), "lr_schedule": ("plateau",), "lr_min": (0.0,),
               "clip_grad_norm": (0.0,)}


def without_later_defaults(settings: dict, added_later: dict[str, tuple] = ADDED_LATER) -> dict:
    """``settings`` (a dump of TrainSettings or of its overrides, or of another block with its own ``added_later``)
    without the settings added later where they are unset (None) or at their old behaviour, so that the records of
    runs made before still match."""
    return {k: v for k, v in settings.items() if k not in added_later or v not in (None, *added_later[k])}


class _SquaredErrors:
    """Sums of squared residuals per loss term, combined over ranks into RMSEs."""

    def __init__(self, terms: Sequence[LossTerm]):
        self.sums = {t.name: [0.0, 0] for t in terms}

    def add(self, term: LossTerm, residual: torch.Tensor) -> None:
        pair = self.sums[term.name]
        pair[0] += float(residual.detach().pow(2).sum())
        pair[1] += residual.numel()

    def rmse(self, split: str) -> dict[str, float]:
        totals = distributed.sum_all([v for pair in self.sums.values() for v in pair])
        return {f"{split}_rmse[{name}]": math.sqrt(s / c) if c else math.nan
                for name, s, c in zip(self.sums, totals[::2], totals[1::2])}


def _as_set(term: LossTerm, settings: TrainSettings) -> LossTerm:
    """``term`` compared as the settings say (energies per configuration or per atom)."""
    if term.quantity != "energy":
        return term
    return dataclasses.replace(term, per_atom=term.per_atom or settings.energy_loss == "per_atom")


def _seed_for(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


class Trainer:
    def __init__(
        self,
        model: Potential,
        terms: Sequence[LossTerm],
        train: Dataset,
        valid: Dataset,
        settings: TrainSettings,
        run_dir: str | Path,
        seed: int = 0,
        device: str | torch.device = "cpu",
        monitor: LossTerm | None = None,
        online: Sequence[tuple[KnowledgeSource, Teacher]] = (),
        probes: Mapping[str, ProbeSettings] | None = None,
        progress: bool = True,
    ):
        """``online`` sources label every batch; ``probes`` names probe labels the trainer draws itself
        (fresh ones per minibatch; in validation always each configuration's fixed probe)."""
        distributed.init()
        self.dtype = getattr(torch, settings.dtype)
        self.model = model.to(device=device, dtype=self.dtype)
        terms = list(terms)
        self.terms = [_as_set(t, settings) for t in terms]
        self.monitor = self.terms[terms.index(monitor)] if monitor else self.terms[0]
        self.train_set, self.valid_set = train, valid
        self.settings, self.run_dir, self.seed, self.device = settings, Path(run_dir), seed, torch.device(device)
        self.online = list(online)
        self.probes = dict(probes or {})
        self.progress = progress and distributed.is_main()
        wanted = ({t.label for t in self.terms} | {t.probe for t in self.terms if t.probe}
                  | {t.confidence[0] for t in self.terms if t.confidence})
        self.labels = sorted(wanted - {s.label for s, _ in self.online} - set(self.probes))
        self.needs_forces = any(t.quantity in NEEDS_FORCES for t in self.terms)
        self.needs_curvature = any(t.quantity in CURVATURE for t in self.terms)
        self.needs_stress = any(t.quantity == "stress" for t in self.terms)
        self.params = self.model.trainable_weights()
        names = {id(p): name for name, p in self.model.named_parameters()}
        self.named_params = [(names.get(id(p), "?"), p) for p in self.params]
        self.skipped_steps: dict[tuple[str, ...], int] = {}  # this epoch's steps skipped for non-finite gradients
        self.grad_norms: list[float] = []  # this epoch's gradient norms, before any clipping
        self.optimizer = torch.optim.Adam(self.params, lr=settings.lr)
        self.average = WeightAverage(self.params, settings.ema_decay) if settings.ema_decay else None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau
        if settings.lr_schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=settings.max_epochs, eta_min=settings.lr_min)
        else:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=settings.lr_factor, patience=settings.lr_patience)
        self.epoch, self.best_metric, self.bad_epochs = 0, math.inf, 0
        self.best_state = state_copy(self.model)
        self.history: list[dict[str, float]] = []
        self._checkpoint_good = False  # checkpoint.pt is known to be readable (so it may become checkpoint.prev.pt)

    # --- one step ----------------------------------------------------------------------------
    def _regularisation(self, prediction: dict[str, torch.Tensor]) -> torch.Tensor:
        matrices = [p for p in self.params if p.dim() > 1]  # weights, not biases
        total = self.settings.weight_l2 * sum(p.pow(2).sum() for p in matrices)
        for name, weight in self.settings.regularisers.items():
            if f"regulariser:{name}" not in prediction:
                provided = [k.split(":", 1)[1] for k in prediction if k.startswith("regulariser:")]
                raise ConfigError(f"training.regularisers.{name}",
                                  f"architecture {self.model.architecture.name!r} has no such regulariser", provided)
            total = total + weight * prediction[f"regulariser:{name}"]
        return total

    def _prepare(self, batch: Batch, rngs: Mapping[str, np.random.Generator] | None = None) -> Batch:
        batch = batch.to(self.device, self.dtype)
        for label, settings in self.probes.items():
            batch.labels[label] = batch_probes(batch, settings, (rngs or {}).get(label))
        for source, teacher in self.online:
            batch.labels[source.label] = source.compute(teacher, batch)
        batch.positions.requires_grad_(self.needs_forces)
        return batch

    def _train_epoch(self, epoch: int) -> tuple[float, dict[str, float]]:
        """One pass over the training split: (mean loss, RMSE of every term under the weights of each step).

        The per-term RMSEs come from the residuals the loss already needs (a running estimate while the
        weights change, as Keras-style training logs report); a term weighted zero this epoch is still
        reported, except a curvature term, whose double backward would cost as much as training on it.
        """
        self.model.train()
        generator = torch.Generator().manual_seed(_seed_for(self.seed, epoch))
        key = (self.seed, epoch, distributed.rank()) if distributed.world_size() > 1 else (self.seed, epoch)
        rngs = {label: fresh_rng(settings, *key) for label, settings in self.probes.items()}
        weights = [t.weight(epoch) for t in self.terms]
        total, n = 0.0, 0
        squares = _SquaredErrors(self.terms)
        self.skipped_steps, self.grad_norms = {}, []
        for confs in self.train_set.batch_indices(self.settings.batch_size, True, generator):
            loss, count = self.step(confs, weights, rngs, squares)
            total, n = total + loss * count, n + count
        for names, steps in self.skipped_steps.items():
            warn(f"{self.run_dir.name}: epoch {epoch}: {steps} optimiser step(s) skipped, non-finite gradients of "
                 f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''}")
        total, n = distributed.sum_all([total, n])
        norms = np.array(self.grad_norms) if self.grad_norms else np.array([math.nan])
        return total / max(n, 1), {**squares.rmse("train"), "grad_norm_median": float(np.median(norms)),
                                   "grad_norm_max": float(norms.max())}

    def step(self, confs: np.ndarray, weights: Sequence[float], rngs: Mapping[str, np.random.Generator],
             squares: "_SquaredErrors") -> tuple[float, int]:
        """One optimiser step on the training configurations ``confs``: (loss, configurations on this rank)."""
        mine = distributed.shard(confs)  # all of it in a plain run
        self.optimizer.zero_grad(set_to_none=True)
        loss_value, count = 0.0, 0
        if len(mine):  # a short last batch may leave a rank nothing; it still joins the all-reduce
            batch = self._prepare(self.train_set.batch(mine, self.labels), rngs)
            prediction = self.model(batch, forces=self.needs_forces, create_graph=True, stress=self.needs_stress)
            loss = self._regularisation(prediction)
            for weight, term in zip(weights, self.terms):
                if not weight and term.quantity in CURVATURE:
                    continue
                r = term.residual(prediction, batch, create_graph=bool(weight))
                if weight and r.numel():
                    loss = loss + weight * sum(rmse_mae(term.weighted(r, batch)))
                squares.add(term, r)
            loss.backward()
            loss_value, count = float(loss.detach()), batch.n_conf
        distributed.combine_gradients(self.params, len(mine) / len(confs))
        norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        norm_value = float(norm)  # one device sync for the check and the log
        if not math.isfinite(norm_value):  # a NaN step would make the weights NaN for good; the same on every rank
            broken = [name for name, p in self.named_params if p.grad is not None and not torch.isfinite(p.grad).all()]
            key = tuple(broken) or ("the whole model (their norm overflows)",)
            self.skipped_steps[key] = self.skipped_steps.get(key, 0) + 1
            self.optimizer.zero_grad(set_to_none=True)
            return loss_value, count
        self.grad_norms.append(norm_value)
        if self.settings.clip_grad_norm:
            torch.nn.utils.clip_grads_with_norm_(self.params, self.settings.clip_grad_norm, norm)
        self.optimizer.step()
        if self.average:
            self.average.update()
        return loss_value, count

    def validate(self, dataset: Dataset | None = None) -> dict[str, float]:
        """Unweighted RMSE of every term on a dataset (the validation split by default), over all ranks."""
        dataset = self.valid_set if dataset is None else dataset
        self.model.eval()
        squares = _SquaredErrors(self.terms)
        for confs in dataset.batch_indices(self.settings.eval_batch_size):
            mine = distributed.shard(confs)
            if not len(mine):
                continue
            batch = self._prepare(dataset.batch(mine, self.labels))
            with torch.enable_grad() if self.needs_forces or self.needs_stress else torch.no_grad():
                prediction = self.model(batch, forces=self.needs_forces, create_graph=self.needs_curvature,
                                        stress=self.needs_stress)
                for term in self.terms:
                    squares.add(term, term.residual(prediction, batch))
        return squares.rmse("valid")

    # --- the loop ----------------------------------------------------------------------------
    def fit(self, stop_after: int | None = None) -> Potential:
        """Train (resuming from the checkpoint if present) and return the model with the best weights.

        ``stop_after`` ends this call after that many epochs, as an interruption would (tests).
        """
        make_dir(self.run_dir)
        self._resume()
        distributed.broadcast_module(self.model)  # every rank starts from rank 0's weights
        if self.average and not self.average.updates:  # ... and so does the average
            self.average = WeightAverage(self.params, self.average.decay)
        finished = self.bad_epochs >= self.settings.termination_patience
        epochs = range(self.epoch + 1, self.settings.max_epochs + 1 if not finished else self.epoch + 1)
        bar = tqdm(epochs, desc=self.run_dir.name, disable=not self.progress, leave=False,
                   initial=self.epoch, total=self.settings.max_epochs)
        for done, epoch in enumerate(bar, 1):
            start = time.perf_counter()
            train_loss, train_metrics = self._train_epoch(epoch)
            with self.average.applied() if self.average else nullcontext():  # the averaged weights are the model
                metrics = self.validate()
                monitored = metrics[f"valid_rmse[{self.monitor.name}]"]
                if monitored < self.best_metric:
                    self.best_metric, self.bad_epochs = monitored, 0
                    self.best_state = state_copy(self.model)
                else:
                    self.bad_epochs += 1
            lr = self.optimizer.param_groups[0]["lr"]  # this epoch's
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(monitored)
            else:
                self.scheduler.step()
            self.epoch = epoch
            self.history.append({"epoch": epoch, "lr": lr,
                                 "train_loss": train_loss, **metrics, **train_metrics,
                                 **{f"weight[{t.name}]": t.weight(epoch) for t in self.terms},
                                 "seconds": time.perf_counter() - start})
            if distributed.is_main():
                self._checkpoint()
            distributed.barrier()
            bar.set_postfix(loss=f"{train_loss:.4g}", valid=f"{monitored:.4g}")
            if self.bad_epochs >= self.settings.termination_patience or (stop_after and done >= stop_after):
                break
        bar.close()
        self.model.load_state_dict(self.best_state)
        return self.model

    def _checkpoint(self) -> None:
        state = {"epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "lr_scheduler": self.scheduler.state_dict(), "best_metric": self.best_metric,
                 "bad_epochs": self.bad_epochs, "best_state": self.best_state, "history": self.history}
        if self.average:
            state["ema"] = self.average.state_dict()
        current = self.run_dir / CHECKPOINT
        if self._checkpoint_good and current.is_file():  # keep the last good one (a damaged one is overwritten)
            try:
                current.replace(self.run_dir / PREVIOUS)
            except OSError as exc:
                if not is_environment_error(exc):
                    raise
                raise write_error(self.run_dir / PREVIOUS, exc) from None
        atomic_write(current, lambda f: torch.save(state, f))
        self._checkpoint_good = True
        buffer = io.StringIO()
        columns = list(dict.fromkeys(k for record in self.history for k in record))  # a resumed older run may lack some
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_text(self.run_dir / METRICS, buffer.getvalue())

    def _resume(self) -> None:
        """Continue from ``checkpoint.pt``, or from ``checkpoint.prev.pt`` when that one is damaged (with a note).

        A checkpoint that cannot be read or does not fit this model (another width, another architecture) and no
        good one before it is a :class:`~kdframe.io.RunStateError` naming the file; nothing is written.
        """
        current = self.run_dir / CHECKPOINT
        failed: list[tuple[Path, str]] = []
        for path in (current, self.run_dir / PREVIOUS):
            if not path.is_file():
                continue
            try:
                state = torch.load(path, map_location=self.device, weights_only=True)
            except Exception as exc:  # noqa: BLE001 - a truncated or foreign file, whatever torch raises
                if is_environment_error(exc):
                    raise
                failed.append((path, f"not a readable checkpoint, truncated or damaged: {_first_sentence(exc)}"))
                continue
            try:
                self._restore(state)
            except Exception as exc:  # noqa: BLE001 - a checkpoint of another model or another kdframe
                failed.append((path, f"it does not fit this stage's model: {_first_sentence(exc)}"))
                continue
            self._checkpoint_good = path == current
            if failed:
                note(f"{failed[0][0]}: {failed[0][1]}; resumed from {path.name} (epoch {self.epoch}) instead")
            return
        if failed:
            path, why = failed[0]
            raise RunStateError(f"{path}: cannot resume training from it ({why}); delete the folder {self.run_dir} "
                                "to train this stage again, or use a new run_dir")

    def _restore(self, state: object) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"holds a {type(state).__name__}, not a kdframe checkpoint")
        scheduler = state.get("lr_scheduler", state.get("plateau"))  # "plateau": written before lr_schedule existed
        missing = [k for k in ("epoch", "model", "optimizer", "best_metric", "bad_epochs", "best_state", "history")
                   if k not in state] + (["lr_scheduler"] if scheduler is None else [])
        if missing:
            raise KeyError(f"no {', '.join(missing)} in it")
        if self.average and "ema" not in state:
            raise KeyError("no averaged weights in it (it was trained without training.ema_decay)")
        self.model.load_state_dict(state["best_state"])  # the best weights must fit as well ...
        self.model.load_state_dict(state["model"])  # ... and training continues from the last ones
        if self.average:
            self.average.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(scheduler)
        self.epoch, self.best_metric, self.bad_epochs = state["epoch"], state["best_metric"], state["bad_epochs"]
        self.best_state, self.history = state["best_state"], state["history"]


def _first_sentence(exc: BaseException) -> str:
    """An exception's message, on one line, up to its first full stop (torch's run on for several sentences)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]  # the first mismatch says it
    text = " ".join(" ".join(lines).split()) or type(exc).__name__
    if isinstance(exc, KeyError) and text[:1] in "'\"":
        text = text[1:-1]
    head, dot, _ = text.partition(". ")
    return (head + ("." if dot else "")).rstrip(".")
