"""nn: run piconn models (trained on a PC, docs/FORMAT.md) on MicroPython.

    import nn, mnist_q8               # a model frozen into the firmware
    m = nn.load(mnist_q8)             # validates; weights stay in flash
    k = m.predict(digit)              # digit: 784 raw bytes -> class index
    y = m.forward(digit)              # array('i') raw scores (x m.output_scale)
    print(m.summary())

Kernels come from the fastest tier present: 'c' (the _nn_c firmware module),
'viper' (ports with the native emitter) or 'python' (any port); see backend(),
use_backend() and docs/KERNELS.md.
"""
from nn.model import Model, backend, backends, load, use_backend

__version__ = "0.1.0"
__all__ = ("Model", "backend", "backends", "load", "use_backend")
