"""Mini-batch training loop, evaluation and prediction for `nn` models.

Input convention (all of piconn): pixels as floats x/255, no mean/std. `fit`,
`evaluate` and `predict` accept raw uint8 arrays and apply that scale batch by
batch (so a 60000x784 float copy is never made); float arrays are used as given.

`train_float` is the training policy of `piconn train --kind float` (its
defaults in `FLOAT_DEFAULTS`); `xnor.train_xnor` is the binary one.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

from . import nn
from .data import INPUT_SCALE, random_shift

LOSSES: dict[str, Callable[[np.ndarray, Any], nn.Loss]] = {
    "cross_entropy": nn.cross_entropy,
    "mse": nn.mse,
}


def prepare(x: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """uint8 pixels -> float x/255 in `dtype`; float input is cast only."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(dtype) * np.asarray(INPUT_SCALE, dtype)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"inputs must be uint8 pixels or floats, got {x.dtype}")
    return x.astype(dtype, copy=False)


def _model_dtype(model: nn.Module) -> np.dtype:
    return getattr(model, "dtype", np.dtype(np.float32))


def _check_xy(x: np.ndarray, y: np.ndarray | None) -> None:
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, features...), got {x.shape}")
    if y is not None and len(y) != len(x):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")


def _targets(loss: str, y: np.ndarray, out: np.ndarray) -> np.ndarray:
    """mse with integer labels and several outputs: one-hot targets."""
    if loss == "mse" and y.ndim == 1 and out.ndim == 2 and out.shape[1] > 1 \
            and np.issubdtype(y.dtype, np.integer):
        t = np.zeros(out.shape, out.dtype)
        t[np.arange(len(y)), y] = 1
        return t
    return y


def _correct(out: np.ndarray, y: np.ndarray) -> int:
    """Correct predictions: argmax vs labels (or one-hot), or >0.5 for one output."""
    out = np.asarray(out).view(np.ndarray)
    if out.ndim == 2 and out.shape[1] > 1:
        pred = out.argmax(axis=1)
        truth = y.argmax(axis=1) if y.ndim == 2 else y
        return int((pred == truth).sum())
    return int(((out.reshape(len(out), -1) > 0.5) == (y.reshape(len(y), -1) > 0.5)).all(1).sum())


