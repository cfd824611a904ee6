"""A small, explicit neural-network library on numpy (training on the host).

Every layer is a `Module` with a hand-written `forward` and `backward`:

    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    model.init(seed=0)
    opt = nn.Adam(model.params(), 1e-3)
    out = model(x)                     # an `nn.Tensor`: an ndarray that remembers `model`
    loss = nn.cross_entropy(out, labels)
    opt.zero_grad(); loss.backward(); opt.step()

How `loss.backward()` works: calling a module (`model(x)`) runs `forward` (which
caches what `backward` needs while `training`) and returns the output as a
`Tensor` that records the module and which call produced it. A loss keeps that
tensor and its own gradient `d loss / d output`; `loss.backward()` passes the
gradient to `module.backward`, which accumulates into each `Param.grad`. Calling
the module again before `backward` is detected and refused (the cache is gone).

Module protocol (subclass it; see `Linear` for a complete example):
  forward(x) -> y, backward(grad_y) -> grad_x, params() -> list[Param],
  init(rng), train(mode=True), eval(), .training, config() -> dict (JSON-able
  constructor kwargs), `buffers` (class attribute: names of non-parameter
  arrays to save, e.g. batch-norm running statistics), state()/load_state().
Decorate subclasses with `@nn.register` so `nn.save`/`nn.load` know them.

dtype: float32 by default. `Sequential(..., dtype=np.float64)` or
`model.init(seed, dtype=np.float64)` casts every parameter and float buffer and
every input of `Sequential.forward` (the gradient checks use float64).
Initialization: Linear weights Glorot-uniform, biases zero.
"""

from __future__ import annotations

import importlib
import json
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "piconn-model"
FORMAT_VERSION = 1
DEFAULT_DTYPE = np.float32

__all__ = [
    "FORMAT_VERSION",
    "REGISTRY",
    "SGD",
    "Adam",
    "BatchNorm1d",
    "Dropout",
    "Flatten",
    "Linear",
    "Loss",
    "Module",
    "Param",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "Tensor",
    "cross_entropy",
    "load",
    "mse",
    "register",
    "save",
]


# --------------------------------------------------------------------------- core


class Param:
    """A trainable array and its gradient (same shape and dtype).

    `mask` (bool, same shape, or None): entries where it is False are held at
    zero by the optimizers (pruning). Layers set it; see `Linear.mask`.
    """

    def __init__(self, data: np.ndarray, mask: np.ndarray | None = None) -> None:
        self.data = np.asarray(data)
        self.grad = np.zeros_like(self.data)
        self.mask = mask

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def zero_grad(self) -> None:
        if self.grad.shape != self.data.shape or self.grad.dtype != self.data.dtype:
            self.grad = np.zeros_like(self.data)
        else:
            self.grad.fill(0)

    def astype(self, dtype: Any) -> None:
        """Cast data and grad in place of the attributes (new arrays)."""
        self.data = self.data.astype(dtype)
        self.grad = np.zeros_like(self.data)

    def __repr__(self) -> str:
        return f"Param(shape={self.data.shape}, dtype={self.data.dtype})"


