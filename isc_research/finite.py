"""Non-finite descriptors are a precision error with a message, not a stack trace from the search.

One rule for every entry point (the evaluation callback of isc-train, isc-eval, isc-match, isc-search): the
descriptors of each split are checked before any search, and a NaN or inf stops the run with
`NonFiniteDescriptors`, naming how many rows of which split, the likely cause and the setting that fixes it.
In training the error stops the run like a non-finite loss does (isc_research.train reports the last good checkpoint);
it is a FloatingPointError, so both stop the same way.

The usual cause is float16 overflow: float16 holds values up to 65,504, and the feature maps of a randomly
initialised EfficientNetV2-M reach ~1e5 at 64 px and ~3e7 at 512 px (issue 15), so fp16 autocast turns them
into inf and the descriptors into NaN. bfloat16 has float32's range and does not overflow.
"""

from __future__ import annotations

import numpy as np
import torch

# The settings that fix it, per entry point.
TRAINING_FIX = "train in bfloat16 or float32: trainer.precision=bf16-mixed (or 32-true)"
EXTRACTION_FIX = (
    "extract in float32 or bfloat16: eval.precision=32 (or bf16); if the checkpoint was trained in "
    "16-mixed, train it again with trainer.precision=bf16-mixed (or 32-true)"
)
FLOAT32_FIX = (
    "the model ran in float32 here, so the checkpoint's weights are probably non-finite (a run that "
    "diverged, or was trained in 16-mixed and overflowed): train it again with "
    "trainer.precision=bf16-mixed (or 32-true), or use an earlier checkpoint"
)


class NonFiniteDescriptors(FloatingPointError):
    """Descriptors with NaN or inf: a precision problem of the model, named before any search."""


def check_finite(vectors: np.ndarray | torch.Tensor, split: str, fix: str = EXTRACTION_FIX) -> None:
    """Raise NonFiniteDescriptors if any row of `vectors` (n, d) holds a NaN or inf. `split` names the rows
    ("validation queries", "model0 reference", …); `fix` is the setting that fixes it where the check runs."""
    if len(vectors) == 0:  # nothing was embedded (e.g. every image skipped): nothing to check
        return
    if isinstance(vectors, torch.Tensor):
        bad_rows = ~torch.isfinite(vectors.detach()).reshape(len(vectors), -1).all(dim=1).cpu().numpy()
    else:
        bad_rows = ~np.isfinite(np.asarray(vectors)).reshape(len(vectors), -1).all(axis=1)
    bad = int(bad_rows.sum())
    if bad:
        first = int(np.flatnonzero(bad_rows)[0])
        raise NonFiniteDescriptors(
            f"{bad} of {len(bad_rows)} descriptors ({split}) are not finite (NaN or inf; the first is row {first}). "
            f"Likely cause: float16 overflow — activations above float16's 65,504 under fp16 mixed precision "
            f"(e.g. a randomly initialised EfficientNetV2). Fix: {fix}."
        )
