"""A timm ``train.py``-style loop, attached with init + watch + log and nothing else: the
per-update cosine schedule with warmup, ``ModelEmaV3`` and the model's DropPath all show up in
the setup, the series and the findings on a real server."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
import torch

import trickscope
from tests.helpers import LiveServer, import_or_skip

timm = import_or_skip("timm")
from timm.scheduler import CosineLRScheduler  # noqa: E402
from timm.utils import ModelEmaV3  # noqa: E402

CONFIG = {
    "model": "vit_tiny_patch16_224",
    "model_kwargs": {"img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2},
    "num_classes": 4,
    "drop_path": 0.2,
    "lr": 1e-3,
    "weight_decay": 0.05,
    "warmup_updates": 5,
    "updates": 20,
    "model_ema_decay": 0.9998,  # timm's default: a horizon of 5,000 updates on a 20-update run
}


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def timm_train(url: str) -> str:
    """The shape of timm's train.py with ``--sched-on-updates``: scheduler stepped per update."""
    torch.manual_seed(0)
    model = timm.create_model(
        CONFIG["model"],
        pretrained=False,
        num_classes=CONFIG["num_classes"],
        drop_path_rate=CONFIG["drop_path"],
        **CONFIG["model_kwargs"],
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=CONFIG["lr"], weight_decay=CONFIG["weight_decay"]
    )
    lr_scheduler = CosineLRScheduler(
        optimizer,
        t_initial=CONFIG["updates"],
        warmup_t=CONFIG["warmup_updates"],
        warmup_lr_init=1e-5,
        t_in_epochs=False,
    )
    model_ema = ModelEmaV3(model, decay=CONFIG["model_ema_decay"])
    images, targets = torch.randn(16, 3, 16, 16), torch.randint(0, 4, (16,))

    run = trickscope.init(project="timm", config=CONFIG, url=url)
    run.watch(model, optimizer, every=2, hist_every=0)
    num_updates = 0
    for _ in range(CONFIG["updates"]):
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model_ema.update(model, step=num_updates)
        num_updates += 1
        lr_scheduler.step_update(num_updates=num_updates)
        run.log({"loss/train": loss})
    run.finish()
    return run.id


def test_timm_schedule_ema_and_drop_path_are_observed(live_server: LiveServer) -> None:
    run_id = timm_train(live_server.url)
    run = get_json(f"{live_server.url}/api/v1/runs/{run_id}")
    setup = run["setup"]
    assert setup["scheduler"]["class"] == "CosineLRScheduler"
    assert setup["scheduler"]["warmup_steps"] == CONFIG["warmup_updates"]
    assert setup["planned_steps"] == CONFIG["updates"]
    assert setup["ema"] == {"class": "ModelEmaV3", "decay": 0.9998, "decay_source": "attr"}
    # timm spreads the rate over depth: block 0 gets 0 (an Identity), block 1 the full rate.
    assert [(d["module"], d["parent"]) for d in setup["drop_path"]] == [
        ("blocks.1.drop_path1", "blocks.1"),
        ("blocks.1.drop_path2", "blocks.1"),
    ]
    assert all(d["rate"] == pytest.approx(0.2) for d in setup["drop_path"])

    def values(name: str) -> list[float]:
        return get_json(f"{live_server.url}/api/v1/runs/{run_id}/points?name={name}")["value"]

    lr = values("lr/group0")
    assert len(lr) == CONFIG["updates"]
    peak = lr.index(max(lr))
    # The LR each update used: a linear warmup from warmup_lr_init, then the cosine decay.
    assert peak == CONFIG["warmup_updates"] and lr[0] < lr[peak] / 4 and lr[-1] < lr[peak] / 2
    # ModelEmaV3.get_decay: 0 at update 0 (the first update copies the weights), then the decay.
    decay = values("ema/decay")
    assert decay[0] == 0.0 and decay[1:] == pytest.approx([0.9998] * (len(decay) - 1))
    assert all(distance > 0 for distance in values("ema/distance"))
    realised = values("drop_path/realised/blocks.1")
    assert realised and all(0.0 <= share <= 1.0 for share in realised)
    # timm's blocks add the dropped branch to the residual: no dropped sample zeroes a block.
    assert all(share == 0.0 for share in values("drop_path/unresidual/blocks.1"))

    report = get_json(f"{live_server.url}/api/v1/runs/{run_id}/health")
    checks = {c["id"]: c for c in report["checks"]}
    for rule in ("warmup", "ema", "drop-path"):
        assert checks[rule]["status"] == "ran", checks[rule]
    found = {f["check"] for f in report["findings"]}
    assert "ema-horizon" in found, report["findings"]
    assert not found & {"no-warmup", "short-warmup", "drop-path-no-residual"}, report["findings"]