class Progress:
    """Plain-text progress bar for one epoch on a stream (default stderr).

    On a terminal it redraws one line with \\r; otherwise it writes only the
    final line of each epoch.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 24) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0

    def update(self, epoch: int, epochs: int, done: int, total: int, loss: float,
               acc: float, final: bool = False, extra: str = "") -> None:
        now = time.monotonic()
        if not final and (not self.tty or now - self._last < 0.1):
            return
        self._last = now
        filled = int(self.width * done / max(total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        line = (f"epoch {epoch}/{epochs} [{bar}] {done}/{total} "
                f"loss {loss:.4f} acc {100 * acc:.2f}%{extra}")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, *, loss: str | Callable = "cross_entropy",
        optimizer: nn.Optimizer, epochs: int, batch_size: int = 128, seed: int = 0,
        on_step: Callable[[int], Any] | None = None,
        on_epoch: Callable[[int, dict], Any] | None = None,
        progress: bool | TextIO | None = None,
        schedule: Callable[[int], float] | None = None,
        augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        ) -> list[dict]:
    """Train `model` with mini-batches; returns one history row per epoch.

    x: uint8 pixels (scaled by 1/255) or floats; y: int labels (or targets for mse).
    Each epoch shuffles with a generator seeded from `seed`. `on_step(step)` runs
    after every optimizer step (step counts from 1 over the whole run);
    `on_epoch(epoch, row)` after each epoch (epoch from 1). `schedule(epoch)`
    (epoch from 0) returns the learning rate for that epoch. `augment(xb, rng)`
    returns a changed copy of each raw batch (e.g. `data.random_shift`). `progress`: True,
    False, a stream, or None (= stderr if it is a terminal).
    Row keys: epoch, loss (mean over samples), accuracy (on the training batches
    as seen during the epoch), lr, seconds.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    _check_xy(x, y)
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
        loss_fn = LOSSES[loss]
    else:
        loss_fn = loss
    if progress is None:
        progress = sys.stderr.isatty()
    bar = None
    if progress:
        bar = Progress(None if progress is True else progress)  # type: ignore[arg-type]

    dtype = _model_dtype(model)
    rng = np.random.default_rng(seed)
    n = len(x)
    n_batches = math.ceil(n / batch_size)
    history: list[dict] = []
    step = 0
    # The model input needs no gradient: skip the largest product of the first layer
    # with parameters (layers before it, e.g. Reshape or Flatten, have nothing to learn).
    first = next((layer for layer in model.layers if layer.params()), None) \
        if isinstance(model, nn.Sequential) else None
    saved_input_grad = getattr(first, "input_grad", None)
    if saved_input_grad is not None:
        first.input_grad = False  # type: ignore[union-attr]
    model.train()
    try:
        for epoch in range(epochs):
            if schedule is not None:
                optimizer.lr = float(schedule(epoch))
            t0 = time.perf_counter()
            order = rng.permutation(n)
            total_loss, correct, seen = 0.0, 0, 0
            for b in range(n_batches):
                idx = order[b * batch_size:(b + 1) * batch_size]
                xb = x[idx]
                if augment is not None:
                    xb = augment(xb, rng)
                xb = prepare(xb, dtype)
                yb = y[idx]
                out = model(xb)
                lo = loss_fn(out, _targets(loss_name, yb, out))
                optimizer.zero_grad()
                lo.backward()
                optimizer.step()
                step += 1
                if on_step is not None:
                    on_step(step)
                total_loss += lo.value * len(idx)
                correct += _correct(out, yb)
                seen += len(idx)
                if bar is not None:
                    bar.update(epoch + 1, epochs, seen, n, total_loss / seen, correct / seen)
            row = {"epoch": epoch + 1, "loss": total_loss / max(seen, 1),
                   "accuracy": correct / max(seen, 1), "lr": optimizer.lr,
                   "seconds": time.perf_counter() - t0}
            history.append(row)
            if bar is not None:
                bar.update(epoch + 1, epochs, seen, n, row["loss"], row["accuracy"], final=True,
                           extra=f" ({row['seconds']:.1f}s)")
            if on_epoch is not None:
                on_epoch(epoch + 1, row)
    finally:
        if saved_input_grad is not None:
            first.input_grad = saved_input_grad  # type: ignore[union-attr]
    return history


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Model outputs (plain ndarray) in eval mode, batch by batch."""
    x = np.asarray(x)
    _check_xy(x, None)
    was_training = model.training
    model.eval()
    dtype = _model_dtype(model)
    try:
        outs = [np.asarray(model.forward(prepare(x[i:i + batch_size], dtype)))
                for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    if not outs:
        raise ValueError("predict got no samples")
    return np.concatenate(outs).view(np.ndarray)


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """Accuracy in [0, 1] (argmax vs labels; one output: > 0.5), in eval mode."""
    y = np.asarray(y)
    _check_xy(np.asarray(x), y)
    out = predict(model, x, batch_size)
    return _correct(out, y) / len(y)


# ------------------------------------------------------------------ float MLPs

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid,
                                           "tanh": nn.Tanh}

# The float MLP's policy: Adam, cosine decay, +-1 pixel shifts.
FLOAT_DEFAULTS = {"arch": [784, 128, 10], "act": "relu", "epochs": 15, "batch_size": 128,
                  "lr": 2e-3, "shift": 1}


def build_mlp(sizes: list[int], act: str = "relu") -> nn.Sequential:
    """Linear layers of `sizes` with `act` between them; the last layer outputs logits."""
    model = nn.Sequential()
    for k in range(len(sizes) - 1):
        if k:
            model.add(ACTIVATIONS[act]())
        model.add(nn.Linear(sizes[k], sizes[k + 1]))
    return model


def cosine(lr: float, epochs: int) -> Callable[[int], float]:
    """Cosine decay from lr (epoch 0) towards 0 (after the last epoch)."""
    return lambda e: float(lr * 0.5 * (1 + np.cos(np.pi * e / max(epochs, 1))))


def train_float(x: np.ndarray, y: np.ndarray, *, arch: list[int], act: str, epochs: int,
                batch_size: int, lr: float, shift: int, seed: int = 0,
                progress: bool | TextIO | None = None
                ) -> tuple[nn.Sequential, list[dict], dict]:
    """Float MLP: Adam, cosine learning-rate decay, random +-shift pixel augmentation.

    Returns (model, history, meta): meta names the optimizer, schedule and shift.
    """
    model = build_mlp(arch, act).init(seed)
    opt = nn.Adam(model.params(), lr)
    aug = (lambda xb, rng: random_shift(xb, rng, shift)) if shift else None
    history = fit(model, x, y, optimizer=opt, epochs=epochs, batch_size=batch_size, seed=seed,
                  progress=progress, schedule=cosine(lr, epochs), augment=aug)
    return model, history, {"optimizer": "adam", "schedule": "cosine", "shift": shift}