class Tensor(np.ndarray):
    """A module's output: an ndarray that remembers which module call produced it.

    Only the array returned by `module(x)` carries the producer; anything derived
    from it (slices, arithmetic) is a Tensor without one, so a loss on it cannot
    be back-propagated (and says so).
    """

    producer: Module | None = None
    call_id: int = -1

    def __array_finalize__(self, obj: Any) -> None:
        self.producer = None
        self.call_id = -1

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        # Arithmetic and reductions on an output give plain ndarrays.
        inputs = tuple(i.view(np.ndarray) if isinstance(i, Tensor) else i for i in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(
                o.view(np.ndarray) if isinstance(o, Tensor) else o for o in kwargs["out"])
        return getattr(ufunc, method)(*inputs, **kwargs)

    def numpy(self) -> np.ndarray:
        """The plain ndarray view."""
        return self.view(np.ndarray)


class Module:
    """Base class of layers and containers. See the module docstring for the protocol."""

    buffers: tuple[str, ...] = ()
    training = True

    def __init__(self) -> None:
        self.training = True
        self._calls = 0

    # -- to override
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def init(self, rng: np.random.Generator) -> None:
        """(Re)initialize parameters from `rng`. Parameter-free modules do nothing."""

    def config(self) -> dict:
        """JSON-able constructor keyword arguments (for `save`)."""
        return {}

    # -- generic
    def params(self) -> list[Param]:
        """Parameters in a fixed order: Param attributes, then those of submodules."""
        out: list[Param] = []
        for value in vars(self).values():
            if isinstance(value, Param):
                out.append(value)
            elif isinstance(value, Module):
                out.extend(value.params())
            elif isinstance(value, (list, tuple)):
                for v in value:
                    if isinstance(v, Module):
                        out.extend(v.params())
        return out

    def named_params(self) -> dict[str, Param]:
        """This module's own Param attributes by name (not submodules')."""
        return {k: v for k, v in vars(self).items() if isinstance(v, Param)}

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to save: own parameters plus the `buffers` that are not None."""
        st = {k: p.data for k, p in self.named_params().items()}
        for name in self.buffers:
            value = getattr(self, name)
            if value is not None:
                st[name] = np.asarray(value)
        return st

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore arrays saved by `state` (shapes must match the configured layer)."""
        params = self.named_params()
        for name, arr in state.items():
            if name in params:
                p = params[name]
                if arr.shape != p.data.shape:
                    raise ValueError(
                        f"{type(self).__name__}.{name}: saved shape {arr.shape}, "
                        f"layer expects {p.data.shape}"
                    )
                p.data = np.array(arr)
                p.grad = np.zeros_like(p.data)
            elif name in self.buffers:
                setattr(self, name, np.array(arr))
            else:
                raise ValueError(f"{type(self).__name__} has no parameter or buffer {name!r}")
        for name in self.buffers:
            if name not in state:
                setattr(self, name, None)

    def astype(self, dtype: Any) -> None:
        """Cast parameters and floating buffers to `dtype`."""
        for p in self.named_params().values():
            p.astype(dtype)
        for name in self.buffers:
            value = getattr(self, name)
            if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
                setattr(self, name, value.astype(dtype))

    def train(self, mode: bool = True) -> Module:
        self.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.params():
            p.zero_grad()

    def __call__(self, x: np.ndarray) -> Tensor:
        self._calls = getattr(self, "_calls", 0) + 1
        y = np.asarray(self.forward(x)).view(Tensor)
        y.producer = self
        y.call_id = self._calls
        return y

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


REGISTRY: dict[str, type[Module]] = {}


def register(cls: type[Module]) -> type[Module]:
    """Class decorator: make a Module subclass known to `save`/`load` by its name."""
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise TypeError(f"@register expects a Module subclass, got {cls!r}")
    other = REGISTRY.get(cls.__name__)
    if other is not None and other is not cls and (
        other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(
            f"layer type {cls.__name__!r} is already registered by {other.__module__}"
        )
    REGISTRY[cls.__name__] = cls
    return cls


def need_cache(module: Module, value: Any) -> Any:
    """`value` (what forward cached for backward), or a clear RuntimeError if it is None."""
    if value is None:
        raise RuntimeError(
            f"{type(module).__name__}.backward without a training-mode forward "
            "(call model.train() and run the forward pass first)"
        )
    return value


# ------------------------------------------------------------------------- layers


@register
class Linear(Module):
    """y = x @ (weight * mask).T + bias. weight: (n_out, n_in), bias: (n_out,).

    `mask` (bool (n_out, n_in) or None): pruned weights (False) do not take part in
    forward, get zero gradient, and are held at zero by the optimizers.
    """

    buffers = ("mask",)

    def __init__(self, n_in: int, n_out: int, bias: bool = True) -> None:
        super().__init__()
        if int(n_in) < 1 or int(n_out) < 1:
            raise ValueError(f"Linear sizes must be positive, got ({n_in}, {n_out})")
        self.n_in, self.n_out, self.has_bias = int(n_in), int(n_out), bool(bias)
        self.weight = Param(np.zeros((self.n_out, self.n_in), DEFAULT_DTYPE))
        self.bias = Param(np.zeros(self.n_out, DEFAULT_DTYPE)) if bias else None
        self.input_grad = True  # False: backward skips grad_x (first layer of a model)
        self._x: np.ndarray | None = None

    @property
    def mask(self) -> np.ndarray | None:
        return self.weight.mask

    @mask.setter
    def mask(self, value: np.ndarray | None) -> None:
        if value is not None:
            value = np.asarray(value)
            if value.shape != self.weight.data.shape:
                raise ValueError(
                    f"mask shape {value.shape} != weight shape {self.weight.data.shape}"
                )
            value = value.astype(bool)
            self.weight.data = self.weight.data * value
        self.weight.mask = value

    def config(self) -> dict:
        return {"n_in": self.n_in, "n_out": self.n_out, "bias": self.has_bias}

    def init(self, rng: np.random.Generator) -> None:
        limit = np.sqrt(6.0 / (self.n_in + self.n_out))
        dtype = self.weight.data.dtype
        w = rng.uniform(-limit, limit, (self.n_out, self.n_in)).astype(dtype)
        if self.mask is not None:
            w *= self.mask
        self.weight.data = w
        self.weight.grad = np.zeros_like(w)
        if self.bias is not None:
            self.bias.data = np.zeros(self.n_out, dtype)
            self.bias.grad = np.zeros_like(self.bias.data)

    def effective_weight(self) -> np.ndarray:
        w = self.weight.data
        return w if self.mask is None else w * self.mask

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.shape[-1] != self.n_in:
            raise ValueError(f"Linear({self.n_in}, {self.n_out}) got input shape {x.shape}")
        y = x @ self.effective_weight().T
        if self.bias is not None:
            y += self.bias.data
        self._x = x if self.training else None
        return y

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        x = need_cache(self, self._x)
        g2 = grad_y.reshape(-1, self.n_out)
        gw = g2.T @ x.reshape(-1, self.n_in)
        if self.mask is not None:
            gw *= self.mask
        self.weight.grad += gw
        if self.bias is not None:
            self.bias.grad += g2.sum(axis=0)
        if not self.input_grad:
            return None  # type: ignore[return-value]
        return grad_y @ self.effective_weight()


@register
class ReLU(Module):
    def forward(self, x: np.ndarray) -> np.ndarray:
        y = np.maximum(x, 0)
        self._pos = (x > 0) if self.training else None
        return y

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        return grad_y * need_cache(self, getattr(self, "_pos", None))


@register
class Sigmoid(Module):
    def forward(self, x: np.ndarray) -> np.ndarray:
        # 0.5 * (1 + tanh(x/2)) is the logistic function without overflow.
        y = 0.5 * (1.0 + np.tanh(0.5 * x))
        self._y = y if self.training else None
        return y

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        y = need_cache(self, getattr(self, "_y", None))
        return grad_y * y * (1 - y)


@register
class Tanh(Module):
    def forward(self, x: np.ndarray) -> np.ndarray:
        y = np.tanh(x)
        self._y = y if self.training else None
        return y

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        y = need_cache(self, getattr(self, "_y", None))
        return grad_y * (1 - y * y)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@register
class Softmax(Module):
    """Softmax over the last axis. Train with `cross_entropy` on the logits instead."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = _softmax(x)
        self._y = y if self.training else None
        return y

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        y = need_cache(self, getattr(self, "_y", None))
        return y * (grad_y - (grad_y * y).sum(axis=-1, keepdims=True))


@register
class Flatten(Module):
    """(N, ...) -> (N, prod(...))."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape if self.training else None
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        return grad_y.reshape(need_cache(self, getattr(self, "_shape", None)))


@register
class Dropout(Module):
    """Inverted dropout: in training zero each element with probability p, scale by 1/(1-p)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"Dropout p must be in [0, 1), got {p}")
        self.p = float(p)
        self._rng = np.random.default_rng(0)
        self._keep: np.ndarray | None = None

    def config(self) -> dict:
        return {"p": self.p}

    def init(self, rng: np.random.Generator) -> None:
        self._rng = np.random.default_rng(int(rng.integers(2**63)))

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0.0:
            self._keep = None
            return x
        keep = (self._rng.random(x.shape) >= self.p).astype(x.dtype) / (1.0 - self.p)
        self._keep = keep
        return x * keep

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        if self.p == 0.0:
            return grad_y
        return grad_y * need_cache(self, self._keep)


@register
class BatchNorm1d(Module):
    """Batch norm over the batch axis of (N, n): y = gamma*(x - mean)/sqrt(var + eps) + beta.

    Training uses batch statistics and updates running ones (unbiased variance,
    `momentum` weight of the new batch); eval uses the running statistics.
    """

    buffers = ("running_mean", "running_var")

    def __init__(self, n: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.n, self.eps, self.momentum = int(n), float(eps), float(momentum)
        self.gamma = Param(np.ones(self.n, DEFAULT_DTYPE))
        self.beta = Param(np.zeros(self.n, DEFAULT_DTYPE))
        self.running_mean = np.zeros(self.n, DEFAULT_DTYPE)
        self.running_var = np.ones(self.n, DEFAULT_DTYPE)
        self._cache: tuple | None = None

    def config(self) -> dict:
        return {"n": self.n, "eps": self.eps, "momentum": self.momentum}

    def init(self, rng: np.random.Generator) -> None:
        dt = self.gamma.data.dtype
        self.gamma.data, self.beta.data = np.ones(self.n, dt), np.zeros(self.n, dt)
        self.gamma.grad, self.beta.grad = np.zeros(self.n, dt), np.zeros(self.n, dt)
        self.running_mean, self.running_var = np.zeros(self.n, dt), np.ones(self.n, dt)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.shape[-1] != self.n:
            raise ValueError(f"BatchNorm1d({self.n}) got input shape {x.shape}")
        if self.training:
            mean, var = x.mean(axis=0), x.var(axis=0)
            n = x.shape[0]
            mom = self.momentum
            self.running_mean = ((1 - mom) * self.running_mean + mom * mean).astype(x.dtype)
            unbiased = var * n / max(n - 1, 1)
            self.running_var = ((1 - mom) * self.running_var + mom * unbiased).astype(x.dtype)
        else:
            mean, var = self.running_mean, self.running_var
        inv = 1.0 / np.sqrt(var + self.eps)
        xhat = (x - mean) * inv
        self._cache = (xhat, inv) if self.training else None
        return (self.gamma.data * xhat + self.beta.data).astype(x.dtype)

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        xhat, inv = need_cache(self, self._cache)
        self.gamma.grad += (grad_y * xhat).sum(axis=0)
        self.beta.grad += grad_y.sum(axis=0)
        g = grad_y * self.gamma.data
        n = grad_y.shape[0]
        return inv / n * (n * g - g.sum(axis=0) - xhat * (g * xhat).sum(axis=0))

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Inference as y = k*x + c (float64)."""
        k = self.gamma.data.astype(np.float64) / np.sqrt(
            self.running_var.astype(np.float64) + self.eps)
        return k, self.beta.data.astype(np.float64) - k * self.running_mean.astype(np.float64)


@register
class Sequential(Module):
    """Layers applied in order. `dtype` (default float32) applies to params and inputs."""

    def __init__(self, *layers: Module, dtype: Any = DEFAULT_DTYPE) -> None:
        super().__init__()
        self.layers: list[Module] = []
        self.dtype = np.dtype(dtype)
        if not np.issubdtype(self.dtype, np.floating):
            raise TypeError(f"Sequential dtype must be floating, got {self.dtype}")
        for layer in layers:
            self.add(layer)

    def add(self, layer: Module) -> Sequential:
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential.add expects a Module, got {type(layer).__name__}")
        if isinstance(layer, Sequential):
            raise TypeError("nested Sequential is not supported; add its layers instead")
        layer.train(self.training)
        layer.astype(self.dtype)
        self.layers.append(layer)
        return self

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def init(self, seed: int | np.random.Generator | None = None,  # type: ignore[override]
             dtype: Any = None) -> Sequential:
        """Initialize every layer from one generator (seed int, Generator or None)."""
        if dtype is not None:
            self.astype(dtype)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        for layer in self.layers:
            layer.init(rng)
            layer.astype(self.dtype)
        return self

    def astype(self, dtype: Any) -> None:
        dt = np.dtype(dtype)
        if not np.issubdtype(dt, np.floating):
            raise TypeError(f"model dtype must be floating, got {dt}")
        self.dtype = dt
        for layer in self.layers:
            layer.astype(dt)

    def train(self, mode: bool = True) -> Sequential:
        self.training = mode
        for layer in self.layers:
            layer.train(mode)
        return self

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad_y: np.ndarray) -> np.ndarray:
        g = np.asarray(grad_y)
        for layer in reversed(self.layers):
            g = layer.backward(g)
            if g is None:
                break
        return g

    def params(self) -> list[Param]:
        return [p for layer in self.layers for p in layer.params()]

    def config(self) -> dict:
        return {"dtype": self.dtype.name}

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential({inner})"


# -------------------------------------------------------------------------- losses


class Loss:
    """A loss value plus its gradient w.r.t. the module output it was computed on."""

    def __init__(self, value: float, grad: np.ndarray, out: np.ndarray) -> None:
        self.value = float(value)
        self.grad = grad
        self._out = out

    def __float__(self) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"Loss({self.value:.6g})"

    def backward(self) -> np.ndarray | None:
        """Back-propagate into the producer's parameters; returns the input gradient."""
        out = self._out
        producer = getattr(out, "producer", None)
        if producer is None:
            raise RuntimeError(
                "loss.backward() needs the array returned by calling a module (model(x)) "
                "directly, not a copy, slice or plain array"
            )
        if getattr(producer, "_calls", None) != out.call_id:
            raise RuntimeError(
                f"{type(producer).__name__} was called again after producing this output; "
                "compute the loss on the latest output before calling backward"
            )
        return producer.backward(self.grad)


def _float_array(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be a floating array, got {arr.dtype}")
    return arr.view(np.ndarray)


def mse(out: np.ndarray, y: Any) -> Loss:
    """Mean squared error over all elements: mean((out - y)^2)."""
    o = _float_array(out, "mse output")
    t = np.asarray(y, dtype=o.dtype)
    if t.shape != o.shape:
        if t.size == o.size:
            t = t.reshape(o.shape)
        else:
            raise ValueError(f"mse: target shape {t.shape} does not match output {o.shape}")
    d = o - t
    return Loss(float(np.mean(d * d)), (2.0 / d.size) * d, out)


def cross_entropy(logits: np.ndarray, labels: Any) -> Loss:
    """Mean softmax cross-entropy. labels: int class indices (N,) or one-hot/probabilities (N, C)."""
    z = _float_array(logits, "cross_entropy logits")
    if z.ndim != 2:
        raise ValueError(f"cross_entropy expects logits of shape (N, C), got {z.shape}")
    n, c = z.shape
    lab = np.asarray(labels)
    shifted = z - z.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    if lab.ndim == 1:
        if not np.issubdtype(lab.dtype, np.integer):
            raise TypeError(f"cross_entropy labels must be integers, got {lab.dtype}")
        if lab.shape[0] != n:
            raise ValueError(f"cross_entropy: {lab.shape[0]} labels for {n} outputs")
        if n and (lab.min() < 0 or lab.max() >= c):
            raise ValueError(f"cross_entropy labels must be in [0, {c}), got {lab.min()}..{lab.max()}")
        idx = np.arange(n)
        value = -logp[idx, lab].mean() if n else 0.0
        grad = p
        grad[idx, lab] -= 1
    elif lab.shape == z.shape:
        t = lab.astype(z.dtype)
        value = -(t * logp).sum(axis=1).mean()
        grad = p * t.sum(axis=1, keepdims=True) - t
    else:
        raise ValueError(f"cross_entropy: labels shape {lab.shape} for logits {z.shape}")
    grad /= max(n, 1)
    return Loss(float(value), grad.astype(z.dtype, copy=False), logits)


# ---------------------------------------------------------------------- optimizers


class Optimizer:
    """Base: holds params and a settable learning rate `lr`."""

    def __init__(self, params: Iterable[Param], lr: float, weight_decay: float = 0.0) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got no parameters (did you pass model.params()?)")
        for p in self.params:
            if not isinstance(p, Param):
                raise TypeError(f"optimizer expects Param objects, got {type(p).__name__}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()

    def _grad(self, p: Param) -> np.ndarray:
        g = p.grad
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        return g

    @staticmethod
    def _apply_mask(p: Param) -> None:
        if p.mask is not None:
            p.data *= p.mask

    def step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """SGD with optional (heavy-ball) momentum and L2 weight decay."""

    def __init__(self, params: Iterable[Param], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr, weight_decay)
        self.momentum = float(momentum)
        self._v: list[np.ndarray | None] = [None] * len(self.params)

    def step(self) -> None:
        self.steps += 1
        for k, p in enumerate(self.params):
            g = self._grad(p)
            if self.momentum:
                v = self._v[k]
                v = g.copy() if v is None else self.momentum * v + g
                self._v[k] = v
                g = v
            p.data -= (self.lr * g).astype(p.data.dtype, copy=False)
            self._apply_mask(p)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; weight_decay is L2 added to the gradient."""

    def __init__(self, params: Iterable[Param], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr, weight_decay)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self._m = [np.zeros_like(p.data) for p in self.params]
        self._v = [np.zeros_like(p.data) for p in self.params]

    def step(self) -> None:
        self.steps += 1
        b1, b2 = self.betas
        c1 = 1 - b1 ** self.steps
        c2 = 1 - b2 ** self.steps
        step = self.lr * np.sqrt(c2) / c1
        for k, p in enumerate(self.params):
            g = self._grad(p)
            m, v = self._m[k], self._v[k]
            if m.shape != p.data.shape or m.dtype != p.data.dtype:
                m = self._m[k] = np.zeros_like(p.data)
                v = self._v[k] = np.zeros_like(p.data)
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            p.data -= (step * m / (np.sqrt(v) + self.eps * np.sqrt(c2))).astype(
                p.data.dtype, copy=False)
            self._apply_mask(p)


# ---------------------------------------------------------------------- save / load


def _layer_record(layer: Module) -> dict:
    cls = type(layer)
    if REGISTRY.get(cls.__name__) is not cls:
        raise ValueError(
            f"cannot save layer type {cls.__name__}: decorate it with @nn.register"
        )
    config = layer.config()
    try:
        json.dumps(config)
    except TypeError as e:
        raise ValueError(f"{cls.__name__}.config() is not JSON-able: {e}") from None
    return {"type": cls.__name__, "module": cls.__module__, "config": config}


def save(model: Sequential, path: str | Path, meta: dict | None = None) -> Path:
    """Write `model` (a Sequential of registered layers) and `meta` to an .npz file.

    The file holds `__header__` (JSON: format, version, dtype, layer types and
    configs, meta) and each layer's arrays as `L{index}.{name}`, stored exactly.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"nn.save expects a Sequential, got {type(model).__name__}")
    meta = dict(meta or {})
    try:
        json.dumps(meta)
    except TypeError as e:
        raise ValueError(f"meta must be JSON-able: {e}") from None
    arrays: dict[str, np.ndarray] = {}
    layers = []
    for k, layer in enumerate(model.layers):
        rec = _layer_record(layer)
        st = layer.state()
        rec["arrays"] = sorted(st)
        for name, arr in st.items():
            arrays[f"L{k}.{name}"] = np.asarray(arr)
        layers.append(rec)
    header = {"format": FORMAT, "version": FORMAT_VERSION, "dtype": model.dtype.name,
              "layers": layers, "meta": meta}
    path = Path(path)
    with open(path, "wb") as f:  # np.savez would append ".npz" to other names
        np.savez(f, __header__=np.array(json.dumps(header)), **arrays)
    return path


def _resolve_type(rec: dict) -> type[Module]:
    name = rec.get("type")
    if name not in REGISTRY:
        mod = rec.get("module", "")
        if isinstance(mod, str) and (mod == "piconn" or mod.startswith("piconn.")):
            try:
                importlib.import_module(mod)
            except ImportError:
                pass
    if name not in REGISTRY:
        raise ValueError(
            f"unknown layer type {name!r} (from module {rec.get('module')!r}); "
            f"known: {', '.join(sorted(REGISTRY))}. Import the module that defines it."
        )
    return REGISTRY[name]


def load(path: str | Path) -> tuple[Sequential, dict]:
    """Read a model written by `save`; returns (model in eval mode, meta)."""
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a piconn model file ({e})") from None
    if getattr(npz, "files", None) is None:
        raise ValueError(f"{path}: not a piconn model file (a single .npy array)")
    with npz:
        if "__header__" not in npz.files:
            raise ValueError(f"{path}: not a piconn model file (no __header__)")
        try:
            header = json.loads(str(npz["__header__"]))
        except ValueError as e:
            raise ValueError(f"{path}: corrupt header ({e})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"{path}: not a piconn model file (format {header.get('format')!r})")
        version = header.get("version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{path}: model format version {version!r} is not supported "
                f"(this piconn reads version {FORMAT_VERSION})"
            )
        model = Sequential(dtype=header.get("dtype", "float32"))
        for k, rec in enumerate(header["layers"]):
            cls = _resolve_type(rec)
            try:
                layer = cls(**rec.get("config", {}))
            except TypeError as e:
                raise ValueError(f"{path}: layer {k} ({cls.__name__}): bad config: {e}") from None
            model.add(layer)
            state = {}
            for name in rec.get("arrays", []):
                key = f"L{k}.{name}"
                if key not in npz.files:
                    raise ValueError(f"{path}: missing array {key}")
                state[name] = npz[key]
            layer.load_state(state)
        meta = header.get("meta", {})
    model.eval()
    return model, meta


def count_params(model: Module) -> int:
    """Number of trainable scalars (masked-out weights included)."""
    return int(sum(p.data.size for p in model.params()))


def numerical_grad(f: Callable[[], float], a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of scalar `f()` w.r.t. array `a` (modified in place)."""
    g = np.zeros_like(a, dtype=np.float64)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g
