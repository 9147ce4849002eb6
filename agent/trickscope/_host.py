"""The agent's one way to read tensor values on the host, for tensors already in host memory."""

from __future__ import annotations

from torch import Tensor


def read(values: Tensor) -> list[float]:
    """The values of a CPU tensor (a pinned buffer whose copy is complete, or a CPU result) as
    Python numbers. Host memory: the read waits for no device. Any other device raises."""
    if values.device.type != "cpu":
        raise ValueError(f"reading a {values.device} tensor on the host would sync the device")
    flat: list[float] = values.reshape(-1).tolist()
    return flat
