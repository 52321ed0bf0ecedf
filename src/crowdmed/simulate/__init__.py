"""Simulated annotators: confusion-matrix families and label, gold and quiz sampling.

Build confusion matrices of shape ``(n_annotators, n_classes, n_classes)`` (rows sum to 1, see
docs/conventions.md), stack them with ``np.concatenate``, and draw labels with
:func:`simulate_labels` (dense view) or :func:`simulate_crowd` (:class:`~crowdmed.CrowdLabels`
with gold items and quiz accuracies). All randomness comes from ``random_state``.
"""

from crowdmed.simulate.annotators import (
    RODRIGUES_ACCURACIES,
    RODRIGUES_ADVERSARIAL_STRENGTH,
    SimulatedCrowd,
    rodrigues_crowd,
    simulate_crowd,
    simulate_labels,
    simulate_quiz,
)
from crowdmed.simulate.confusion import (
    adversarial_confusion,
    biased_confusion,
    binary_confusion,
    diagonal_confusion,
    spammer_confusion,
)
from crowdmed.simulate.masks import (
    MaskRater,
    distort_mask,
    simulate_mask_raters,
    varied_mask_raters,
)
from crowdmed.simulate.med_mnist import MedMnist, make_med_mnist, reader_transitions
from crowdmed.simulate.ordinal import (
    SimulatedContinuous,
    SimulatedOrdinal,
    simulate_continuous_readers,
    simulate_ordinal_readers,
)
from crowdmed.simulate.votes import SimulatedVotes, simulate_votes

__all__ = [
    "RODRIGUES_ACCURACIES",
    "RODRIGUES_ADVERSARIAL_STRENGTH",
    "MaskRater",
    "MedMnist",
    "SimulatedContinuous",
    "SimulatedCrowd",
    "SimulatedOrdinal",
    "SimulatedVotes",
    "adversarial_confusion",
    "biased_confusion",
    "binary_confusion",
    "diagonal_confusion",
    "distort_mask",
    "make_med_mnist",
    "reader_transitions",
    "rodrigues_crowd",
    "simulate_continuous_readers",
    "simulate_crowd",
    "simulate_labels",
    "simulate_mask_raters",
    "simulate_ordinal_readers",
    "simulate_quiz",
    "simulate_votes",
    "spammer_confusion",
    "varied_mask_raters",
]
