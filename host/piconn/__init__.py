"""piconn: train small networks on a PC, run them on a Raspberry Pi Pico."""

__version__ = "0.1.0"
