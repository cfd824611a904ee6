# Type stubs of the device package `nn` (docs/KERNELS.md, docs/FORMAT.md).
from array import array
from types import ModuleType
from typing import Any, Literal

from nn import graph as _graph

__version__: str
__all__: tuple[str, ...]

Buffer = bytes | bytearray | memoryview
Tier = Literal["c", "natmod", "viper", "python"]

def load(src: bytes | memoryview | ModuleType | str, name: str | None = None
         ) -> Model | _graph.Model:
    """Load and validate a model (bytes used in place, a module with MODEL, or a path).

    Format version 1 gives a Model, version 2 (int8 graphs) an nn.graph.Model.
    ValueError/TypeError with a message on any bad input (a writable buffer in RAM,
    which could change after the check, included: pass bytes(buf)); RAM: activation
    buffers only.
    """

def backends() -> tuple[str, ...]:
    """Kernel tiers present, fastest first."""

def backend() -> str:
    """The tier in use ('c', 'natmod', 'viper' or 'python')."""

def use_backend(name: str) -> str:
    """Force a tier (ValueError if absent); returns the previous one."""

class Model:
    name: str | None
    family: str  # 'float', 'sparse', 'uint8', 'xnor'
    input_size: int
    input_dtype: str  # 'u8' (raw bytes) or 'f32' (array('f'))
    output_size: int
    output_dtype: str  # 'f32' or 'i32'
    output_scale: float  # raw i32 output * output_scale = logits
    n_layers: int
    param_bytes: int  # parameter arrays, read in place
    model_bytes: int
    ram: int  # bytes of buffers this model allocated (activations, scratch, copies)
    copies: int  # bytes of misaligned word arrays copied to RAM
    aligned: bool
    in_flash: bool
    where: str  # 'flash', 'romfs', 'file' (read into RAM) or 'in place'
    integer: bool  # no float layers: allocation-free in every tier
    def __init__(self, buf: bytes | memoryview, owner: Any = None, name: str | None = None,
                 where: str | None = None) -> None: ...
    def forward(self, x: Buffer | array, out: array | memoryview | None = None
                ) -> array | memoryview:
        """Raw output buffer (array('f') or array('i'), or `out`); allocates nothing."""
    def predict(self, x: Buffer | array) -> int:
        """Class index: first maximum of forward(x)."""
    def tiers(self) -> list[str]:
        """The tier running each layer."""
    def summary(self) -> str:
        """Layers, kinds, tiers, parameter bytes, RAM."""
