"""piconn: train small networks on a PC, run them on a Raspberry Pi Pico."""

import os

# One BLAS thread: the matrices here are small, and two threads on a 2-core
# machine made an MNIST epoch 10x slower under load. Must precede numpy's import.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
