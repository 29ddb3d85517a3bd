import math

import numpy as np
import pytest
import torch

from kdframe.data import read_dataset
from kdframe.plugins import registry
from kdframe.potential import Potential
from kdframe.schedule import make_schedule
from kdframe.training import LossTerm, Trainer, TrainSettings

SETTINGS = TrainSettings(batch_size=8, max_epochs=6, lr=3e-3, lr_patience=2, termination_patience=50,
                         regularisers={"smoothness": 1e-3})


def _trainer(ani_file, run_dir, settings=SETTINGS):
    data = read_dataset(ani_file, {"energy": "morse.energy", "forces": "morse.forces"})
    torch.manual_seed(0)
    model = Potential(registry().architectures["toy"], {"width": 8}, [1, 6, 7, 8])
    terms = [LossTerm("energy", "energy", make_schedule(1.0, "e")),
             LossTerm("forces", "forces", make_schedule({1: 10, 3: 5}, "f"))]
    return Trainer(model, terms, data.subset(np.arange(0, 40)), data.subset(np.arange(40, 48)), settings,
                   run_dir, seed=1, progress=False)


def test_training_lowers_the_loss(ani_file, tmp_path):
    trainer = _trainer(ani_file, tmp_path / "a")
    before = trainer.validate()
    trainer.fit()
    after = trainer.validate()
    assert after["valid_rmse[forces:forces]"] < before["valid_rmse[forces:forces]"]
    assert (tmp_path / "a" / "metrics.csv").read_text().count("\n") == 7


def test_training_split_errors_are_logged_per_epoch(ani_file, tmp_path):
    """With weights that do not move (lr ~ 0), the logged training RMSE is the RMSE over the training split."""
    settings = SETTINGS.model_copy(update={"lr": 1e-30, "max_epochs": 1, "dtype": "float64"})
    trainer = _trainer(ani_file, tmp_path / "still", settings)
    trainer.fit()
    on_train = trainer.validate(trainer.train_set)
    for name in ("energy:energy", "forces:forces"):
        logged = trainer.history[-1][f"train_rmse[{name}]"]
        assert logged == pytest.approx(on_train[f"valid_rmse[{name}]"], rel=1e-9)
        assert logged != pytest.approx(trainer.history[-1][f"valid_rmse[{name}]"], rel=1e-3)  # a different split
    assert "train_rmse[forces:forces]" in (tmp_path / "still" / "metrics.csv").read_text().splitlines()[0]


COSINE = SETTINGS.model_copy(update={"lr_schedule": "cosine", "lr_min": 1e-4})


@pytest.mark.parametrize("settings", [SETTINGS, SETTINGS.model_copy(update={"ema_decay": 0.9}), COSINE],
                         ids=["plain", "ema", "cosine"])
def test_resumed_run_ends_with_the_same_weights(ani_file, tmp_path, settings):
    straight = _trainer(ani_file, tmp_path / "straight", settings).fit()
    interrupted = _trainer(ani_file, tmp_path / "resumed", settings)
    interrupted.fit(stop_after=2)
    assert interrupted.epoch == 2
    resumed = _trainer(ani_file, tmp_path / "resumed", settings).fit()  # a new process would start like this
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_cosine_schedule_anneals_from_lr_to_lr_min_over_max_epochs(ani_file, tmp_path):
    trainer = _trainer(ani_file, tmp_path / "c", COSINE)
    trainer.fit()
    logged = [r["lr"] for r in trainer.history]
    expected = [1e-4 + (3e-3 - 1e-4) * (1 + np.cos(np.pi * e / 6)) / 2 for e in range(6)]
    assert logged == pytest.approx(expected, rel=1e-9)
    assert COSINE.record()["lr_schedule"] == "cosine" and "lr_schedule" not in SETTINGS.record()


