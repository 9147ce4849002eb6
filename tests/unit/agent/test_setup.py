"""The setup document: optimizer groups, parameter kinds, and what discovery finds."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

import trickscope
from tests.helpers import import_or_skip
from trickscope import discover, setup
from trickscope.tricks import DropPath, ModelEma, ema_module


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 4)
        self.drop_path = DropPath(0.1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos_embed
        h = h + self.drop_path(self.fc(self.norm(h)))
        return self.head(h.mean(1))


def _groups(model: Net) -> list[dict[str, Any]]:
    decay = [model.fc.weight, model.head.weight]
    rest = [p for p in model.parameters() if all(p is not d for d in decay)]
    return [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}]


def test_adamw_groups_and_parameter_kinds() -> None:
    model = Net()
    optimizer = torch.optim.AdamW(_groups(model), lr=1e-3, betas=(0.9, 0.95), eps=1e-6)
    doc = setup.describe(model, optimizer, every=10, hist_every=100)
    opt = doc["optimizer"]
    assert (opt["class"], opt["module"], opt["family"]) == ("AdamW", "torch.optim.adamw", "adam")
    first, second = opt["groups"]
    assert first["params"] == ["fc.weight", "head.weight"]
    assert first["weight_decay"] == 0.05 and first["decoupled"] is True
    assert first["betas"] == [0.9, 0.95] and first["eps"] == 1e-6 and first["lr"] == 1e-3
    assert first["momentum"] is None and first["amsgrad"] is False
    # Model order within a group, whatever order the group was built in.
    assert second["params"] == [
        "pos_embed",
        "embed.weight",
        "norm.weight",
        "norm.bias",
        "fc.bias",
        "head.bias",
    ]
    kinds = {p["name"]: (p["kind"], p["module"], p["group"]) for p in doc["params"]}
    assert kinds["embed.weight"] == ("embedding", "Embedding", 1)
    assert kinds["pos_embed"] == ("embedding", "Net", 1)
    assert kinds["norm.weight"] == ("norm", "LayerNorm", 1)
    assert kinds["norm.bias"] == ("norm", "LayerNorm", 1)
    assert kinds["fc.bias"] == ("bias", "Linear", 1)
    assert kinds["fc.weight"] == ("weight", "Linear", 0)
    assert doc["drop_path"] == []  # only the watcher's probe finds them; see below
    assert doc["scheduler"] is None and doc["ema"] is None and doc["scaler"] is None
    assert (doc["planned_steps"], doc["planned_steps_source"]) == (None, None)
    assert (doc["every"], doc["hist_every"], doc["version"]) == (10, 100, 1)


def test_sgd_and_adam_groups() -> None:
    model = nn.Linear(3, 2)
    sgd = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4
    )
    group = setup.describe(model, sgd)["optimizer"]["groups"][0]
    assert setup.optimizer_family(sgd) == "sgd"
    assert (group["momentum"], group["nesterov"], group["dampening"]) == (0.9, True, 0)
    assert group["decoupled"] is False and group["betas"] is None and group["eps"] is None
    adam = torch.optim.Adam(model.parameters(), weight_decay=1e-2)
    group = setup.describe(model, adam)["optimizer"]["groups"][0]
    assert group["decoupled"] is False and group["weight_decay"] == 0.01
    assert setup.describe(model, adam)["optimizer"]["family"] == "adam"


def test_one_cycle_gives_planned_and_warmup_steps() -> None:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.1, total_steps=1000, pct_start=0.3
    )
    doc = setup.describe(model, optimizer, scheduler=scheduler)
    assert doc["scheduler"] == {
        "class": "OneCycleLR",
        "module": "torch.optim.lr_scheduler",
        "planned_steps": 1000,
        "warmup_steps": 300,
    }
    assert (doc["planned_steps"], doc["planned_steps_source"]) == (1000, "scheduler")
    doc = setup.describe(model, optimizer, scheduler=scheduler, total_steps=500)
    assert (doc["planned_steps"], doc["planned_steps_source"]) == (500, "watch")


def test_sequential_warmup_and_warmup_decay() -> None:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, 0.01, 1.0, total_iters=50)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=950)
    seq = torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, cos], milestones=[50])
    assert setup.scheduler_span(seq) == (None, 50)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ours = trickscope.tricks.WarmupDecay(optimizer, total_steps=800, warmup_steps=80)
    assert setup.scheduler_span(ours) == (800, 80)


def test_averaged_model_decay_is_read_from_its_closure() -> None:
    model = nn.Linear(3, 2)
    swa = torch.optim.swa_utils
    ema = swa.AveragedModel(model, multi_avg_fn=swa.get_ema_multi_avg_fn(0.998))
    assert setup.describe_ema(ema) == {
        "class": "AveragedModel",
        "decay": 0.998,
        "decay_source": "closure",
    }
    ema = swa.AveragedModel(model, avg_fn=swa.get_ema_avg_fn(0.95))
    assert setup.ema_decay(ema) == (0.95, "closure")
    plain = swa.AveragedModel(model)  # SWA's equal average: no decay
    assert setup.ema_decay(plain) == (None, None)


def test_timm_style_ema_decay_and_discovery() -> None:
    timm_ema = import_or_skip("timm.utils.model_ema")
    model = nn.Linear(3, 2)
    ema = timm_ema.ModelEmaV3(model, decay=0.9998, use_warmup=True)
    assert setup.describe_ema(ema) == {
        "class": "ModelEmaV3",
        "decay": 0.9998,
        "decay_source": "attr",
    }
    decay, source = setup.ema_decay(ema, step=10)
    assert source == "get_decay" and decay is not None and decay < 0.9998
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    found = discover.scan(discover.caller(0), model, optimizer)
    assert found.ema is ema


def test_discovery_finds_hand_written_emas_by_name() -> None:
    """A copy kept in a variable named like an EMA, and an EMA class holding its copy as
    ``ema`` (YOLO's ``ModelEMA``); a copy under another name is not an EMA."""
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schema = copy.deepcopy(model)  # noqa: F841 - "ema" inside a word is not a name
    assert discover.scan(discover.caller(0), model, optimizer).ema is None
    model_ema = copy.deepcopy(model)
    assert discover.scan(discover.caller(0), model, optimizer).ema is model_ema
    assert ema_module(model_ema) is model_ema
    del model_ema

    class ModelEMA:
        def __init__(self) -> None:
            self.ema = copy.deepcopy(model)

    yolo = ModelEMA()
    assert discover.scan(discover.caller(0), model, optimizer).ema is yolo
    assert ema_module(yolo) is yolo.ema
    assert [discover.names_ema(n) for n in ("emaModel", "EMAModel", "my_ema", "theme")] == [
        True, True, True, False
    ]  # fmt: skip


def test_discovery_finds_scheduler_ema_and_scaler_in_the_calling_frames() -> None:
    model = nn.Linear(3, 2)
    other = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    other_optimizer = torch.optim.SGD(other.parameters(), lr=0.1)
    torch.optim.lr_scheduler.StepLR(other_optimizer, 10)  # not the watched optimizer's
    scaler = torch.amp.GradScaler("cpu")

    class Trainer:
        def __init__(self) -> None:
            self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10)
            self.ema = ModelEma(model, decay=0.99)
            self.wrong_ema = ModelEma(nn.Linear(4, 2))  # does not mirror the model

        def scan(self) -> discover.Found:
            def inner() -> discover.Found:
                return discover.scan(discover.caller(0), model, optimizer)

            return inner()

    trainer = Trainer()
    found = trainer.scan()
    assert found.scheduler is trainer.scheduler
    assert found.ema is trainer.ema
    assert found.scaler is scaler
