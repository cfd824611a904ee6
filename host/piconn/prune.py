"""Magnitude pruning of `nn.Linear` weights, one-shot or gradual with fine-tuning.

Masks live in `Linear.mask` (False = pruned): the forward pass and the
optimizers keep pruned weights at zero, `nn.save` stores the masks, and
`lower.to_device` turns a masked layer into `sparse_f32` (`quant` into `sparse_q8`).

Gradual pruning follows Zhu & Gupta (2017): the sparsity target rises as
`s_t = s_f + (s_i - s_f) * (1 - (t - t0)/(t1 - t0))^3` from step t0 to t1, and the
masks are recomputed every `update_every` steps; the remaining steps fine-tune at
the final sparsity. Biases are never pruned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

from . import nn, train
from .data import random_shift


def check_sparsity(sparsity: float) -> float:
    """Return sparsity as float; ValueError unless 0 <= sparsity < 1."""
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not 0.0 <= s < 1.0:
        raise ValueError(f"sparsity must be in [0, 1) (fraction of weights removed), got {s}")
    return s


def linears(model: nn.Sequential) -> list[tuple[int, nn.Linear]]:
    """(index in model.layers, layer) of every Linear layer."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected an nn.Sequential, got {type(model).__name__}")
    return [(i, la) for i, la in enumerate(model.layers) if isinstance(la, nn.Linear)]


def _keep_mask(mag: np.ndarray, n_prune: int) -> np.ndarray:
    """Bool mask keeping all but the n_prune smallest magnitudes (exact count; at least
    the entries already pruned, marked by a negative magnitude)."""
    n_prune = max(n_prune, int(np.count_nonzero(mag < 0)))
    keep = np.ones(mag.size, dtype=bool)
    if n_prune > 0:
        order = np.argsort(mag.ravel(), kind="stable")
        keep[order[:n_prune]] = False
    return keep.reshape(mag.shape)


def magnitude_prune(model: nn.Sequential, sparsity: float, global_: bool = False) -> None:
    """Set masks so each Linear (or all together, `global_`) has `sparsity` zero weights.

    Weights already pruned stay pruned (a lower target than the current sparsity
    changes nothing).
    """
    s = check_sparsity(sparsity)
    layers = [la for _, la in linears(model)]
    if not layers:
        raise ValueError("the model has no Linear layer to prune")
    # Already pruned weights sort first (-1): the pruned set only grows.
    mags = [np.where(la.mask if la.mask is not None else True,
                     np.abs(la.weight.data).astype(np.float64), -1.0) for la in layers]
    if global_:
        flat = np.concatenate([m.ravel() for m in mags])
        keep = _keep_mask(flat, round(s * flat.size))
        pos = 0
        for la, m in zip(layers, mags):
            la.mask = keep[pos:pos + m.size].reshape(m.shape)
            pos += m.size
    else:
        for la, m in zip(layers, mags):
            la.mask = _keep_mask(m, round(s * m.size))


def report(model: nn.Sequential) -> dict:
    """Per-layer and total weight counts, nonzeros (stored weights) and sparsity."""
    rows = []
    for i, la in linears(model):
        total = la.weight.data.size
        nnz = int(np.count_nonzero(la.mask)) if la.mask is not None else total
        rows.append({"layer": i, "shape": [la.n_out, la.n_in], "weights": total, "nnz": nnz,
                     "sparsity": 1 - nnz / total})
    total = sum(r["weights"] for r in rows)
    nnz = sum(r["nnz"] for r in rows)
    return {"layers": rows, "weights": total, "nnz": nnz,
            "sparsity": 1 - nnz / total if total else 0.0}


def cubic_schedule(step: int, final: float, begin: int, end: int, initial: float = 0.0) -> float:
    """Zhu & Gupta's sparsity target at `step` (initial before begin, final after end)."""
    if step <= begin:
        return initial
    if step >= end:
        return final
    frac = (step - begin) / (end - begin)
    return final + (initial - final) * (1.0 - frac) ** 3


def prune(model: nn.Sequential, x: np.ndarray, y: np.ndarray, sparsity: float, *,
          epochs: int = 20, global_: bool = True, lr: float = 2e-3, lr_end: float = 2e-4,
          batch_size: int = 128, update_every: int = 50, prune_frac: float = 0.6,
          seed: int = 0, shift: int = 0, on_epoch: Callable[[int, dict], Any] | None = None,
          progress: bool | TextIO | None = None) -> list[dict]:
    """Prune `model` in place to `sparsity`, gradually while fine-tuning for `epochs`.

    The target rises by the cubic schedule over the first `prune_frac` of the
    steps (masks updated every `update_every` steps) and then stays at
    `sparsity`; Adam's learning rate decays exponentially from lr to lr_end.
    epochs=0 prunes once, without fine-tuning. `shift` > 0 fine-tunes with random
    image shifts of up to that many pixels (as the float model was trained).
    Returns the training history.
    """
    s = check_sparsity(sparsity)
    if epochs < 0 or update_every < 1 or not 0 < prune_frac <= 1:
        raise ValueError("need epochs >= 0, update_every >= 1 and 0 < prune_frac <= 1")
    if epochs == 0:
        magnitude_prune(model, s, global_)
        return []
    n_batches = -(-len(x) // batch_size)
    end = max(1, int(prune_frac * epochs * n_batches))
    start = min(report(model)["sparsity"], s)  # a model pruned before continues from there

    def on_step(step: int) -> None:
        if (step % update_every == 0 or step == end) and step <= end:
            magnitude_prune(model, cubic_schedule(step, s, 0, end, start), global_)

    opt = nn.Adam(model.params(), lr)
    decay = (lr_end / lr) ** (1 / max(epochs - 1, 1))
    hist = train.fit(model, x, y, loss="cross_entropy", optimizer=opt, epochs=epochs,
                     batch_size=batch_size, seed=seed, on_step=on_step, on_epoch=on_epoch,
                     progress=progress, schedule=lambda e: lr * decay**e,
                     augment=(lambda xb, rng: random_shift(xb, rng, shift)) if shift else None)
    magnitude_prune(model, s, global_)  # exact final count (a no-op after the schedule)
    return hist