def test_plateau_schedule_logs_the_rate_each_epoch_trained_at(ani_file, tmp_path):
    """The rate drops after an epoch that ends a plateau; that epoch itself trained at the old rate."""
    settings = SETTINGS.model_copy(update={"lr": 1e-7, "lr_patience": 1, "max_epochs": 4})  # gains < 1e-4: plateau
    trainer = _trainer(ani_file, tmp_path / "p", settings)
    trainer.fit()
    assert [r["lr"] for r in trainer.history] == pytest.approx([1e-7, 1e-7, 1e-7, 0.5e-7], rel=1e-9, abs=0)


def test_a_checkpoint_from_before_lr_schedule_resumes(ani_file, tmp_path):
    """Checkpoints written before ``lr_schedule`` existed keep the plateau rule's state under ``plateau``."""
    _trainer(ani_file, tmp_path / "old", SETTINGS.model_copy(update={"max_epochs": 1})).fit()
    path = tmp_path / "old" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["plateau"] = state.pop("lr_scheduler")
    torch.save(state, path)
    trainer = _trainer(ani_file, tmp_path / "old", SETTINGS.model_copy(update={"max_epochs": 2}))
    trainer.fit()
    assert [r["epoch"] for r in trainer.history] == [1, 2]


def test_lr_min_must_be_below_lr():
    with pytest.raises(ValueError, match=r"lr_min \(0.01\) must be below lr \(0.003\)"):
        TrainSettings(lr=3e-3, lr_min=1e-2, lr_schedule="cosine")


def test_missing_labels_are_masked_not_zero(tmp_path):
    from toy import write_ani_file

    write_ani_file(tmp_path / "m.h5", missing_every=2)
    data = read_dataset(tmp_path / "m.h5", {"energy": "morse.energy"})
    batch = data.batch(np.arange(4))
    term = LossTerm("energy", "energy", make_schedule(1.0, "e"))
    prediction = {"energy": torch.zeros(4, 1, dtype=torch.float64)}
    residual = term.residual(prediction, batch)
    assert residual.numel() == 2
    assert torch.allclose(residual, -batch.labels["energy"][1::2])


def test_unknown_regulariser_is_a_config_error(ani_file, tmp_path):
    from kdframe.errors import ConfigError

    settings = SETTINGS.model_copy(update={"regularisers": {"hierarchicality": 0.1}})
    with pytest.raises(ConfigError, match="training.regularisers.hierarchicality.*smoothness"):
        _trainer(ani_file, tmp_path / "r", settings).fit()


def test_per_atom_energy_loss_divides_by_the_atom_count(ani_file, tmp_path):
    """``energy_loss: per_atom`` compares energies per atom (a 150-atom box weighs as a small molecule)."""
    settings = SETTINGS.model_copy(update={"energy_loss": "per_atom", "max_epochs": 1})
    trainer = _trainer(ani_file, tmp_path / "pa", settings)
    total = _trainer(ani_file, tmp_path / "total").terms[0]
    energy = trainer.terms[0]
    assert energy.per_atom and energy.name == "energy/atom:energy" and trainer.monitor is energy
    batch = trainer.train_set.batch(np.array([0, 12, 24, 36]), ["energy"])  # four molecules
    prediction = {"energy": torch.zeros(4, 1, dtype=torch.float64)}
    counts = batch.atoms_per_conf().double()
    assert len(set(counts.tolist())) > 1  # molecules of different sizes: the division shows
    assert torch.allclose(energy.residual(prediction, batch), total.residual(prediction, batch) / counts)
    trainer.fit()
    assert "valid_rmse[energy/atom:energy]" in trainer.history[-1]
    with pytest.raises(ValueError, match="only an energy term"):
        LossTerm("forces", "forces", make_schedule(1.0, "f"), per_atom=True)


