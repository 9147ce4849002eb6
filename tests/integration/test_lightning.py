"""A Lightning fit with the one-line callback: its series, setup and findings arrive on a real
server, including the clipping Lightning applies and the pre-clip norm it hides."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import trickscope
from tests.helpers import LiveServer, import_or_skip
from trickscope._incidents import Incidents

L = import_or_skip("lightning")
from trickscope.integrations.lightning import TrickscopeCallback  # noqa: E402

MAX_STEPS = 12  # optimizer steps; two micro-batches each
ACCUMULATE = 2
CLIP = 1e-3  # far below the gradient norm: clipped on every step


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class Regressor(L.LightningModule):
    """A tiny MLP with AdamW and a per-step linear warmup, logging train and validation loss."""

    def __init__(self, lr: float = 0.01, hidden: int = 16, fail_at: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        if self.hparams.fail_at is not None and self.global_step >= self.hparams.fail_at:
            raise RuntimeError("the data loader broke")
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> None:
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=4)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}


def loaders() -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)
    data = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True) * 10)
    return (
        torch.utils.data.DataLoader(data, batch_size=8),
        torch.utils.data.DataLoader(data, batch_size=32),
    )


def quiet_trainer(tmp_path: Path, callback: Any, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "max_steps": MAX_STEPS,
        "accumulate_grad_batches": ACCUMULATE,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
        "accelerator": "cpu",
        "num_sanity_val_steps": 1,
        **kwargs,
    }
    return L.Trainer(callbacks=[callback], **options)


def points(server: LiveServer, run_id: str, name: str) -> dict[str, list[Any]]:
    return get_json(f"{server.url}/api/v1/runs/{run_id}/points?name={name}")


def test_fit_streams_series_setup_and_the_clipping_finding(
    live_server: LiveServer, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    callback = TrickscopeCallback(project="lightning", url=live_server.url, every=1, hist_every=0)
    train, val = loaders()
    trainer = quiet_trainer(tmp_path, callback, gradient_clip_val=CLIP)
    model = Regressor()
    trainer.fit(model, train, val)
    run_id = callback.run.id
    assert callback.run.status == "finished"
    trainer.validate(model, val)  # after the fit: nothing more is sent, nothing fails
    assert callback.run.id == run_id and not callback.run.incidents.by_kind

    run = get_json(f"{live_server.url}/api/v1/runs/{run_id}")
    assert run["status"] == "finished"
    assert run["config"]["lr"] == 0.01 and run["config"]["hidden"] == 16
    settings = run["config"]["lightning"]
    assert settings["accumulate_grad_batches"] == ACCUMULATE
    assert settings["gradient_clip_val"] == CLIP
    assert settings["precision"] == "32-true"
    assert settings["lr_schedulers"] == [{"class": "LinearLR", "interval": "step", "frequency": 1}]
    assert run["setup"]["scheduler"]["class"] == "LinearLR"
    assert run["setup"]["scheduler"]["warmup_steps"] == 4
    assert run["setup"]["planned_steps"] == MAX_STEPS
    assert run["setup"]["optimizer"]["class"] == "AdamW"

    # self.log's values: once per optimizer step, at that step; validation after each epoch
    # (4 optimizer steps), not during the sanity check.
    assert points(live_server, run_id, "train/loss")["step"] == list(range(MAX_STEPS))
    assert points(live_server, run_id, "val/loss")["step"] == [3, 7, 11]

    lr = points(live_server, run_id, "lr/group0")
    assert lr["value"][0] == pytest.approx(0.001) and lr["value"][-1] == pytest.approx(0.01)
    layer = points(live_server, run_id, "grad_norm/net.0.weight")
    assert layer["step"] == list(range(MAX_STEPS))

    # watch sees the gradients after Lightning's clipping, and the pre-clip norm beside them.
    post = points(live_server, run_id, "grad_norm/total")["value"]
    pre = points(live_server, run_id, "clip/pre_norm")["value"]
    measured = points(live_server, run_id, "grad_norm/total_preclip")["value"]
    assert len(pre) == len(post) == len(measured) == MAX_STEPS
    assert all(p == pytest.approx(CLIP, rel=1e-3) for p in post)
    assert all(m > 100 * CLIP for m in pre)
    assert measured == pytest.approx(pre, rel=1e-3)
    assert points(live_server, run_id, "clip/observed")["value"] == [1.0] * MAX_STEPS
    assert points(live_server, run_id, "clip/clipped")["value"] == [1.0] * MAX_STEPS
    passes = points(live_server, run_id, "accum/backward_passes")["value"]
    assert passes == [float(ACCUMULATE)] * MAX_STEPS

    report = get_json(f"{live_server.url}/api/v1/runs/{run_id}/health")
    clipping = [f for f in report["findings"] if f["check"] == "clipping-always"]
    assert clipping and clipping[0]["evidence"]["threshold"] == CLIP, report["findings"]


class EpochLogger(Regressor):
    """Logs at epoch ends too: an epoch mean of ``training_step``'s loss, and values of its own
    in ``on_train_epoch_end`` and ``on_validation_epoch_end`` (the sanity check's included)."""

    def __init__(self) -> None:
        super().__init__()
        self.micro_losses: list[torch.Tensor] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        loss = super().training_step(batch, index)
        self.log("train/loss_mean", loss, on_step=False, on_epoch=True)
        self.micro_losses.append(loss.detach())
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/epoch", torch.tensor(float(self.current_epoch)))

    def on_validation_epoch_end(self) -> None:
        sanity = self.trainer.sanity_checking
        self.log("val/epoch", torch.tensor(-1.0 if sanity else float(self.current_epoch)))


def test_values_logged_at_epoch_ends_arrive_at_the_global_step(
    live_server: LiveServer, tmp_path: Path
) -> None:
    callback = TrickscopeCallback(project="lightning", url=live_server.url, every=1, hist_every=0)
    train, val = loaders()
    model = EpochLogger()
    trainer = quiet_trainer(tmp_path, callback)
    trainer.fit(model, train, val)  # 3 epochs of 4 optimizer steps
    run_id = callback.run.id
    assert callback.run.status == "finished" and not callback.run.incidents.by_kind
    assert "log_metrics" not in vars(trainer._logger_connector)  # Lightning's own again

    epoch_ends = [3, 7, 11]  # the last optimizer step of each epoch
    assert points(live_server, run_id, "train/loss")["step"] == list(range(MAX_STEPS))
    # Logged in the LightningModule's on_train_epoch_end: after every callback's hook.
    assert points(live_server, run_id, "train/epoch")["step"] == epoch_ends
    assert points(live_server, run_id, "train/epoch")["value"] == [0.0, 1.0, 2.0]
    # on_validation_epoch_end's, never the sanity check's.
    assert points(live_server, run_id, "val/epoch")["step"] == epoch_ends
    assert points(live_server, run_id, "val/epoch")["value"] == [0.0, 1.0, 2.0]
    # training_step's on_epoch=True value: the mean of the epoch's 8 micro-batches.
    means = points(live_server, run_id, "train/loss_mean")
    per_epoch = len(model.micro_losses) // len(epoch_ends)
    expected = [
        torch.stack(model.micro_losses[i * per_epoch : (i + 1) * per_epoch]).mean().item()
        for i in range(len(epoch_ends))
    ]
    assert means["step"] == epoch_ends
    assert means["value"] == pytest.approx(expected, rel=1e-6)


def test_a_failure_reading_epoch_values_is_counted_and_lightning_logs_on(tmp_path: Path) -> None:
    from trickscope.integrations._lightning_logged import EpochValuesTap

    def refuse(values: dict[str, Any]) -> None:
        raise ValueError("cannot take these")

    class Tapping(L.Callback):
        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            self.tap = EpochValuesTap(trainer, refuse, incidents)

    incidents = Incidents()
    csv = L.pytorch.loggers.CSVLogger(tmp_path, name="csv")
    train, val = loaders()
    tapping = Tapping()
    trainer = L.Trainer(
        callbacks=[tapping], logger=csv, max_epochs=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        num_sanity_val_steps=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(EpochLogger(), train, val)
    tapping.tap.remove()
    # Once per epoch-level call (the training epoch's end, validation's end), never raised.
    assert incidents.by_kind == {"lightning epoch values": 2}
    logged = (Path(csv.log_dir) / "metrics.csv").read_text()
    assert "train/epoch" in logged and "val/epoch" in logged and "train/loss_mean" in logged


def test_an_exception_in_training_marks_the_run_failed(
    live_server: LiveServer, tmp_path: Path
) -> None:
    callback = TrickscopeCallback(project="lightning", url=live_server.url)
    train, val = loaders()
    with pytest.raises(RuntimeError, match="data loader broke"):
        quiet_trainer(tmp_path, callback).fit(Regressor(fail_at=3), train, val)
    assert callback.run.status == "failed"
    run = get_json(f"{live_server.url}/api/v1/runs/{callback.run.id}")
    assert run["status"] == "failed"
    assert points(live_server, callback.run.id, "train/loss")["step"] == [0, 1, 2]


def test_a_given_run_beside_lightnings_own_logger(live_server: LiveServer, tmp_path: Path) -> None:
    run = trickscope.init(project="lightning", url=live_server.url, config={"note": "mine"})
    csv = L.pytorch.loggers.CSVLogger(tmp_path, name="csv")
    train, val = loaders()
    trainer = quiet_trainer(
        tmp_path, TrickscopeCallback(run=run), logger=csv, log_every_n_steps=1, max_steps=4
    )
    trainer.fit(Regressor(), train, val)
    assert run.status is None  # the callback leaves a run it did not start to its owner
    run.finish()
    logged = (Path(csv.log_dir) / "metrics.csv").read_text()
    assert "train/loss" in logged
    stored = get_json(f"{live_server.url}/api/v1/runs/{run.id}")
    assert stored["config"]["note"] == "mine"
    assert stored["config"]["lightning"]["max_steps"] == 4
    assert points(live_server, run.id, "train/loss")["step"] == [0, 1, 2, 3]


@pytest.mark.slow
def test_the_example_runs_and_arrives(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runpy

    monkeypatch.setenv("TRICKSCOPE_URL", live_server.url)
    root = Path(__file__).resolve().parents[2]
    runpy.run_path(str(root / "examples" / "lightning_example.py"), run_name="__main__")
    (run,) = get_json(f"{live_server.url}/api/v1/runs?project=examples")["runs"]
    assert run["status"] == "finished" and run["name"].startswith("lightning_example-")
    assert points(live_server, run["id"], "val/acc")["value"]
    assert points(live_server, run["id"], "clip/pre_norm")["value"]
