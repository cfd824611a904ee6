"""piconn: train small networks on a PC, run them on a Raspberry Pi Pico."""

import os

# One thread per BLAS/OpenMP pool: the matrices here are small, and two threads
# on a 2-core machine made an MNIST epoch 10x slower under load. The pools read
# these once, when numpy loads, so import piconn before numpy (tests/conftest.py
# and the tools do); set a variable yourself to override it.
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
for _name in THREAD_VARIABLES:
    os.environ.setdefault(_name, "1")

__version__ = "0.1.0"
