"""A small character-level GPT with nanoGPT's recipe: AdamW betas (0.9, 0.95), weight decay on
≥2-D parameters only, linear warmup then cosine decay set per step by ``get_lr``, clip 1.0."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import trickscope
from tests.integration.pitfalls.scripts._data import text

MAX_ITERS = 300
WARMUP_ITERS = 40  # 2/(1−β2) = 40 for β2 = 0.95
LEARNING_RATE = 1e-3
MIN_LR = 1e-4
BLOCK_SIZE = 32
BATCH_SIZE = 16
N_LAYER, N_HEAD, N_EMBD = 2, 2, 48


class CausalSelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_attn = nn.Linear(N_EMBD, 3 * N_EMBD, bias=False)
        self.c_proj = nn.Linear(N_EMBD, N_EMBD, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(N_EMBD, dim=2)
        q, k, v = (z.view(b, t, N_HEAD, c // N_HEAD).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(N_EMBD, bias=False)
        self.attn = CausalSelfAttention()
        self.ln_2 = nn.LayerNorm(N_EMBD, bias=False)
        self.mlp = nn.Sequential(nn.Linear(N_EMBD, 4 * N_EMBD, bias=False), nn.GELU(),
                                 nn.Linear(4 * N_EMBD, N_EMBD, bias=False))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(vocab_size, N_EMBD),
            "wpe": nn.Embedding(BLOCK_SIZE, N_EMBD),
            "h": nn.ModuleList(Block() for _ in range(N_LAYER)),
            "ln_f": nn.LayerNorm(N_EMBD, bias=False),
        })  # fmt: skip
        self.lm_head = nn.Linear(N_EMBD, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * N_LAYER) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1])
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    def configure_optimizers(self, weight_decay: float, lr: float) -> torch.optim.AdamW:
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def get_lr(it: int) -> float:
    if it < WARMUP_ITERS:
        return LEARNING_RATE * (it + 1) / (WARMUP_ITERS + 1)
    ratio = (it - WARMUP_ITERS) / (MAX_ITERS - WARMUP_ITERS)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LEARNING_RATE - MIN_LR)


def train(url: str, **kw: Any) -> str:
    torch.manual_seed(0)
    corpus = text()
    chars = sorted(set(corpus))
    data = torch.tensor([chars.index(c) for c in corpus], dtype=torch.long)
    model = GPT(len(chars))
    optimizer = model.configure_optimizers(weight_decay=0.1, lr=LEARNING_RATE)
    gen = torch.Generator().manual_seed(0)

    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
        ix = torch.randint(len(data) - BLOCK_SIZE - 1, (BATCH_SIZE,), generator=gen)
        x = torch.stack([data[i : i + BLOCK_SIZE] for i in ix])
        return x, torch.stack([data[i + 1 : i + 1 + BLOCK_SIZE] for i in ix])

    losses = []
    with trickscope.init(project="healthy", name="char-gpt", url=url, **kw) as run:
        run.watch(model, optimizer)
        for it in range(MAX_ITERS):
            lr = get_lr(it)
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            x, y = get_batch()
            loss = model(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.detach())
            run.log({"loss": loss.detach()}, step=it)

    # It learned: uniform over ~30 characters is ln 30 ≈ 3.4.
    assert float(torch.stack(losses[-20:]).mean()) < 0.6 * float(losses[0]), losses[::30]
    return run.id