def test_a_stage_record_leaves_out_later_settings_at_their_default():
    """Stages trained before ``energy_loss`` existed still match their record; a changed value does not."""
    from kdframe.student import Model

    assert "energy_loss" not in SETTINGS.record()
    assert "ema_decay" not in SETTINGS.record() and "ema_decay" not in SETTINGS.model_copy(update={"ema_decay": 0}).record()
    assert SETTINGS.model_copy(update={"ema_decay": 0.99}).record()["ema_decay"] == 0.99
    assert SETTINGS.model_copy(update={"energy_loss": "per_atom"}).record()["energy_loss"] == "per_atom"
    # overrides inside a dumped block (multi-fidelity runs record their fidelities' blocks so)
    assert "energy_loss" not in Model(model={"architecture": "toy"}).model_dump()["training"]
    tuned = Model(model={"architecture": "toy"}, training={"energy_loss": "per_atom"})
    assert tuned.model_dump()["training"]["energy_loss"] == "per_atom"


def test_a_step_with_non_finite_gradients_is_skipped_and_named(ani_file, tmp_path, capsys):
    """A NaN gradient (e.g. 0 x inf in a double backward) would make every weight NaN from then on."""
    trainer = _trainer(ani_file, tmp_path / "nan", SETTINGS.model_copy(update={"max_epochs": 1}))
    name, param = trainer.named_params[0]
    steps, step = [], trainer.step
    trainer.step = lambda *args: (steps.append(1), step(*args))[1]
    param.register_hook(lambda grad: grad * float("nan") if len(steps) == 2 else grad)  # the second step's: NaN
    trainer.fit()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    err = capsys.readouterr().err
    assert f"epoch 1: 1 optimiser step(s) skipped, non-finite gradients of {name}" in err
    assert math.isfinite(trainer.history[0]["grad_norm_max"])  # the skipped step is not counted


def _norms_stepped(trainer):
    """The gradient norm over all weights at each optimiser step, as the optimiser sees it."""
    norms, step = [], trainer.optimizer.step

    def recording_step(*args, **kwargs):
        norms.append(float(torch.nn.utils.get_total_norm([p.grad for p in trainer.params if p.grad is not None])))
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    return norms


def test_gradient_norms_are_logged_per_epoch(ani_file, tmp_path):
    trainer = _trainer(ani_file, tmp_path / "g", SETTINGS.model_copy(update={"max_epochs": 2}))
    stepped = _norms_stepped(trainer)
    trainer.fit()
    last = trainer.history[-1]
    this_epoch = stepped[len(stepped) // 2:]  # 5 steps per epoch
    assert last["grad_norm_max"] == pytest.approx(max(this_epoch), rel=1e-6)
    assert last["grad_norm_median"] == pytest.approx(float(np.median(this_epoch)), rel=1e-6)
    assert "grad_norm_max" in (tmp_path / "g" / "metrics.csv").read_text().splitlines()[0]


def test_clip_grad_norm_caps_each_step_at_most_and_logs_the_norm_before(ani_file, tmp_path):
    still = SETTINGS.model_copy(update={"max_epochs": 1, "lr": 1e-30})  # both runs see the same gradients
    plain = _trainer(ani_file, tmp_path / "plain", still)
    unclipped = _norms_stepped(plain)
    plain.fit()
    cap = float(np.median(unclipped))
    clipped = _trainer(ani_file, tmp_path / "clip", still.model_copy(update={"clip_grad_norm": cap}))
    stepped = _norms_stepped(clipped)
    clipped.fit()
    assert stepped == pytest.approx([min(n, cap) for n in unclipped], rel=1e-4)
    assert clipped.history[0]["grad_norm_max"] == pytest.approx(max(unclipped), rel=1e-6)  # before clipping
    off = _trainer(ani_file, tmp_path / "off", still.model_copy(update={"clip_grad_norm": 0}))
    stepped_off = _norms_stepped(off)
    off.fit()
    assert stepped_off == pytest.approx(unclipped, rel=1e-6)
    assert "clip_grad_norm" not in SETTINGS.record() and "clip_grad_norm" not in off.settings.record()
    assert SETTINGS.model_copy(update={"clip_grad_norm": 10.0}).record()["clip_grad_norm"] == 10.0
    with pytest.raises(ValueError, match="clip_grad_norm"):
        TrainSettings(clip_grad_norm=-1)


def test_a_step_whose_gradient_norm_overflows_is_skipped(ani_file, tmp_path, capsys):
    """Every gradient finite, their norm inf (float32): clipping would zero them, Adam would still step."""
    trainer = _trainer(ani_file, tmp_path / "big", SETTINGS.model_copy(update={"max_epochs": 1, "clip_grad_norm": 1}))
    _, param = trainer.named_params[0]
    steps, step = [], trainer.step
    trainer.step = lambda *args: (steps.append(1), step(*args))[1]
    param.register_hook(lambda grad: torch.full_like(grad, 1e30) if len(steps) == 2 else grad)
    before = [p.detach().clone() for p in trainer.params]
    trainer.fit()
    assert "epoch 1: 1 optimiser step(s) skipped, non-finite gradients of the whole model" in capsys.readouterr().err
    assert math.isfinite(trainer.history[0]["grad_norm_max"]) and trainer.history[0]["grad_norm_max"] < 1e30
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params))  # the other steps were applied


