"""Cross-entropy given probabilities instead of logits: a softmax applied twice.

``nn.CrossEntropyLoss`` applies log-softmax itself. A model that already ends in ``softmax``
hands it rows in [0, 1] summing to 1, whose second softmax is nearly uniform: the loss cannot go
much below log(classes) − 1 and every gradient is squeezed into a narrow range. The agent's
loss-scale probe (docs/diagnosis.md) fits the output's gradient to a softmax cross-entropy on
due steps and says whether the rows it was given were probabilities.
"""

from __future__ import annotations

from collections.abc import Iterable

from trickscope_server.services.health.model import Finding, RunView, finding, rule
from trickscope_server.services.health.series import flagged

PROBABILITY_SHARE = 0.5  # the output was probabilities on at least this share of samples


@rule("softmax-twice", "Cross-entropy given logits, not probabilities")
def softmax_twice(view: RunView) -> Iterable[Finding]:
    """The model's output rows were probabilities on most due steps where its loss was measured
    as a softmax cross-entropy."""
    probabilities = flagged(
        view,
        "loss/softmax_inputs",
        1,
        "no softmax cross-entropy over the model's output was measured",
    )
    if probabilities is None or probabilities[0] < PROBABILITY_SHARE:
        return []
    share, first = probabilities
    return [
        finding(
            "cross-entropy-on-probabilities",
            "error",
            "Cross-entropy is applied to softmax outputs: a softmax twice",
            why=f"On {100 * share:.0f} % of the measured steps the model's output rows were "
            "already probabilities (non-negative, summing to 1) when the cross-entropy, which "
            "applies its own softmax, took them as logits. The second softmax is nearly "
            "uniform, so the loss stays near log(classes) and the gradients are tiny.",
            remedy="Return logits from the model (drop the final softmax) and keep "
            "CrossEntropyLoss, or keep the softmax and use NLLLoss on its log.",
            step=first,
            share=share,
        )
    ]
