"""A Hugging Face Trainer run with the one-line callback on a tiny GPT-2 built from a config:
its series, setup and findings arrive on a real server."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import LiveServer, import_or_skip

transformers = import_or_skip("transformers")
from trickscope.integrations.transformers import TrickscopeCallback  # noqa: E402

MAX_STEPS = 8
ACCUMULATE = 2
CLIP = 1e-3  # far below the gradient norm: clipped on every step
LR = 5e-3  # AdamW at this peak with no warmup: the no-warmup finding


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def points(server: LiveServer, run_id: str, name: str) -> dict[str, list[Any]]:
    return get_json(f"{server.url}/api/v1/runs/{run_id}/points?name={name}")


class Tokens(torch.utils.data.Dataset):
    """Random token sequences; the labels are the inputs (causal LM)."""

    def __init__(self, count: int, length: int = 8, vocab: int = 32) -> None:
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (count, length), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def tiny_gpt2() -> Any:
    config = transformers.GPT2Config(
        vocab_size=32, n_positions=16, n_embd=8, n_layer=1, n_head=2, use_cache=False
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def test_trainer_streams_series_setup_and_findings(live_server: LiveServer, tmp_path: Path) -> None:
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=MAX_STEPS,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        gradient_accumulation_steps=ACCUMULATE,
        learning_rate=LR,
        max_grad_norm=CLIP,
        optim="adamw_torch",
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    callback = TrickscopeCallback(project="hf", url=live_server.url, every=1, hist_every=0)
    trainer = transformers.Trainer(
        model=tiny_gpt2(),
        args=args,
        train_dataset=Tokens(64),
        eval_dataset=Tokens(8),
        callbacks=[callback],
    )
    trainer.train()
    run_id = callback.run.id
    assert callback.run.status == "finished"

    run = get_json(f"{live_server.url}/api/v1/runs/{run_id}")
    assert run["status"] == "finished"
    config = run["config"]
    assert config["learning_rate"] == LR and config["max_grad_norm"] == CLIP
    assert config["gradient_accumulation_steps"] == ACCUMULATE
    assert config["planned_steps"] == MAX_STEPS
    assert config["model"] == "GPT2LMHeadModel" and config["model_config"]["n_embd"] == 8
    assert run["setup"]["optimizer"]["class"] == "AdamW"
    assert run["setup"]["scheduler"]["class"] == "LambdaLR"
    assert run["setup"]["planned_steps"] == MAX_STEPS

    # What the Trainer logs, at the optimizer step it was logged after.
    assert points(live_server, run_id, "train/loss")["step"] == list(range(MAX_STEPS))
    assert points(live_server, run_id, "eval/loss")["step"] == [3, 7]
    trainer_lr = points(live_server, run_id, "train/learning_rate")["value"]
    assert trainer_lr[0] == pytest.approx(LR)
    assert points(live_server, run_id, "lr/group0")["value"][0] == pytest.approx(LR)
    assert points(live_server, run_id, "grad_norm/transformer.h.0.mlp.c_fc.weight")["step"] == (
        list(range(MAX_STEPS))
    )

    # The logged grad_norm is the pre-clip norm; watch sees the clipped gradients.
    logged = points(live_server, run_id, "train/grad_norm")["value"]
    pre = points(live_server, run_id, "clip/pre_norm")["value"]
    assert pre == pytest.approx(logged) and all(norm > 100 * CLIP for norm in pre)
    assert points(live_server, run_id, "clip/clipped")["value"] == [1.0] * MAX_STEPS
    post = points(live_server, run_id, "grad_norm/total")["value"]
    assert post == pytest.approx([CLIP] * MAX_STEPS, rel=1e-3)
    measured = points(live_server, run_id, "grad_norm/total_preclip")["value"]
    assert measured == pytest.approx(pre, rel=1e-3)
    passes = points(live_server, run_id, "accum/backward_passes")["value"]
    assert passes == [float(ACCUMULATE)] * MAX_STEPS

    report = get_json(f"{live_server.url}/api/v1/runs/{run_id}/health")
    checks = {finding["check"] for finding in report["findings"]}
    assert {"clipping-always", "no-warmup"} <= checks, report["findings"]


@pytest.mark.slow
def test_the_example_runs_and_arrives(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runpy

    monkeypatch.setenv("TRICKSCOPE_URL", live_server.url)
    root = Path(__file__).resolve().parents[2]
    runpy.run_path(str(root / "examples" / "hf_trainer_example.py"), run_name="__main__")
    (run,) = get_json(f"{live_server.url}/api/v1/runs?project=examples")["runs"]
    assert run["status"] == "finished"
    assert points(live_server, run["id"], "eval/loss")["step"] == [19, 29]
    assert points(live_server, run["id"], "train/loss")["step"] == [4, 9, 14, 19, 24, 29]