def test_weight_average_follows_the_ema_formula_with_warm_up():
    from kdframe.training.ema import WeightAverage

    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    average = WeightAverage([weight], decay=0.9)
    expected = weight.detach().clone()
    for t, value in enumerate([3.0, 5.0, -1.0, 0.5] + [2.0] * 30, 1):
        with torch.no_grad():
            weight.fill_(value)
        average.update()
        decay = min(0.9, (1 + t) / (10 + t))
        expected = decay * expected + (1 - decay) * weight.detach()
        assert torch.allclose(average.shadow[0], expected, rtol=0, atol=1e-12)
    with average.applied():
        assert torch.equal(weight.detach(), average.shadow[0])
    assert torch.equal(weight.detach(), torch.full((2,), 2.0, dtype=torch.float64))  # the trained ones are back


def test_with_ema_the_averaged_weights_are_validated_and_kept(ani_file, tmp_path):
    """The best weights are the average's at the best epoch, not the last trained ones, and they score as logged."""
    settings = SETTINGS.model_copy(update={"ema_decay": 0.9, "max_epochs": 3})
    trainer = _trainer(ani_file, tmp_path / "ema", settings)
    model = trainer.fit()
    trained = torch.load(tmp_path / "ema" / "checkpoint.pt", weights_only=True)["model"]
    assert any(not torch.equal(trained[k], v) for k, v in model.state_dict().items())
    best = min(trainer.history, key=lambda r: r["valid_rmse[energy:energy]"])
    assert trainer.validate()["valid_rmse[energy:energy]"] == pytest.approx(best["valid_rmse[energy:energy]"], rel=1e-6)


def test_a_skipped_step_leaves_the_average_alone(ani_file, tmp_path):
    trainer = _trainer(ani_file, tmp_path / "s", SETTINGS.model_copy(update={"ema_decay": 0.9, "max_epochs": 1}))
    _, param = trainer.named_params[0]
    param.register_hook(lambda grad: grad * float("nan"))  # every step's gradient is NaN
    trainer.fit()
    assert trainer.average.updates == 0
    assert _trainer(ani_file, tmp_path / "off", SETTINGS.model_copy(update={"ema_decay": 0})).average is None


def test_a_checkpoint_without_averaged_weights_does_not_resume_an_ema_run(ani_file, tmp_path):
    from kdframe.errors import RunStateError

    _trainer(ani_file, tmp_path / "r", SETTINGS.model_copy(update={"max_epochs": 1})).fit()
    with pytest.raises(RunStateError, match="no averaged weights in it .*training.ema_decay"):
        _trainer(ani_file, tmp_path / "r", SETTINGS.model_copy(update={"ema_decay": 0.9})).fit()
