"""Data made in code, so every script runs offline and the same way each time."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def blobs(
    n: int = 1024, dim: int = 20, classes: int = 4, seed: int = 0, spread: float = 1.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters around random centres: a classification task an MLP learns in seconds."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=gen) * spread
    labels = torch.randint(0, classes, (n,), generator=gen)
    return centres[labels] + torch.randn(n, dim, generator=gen), labels


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled mini-batches, epoch after epoch, without end."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(y), generator=gen)
        for index in order[: len(y) - len(y) % batch_size].split(batch_size):
            yield x[index], y[index]


def tokens(
    n: int = 1024, length: int = 8, dim: int = 16, classes: int = 4, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Short sequences whose class shifts a few tokens: input for the small transformer blocks."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=gen)
    labels = torch.randint(0, classes, (n,), generator=gen)
    x = torch.randn(n, length, dim, generator=gen)
    x[:, : length // 2] += centres[labels].unsqueeze(1)
    return x, labels


def images(
    n: int = 1024, size: int = 16, classes: int = 4, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """3-channel images: each class is a fixed random pattern under noise."""
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.randn(classes, 3, size, size, generator=gen)
    labels = torch.randint(0, classes, (n,), generator=gen)
    return patterns[labels] + 1.5 * torch.randn(n, 3, size, size, generator=gen), labels


def text(chars: int = 20_000, seed: int = 0) -> str:
    """English-like sentences from a small grammar, for the character-level model."""
    gen = torch.Generator().manual_seed(seed)
    subjects = ["the cat", "a dog", "my friend", "the old man", "she", "he", "the bird"]
    verbs = ["sees", "likes", "follows", "finds", "hears", "wants"]
    objects = ["the ball", "a fish", "the river", "her book", "the light", "a small house"]
    endings = [".", "!", " today.", " again.", " at night."]
    parts: list[str] = []
    total = 0
    while total < chars:
        words = [
            options[int(torch.randint(len(options), (1,), generator=gen))]
            for options in (subjects, verbs, objects, endings)
        ]
        sentence = f"{words[0]} {words[1]} {words[2]}{words[3]} "
        parts.append(sentence)
        total += len(sentence)
    return "".join(parts)[:chars]
