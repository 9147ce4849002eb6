"""What ``self.log`` hands Lightning's loggers, read where Lightning reads it.

Two moments matter:

- After each optimizer step, the step values (``on_step=True``): read in ``on_train_batch_end``
  from the logger connector, as Lightning's loggers would (:func:`logged_now`).
- At the end of a training epoch and of an evaluation, the epoch values (``on_epoch=True``,
  aggregated over the epoch, and whatever was logged in ``on_train_epoch_end`` or
  ``on_validation_epoch_end``). No callback hook runs after all of them are known: a callback's
  ``on_train_epoch_end`` runs before the LightningModule's, and the results are reset before the
  next hook. So :class:`EpochValuesTap` wraps the connector's ``log_metrics``, the one call that
  hands them to the loggers, and sees them there, still device tensors (Lightning turns them
  into numbers only after, for its loggers; nothing here reads them).

Left out: an evaluation's per-batch values (``on_step=True`` in ``validation_step``), which
Lightning numbers by evaluation batch, not optimizer step (at one global step they would
overwrite each other), and the ``epoch`` number Lightning adds for its loggers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from trickscope._incidents import Incidents
from trickscope.integrations._hooks import numeric_items


def logged_now(trainer: Any) -> dict[str, float | torch.Tensor]:
    """What ``self.log(..., logger=True)`` has for the loggers at this point: the step values
    during a batch, the epoch values at an epoch's end; device tensors, never read here.

    Read from the logger connector, the object that feeds Lightning's own loggers (there is no
    public accessor that leaves out stale values: ``callback_metrics`` keeps every past key).
    """
    connector = trainer._logger_connector
    return numeric_items(dict(connector.metrics["log"]))


class EpochValuesTap:
    """Hands ``send`` every epoch-level dict the trainer's logger connector gives its loggers
    (training epoch end, evaluation end), before Lightning's own handling, which goes on
    unchanged. Step-level calls (training steps every ``log_every_n_steps``, evaluation batches)
    are left alone. A failure in ``send`` is counted in ``incidents``, never raised.

    Args:
        trainer: The Lightning ``Trainer``.
        send: Called with the values, device tensors or numbers, before the loggers get them.
        incidents: Where a failure of ``send`` is counted.

    Raises:
        AttributeError: this Lightning has no logger connector with ``log_metrics``.
    """

    def __init__(
        self,
        trainer: Any,
        send: Callable[[dict[str, float | torch.Tensor]], None],
        incidents: Incidents,
    ) -> None:
        connector = trainer._logger_connector
        original = connector.log_metrics

        @functools.wraps(original)
        def log_metrics(metrics: Any, *args: Any, **kwargs: Any) -> Any:
            # ``_first_loop_iter`` is None between an epoch's last batch and the next epoch's
            # first (Lightning asserts as much before logging epoch values).
            if metrics and getattr(connector, "_first_loop_iter", None) is None:
                try:
                    values = numeric_items(dict(metrics))
                    if values:
                        send(values)
                except Exception as exc:  # never into the training loop
                    incidents.error("lightning epoch values", exc)
            return original(metrics, *args, **kwargs)

        self._connector = connector
        self._wrapper = log_metrics
        connector.log_metrics = log_metrics  # this trainer's connector only

    def remove(self) -> None:
        """Give the connector its own ``log_metrics`` back."""
        if vars(self._connector).get("log_metrics") is self._wrapper:
            del self._connector.log_metrics
