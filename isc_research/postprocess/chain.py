"""A named chain of post-processes, built from config, with the search metric its output needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from isc_research.postprocess.base import PostProcess

METRICS = ("l2", "ip")


@dataclass
class Chain:
    """Steps applied in order. fit() fits each step on the training descriptors as transformed by the
    steps before it; transform() applies all of them to queries or references.

    metric: how the output is searched: "l2" (squared L2, the descriptor track's scorer) or "ip" (inner
    product, needed by the recipe form of score normalisation). models: which extractors' descriptors feed
    the chain, concatenated in that order (None = all of them: the ensemble input).
    """

    name: str
    steps: list[PostProcess] = field(default_factory=list)
    metric: str = "l2"
    models: list[int] | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"chain {self.name!r}: metric must be one of {METRICS}, got {self.metric!r}")
        for i, step in enumerate(self.steps):
            if step.must_be_last and i != len(self.steps) - 1:
                raise ValueError(
                    f"chain {self.name!r}: {step.describe()} must be the last step "
                    f"(it is step {i + 1} of {len(self.steps)})"
                )
            if step.required_metric and step.required_metric != self.metric:
                raise ValueError(
                    f"chain {self.name!r}: {step.describe()} needs metric={step.required_metric!r} "
                    f"search, but the chain sets metric={self.metric!r}"
                )

    @property
    def needs_training(self) -> bool:
        return any(step.needs_training for step in self.steps)

    def fit(self, training: np.ndarray | None) -> Chain:
        if self.needs_training and (training is None or len(training) == 0):
            raise ValueError(f"chain {self.name!r} ({self.describe()}) needs training-set descriptors")
        x = training
        for i, step in enumerate(self.steps):
            step.fit(x if step.needs_training else np.zeros((0, 0), np.float32))
            if i < len(self.steps) - 1 and any(s.needs_training for s in self.steps[i + 1 :]):
                x = step.transform(x, "training")
        return self

    def transform(self, x: np.ndarray, role: str) -> np.ndarray:
        for step in self.steps:
            x = step.transform(x, role)
        return np.ascontiguousarray(x, dtype=np.float32)

    def describe(self) -> str:
        return " → ".join(step.describe() for step in self.steps) or "raw"


def build_chain(name: str, cfg: Mapping) -> Chain:
    """A chain from its config: ``steps`` (a mapping label -> {_target_: ..., params}, in order, or a list),
    ``metric`` (l2 | ip | null = ip when a step needs it, else l2), ``models`` (list of indices or null)."""
    from hydra.utils import instantiate

    raw_steps = cfg.get("steps") or {}
    items = list(raw_steps.values()) if isinstance(raw_steps, Mapping) else list(raw_steps)
    steps = []
    for i, item in enumerate(items):
        if item is None:  # a step switched off by an override (steps.<label>=null)
            continue
        try:
            step = instantiate(item)
        except Exception as error:
            raise ValueError(f"chain {name!r}: step {i + 1} cannot be built from {dict(item)}: {error}") from error
        if not isinstance(step, PostProcess):
            raise ValueError(
                f"chain {name!r}: step {i + 1} ({item.get('_target_')}) is not an isc_research.postprocess step"
            )
        steps.append(step)
    metric = cfg.get("metric") or ("ip" if any(s.required_metric == "ip" for s in steps) else "l2")
    models = cfg.get("models")
    return Chain(name, steps, metric, None if models is None else [int(m) for m in models])


def build_chains(chains_cfg: Mapping) -> list[Chain]:
    """Every chain of an eval grid (a mapping name -> chain config), in config order."""
    if not chains_cfg:
        raise ValueError("eval_grid.chains is empty: list at least one post-processing chain (e.g. raw: {steps: {}})")
    return [build_chain(str(name), cfg) for name, cfg in chains_cfg.items()]


def select_models(chain: Chain, parts: Sequence[np.ndarray]) -> np.ndarray:
    """The chain's input: the chosen extractors' descriptors side by side."""
    chosen = range(len(parts)) if chain.models is None else chain.models
    bad = [m for m in chosen if not 0 <= m < len(parts)]
    if bad:
        raise ValueError(
            f"chain {chain.name!r}: models={chain.models} but only {len(parts)} descriptor set(s) "
            f"(checkpoints) were given; indices run from 0 to {len(parts) - 1}"
        )
    chosen = list(chosen)
    return parts[chosen[0]] if len(chosen) == 1 else np.ascontiguousarray(np.hstack([parts[m] for m in chosen]))
