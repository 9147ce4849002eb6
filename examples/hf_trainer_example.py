"""The Hugging Face Trainer with trickscope: one callback. Runs in seconds on a CPU; the model is
a tiny GPT-2 built from a config, so nothing is downloaded.

    trickscope serve                        # another terminal: http://127.0.0.1:8000/
    TRICKSCOPE_URL=http://127.0.0.1:8000 python examples/hf_trainer_example.py

Needs ``pip install 'trickscope[transformers]'`` (and ``accelerate``, which the Trainer needs).
"""

from __future__ import annotations

import tempfile

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from trickscope.integrations.transformers import TrickscopeCallback

VOCAB = 64


class Patterns(torch.utils.data.Dataset):
    """Token sequences that repeat a short random pattern: learnable, so the loss falls."""

    def __init__(self, count: int, length: int = 16, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        period = torch.randint(2, 6, (count,), generator=generator)
        base = torch.randint(0, VOCAB, (count, 6), generator=generator)
        positions = torch.arange(length)
        self.ids = torch.stack([base[i, positions % period[i]] for i in range(count)])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def main() -> None:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=2)
    with tempfile.TemporaryDirectory() as output:
        args = TrainingArguments(
            output_dir=output,
            max_steps=30,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=2,
            learning_rate=3e-3,
            warmup_steps=8,
            lr_scheduler_type="cosine",
            max_grad_norm=1.0,
            logging_steps=5,
            eval_strategy="steps",
            eval_steps=20,
            disable_tqdm=True,
            save_strategy="no",
            report_to="none",  # "trickscope" is not a report_to name: see the callback's docs
            use_cpu=True,
        )
        trainer = Trainer(
            model=GPT2LMHeadModel(config),
            args=args,
            train_dataset=Patterns(640),
            eval_dataset=Patterns(128, seed=1),
            callbacks=[TrickscopeCallback(project="examples")],  # the one line
        )
        trainer.train()


if __name__ == "__main__":
    main()
