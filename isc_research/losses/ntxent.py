"""NT-Xent / InfoNCE over instance labels (SimCLR), gathered across processes."""

from __future__ import annotations

from isc_research.losses.infonce import InfoNCEEntropyLoss


class NTXentLoss(InfoNCEEntropyLoss):
    """For each embedding, −log softmax of its positives against every other embedding of the global batch.

    With one positive per row this is SimCLR's NT-Xent; with several (more views, or mixed samples that share
    a source image), each positive is scored against the negatives plus itself and the row's terms are
    averaged (SupCon-style "out" form). Rows without a positive (extra negatives) only serve as negatives.
    """

    def __init__(self, temperature: float = 0.1):
        super().__init__(temperature=temperature, entropy_weight=0.0)
