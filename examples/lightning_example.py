"""Lightning with trickscope: one callback. Runs in seconds on a CPU, no downloads.

    trickscope serve                        # another terminal: http://127.0.0.1:8000/
    TRICKSCOPE_URL=http://127.0.0.1:8000 python examples/lightning_example.py

Needs ``pip install 'trickscope[lightning]'``. Without a server the run is journaled for
``trickscope sync``.
"""

from __future__ import annotations

import tempfile

import lightning as L
import torch
from torch import nn

from trickscope.integrations.lightning import TrickscopeCallback


class Classifier(L.LightningModule):
    """A small MLP on synthetic two-class data; AdamW with a one-cycle schedule per step."""

    def __init__(self, hidden: int = 32, lr: float = 3e-3, weight_decay: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()  # the run's config
        self.net = nn.Sequential(
            nn.Linear(16, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, 2)
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss)  # arrives as the series train/loss
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val/loss", nn.functional.cross_entropy(logits, y))
        self.log("val/acc", (logits.argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def data(count: int, seed: int) -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, 16, generator=generator)
    return torch.utils.data.TensorDataset(x, (x[:, :4].sum(dim=1) > 0).long())


def main() -> None:
    torch.manual_seed(0)
    train = torch.utils.data.DataLoader(data(1024, 0), batch_size=32, shuffle=True)
    val = torch.utils.data.DataLoader(data(512, 1), batch_size=256)
    with tempfile.TemporaryDirectory() as logs:
        trainer = L.Trainer(
            max_epochs=2,
            accumulate_grad_batches=2,
            gradient_clip_val=1.0,
            accelerator="cpu",
            default_root_dir=logs,  # Lightning's own logger keeps working alongside
            enable_checkpointing=False,
            callbacks=[TrickscopeCallback(project="examples")],  # the one line
        )
        trainer.fit(Classifier(), train, val)


if __name__ == "__main__":
    main()
