"""nn: run piconn models (trained on a PC, docs/FORMAT.md) on MicroPython.

    import nn, mnist_q8               # a model frozen into the firmware
    m = nn.load(mnist_q8)             # validates; weights stay in flash
    k = m.predict(digit)              # digit: 784 raw bytes -> class index
    y = m.forward(digit)              # array('i') raw scores (x m.output_scale)
    print(m.summary())

Kernels come from the fastest tier present (nn._tiers): 'c' (the _nn_c module of
piconn's firmware), 'natmod' (the same C as a native module, nn/_nn_c_<arch>.mpy,
which mip installs with nn for stock firmware), 'viper' (ports that run native
code) or 'python' (any port); see backend(), use_backend() and docs/KERNELS.md.
"""
from nn.model import Model, backend, backends, load, use_backend

__version__ = "0.1.0"
__all__ = ("Model", "backend", "backends", "load", "use_backend")
