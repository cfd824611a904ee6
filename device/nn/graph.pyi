# Type stubs of nn.graph: the model object of format version 2 (docs/FORMAT.md "Version
# 2", int8 graphs of TensorFlow Lite models), which nn.load returns for such a file.
from array import array
from typing import Any, Literal

Buffer = bytes | bytearray | memoryview
Tier = Literal["c", "natmod", "viper", "python"]

class Model:
    """A validated version 2 model; its weights and tables stay in the model's buffer.

    OpenMV ml.Model's names, one list entry per graph input or output.
    """

    name: str | None
    input_shape: list[tuple[int, ...]]  # NHWC
    input_dtype: list[Literal["b", "f"]]  # int8 or float32 (array typecodes)
    input_scale: list[float]  # real = scale * (q - zero_point); 0.0 for float32
    input_zero_point: list[int]
    output_shape: list[tuple[int, ...]]
    output_dtype: list[Literal["b", "f"]]
    output_scale: list[float]
    output_zero_point: list[int]
    arena_size: int  # bytes of RAM for every activation (one buffer, allocated at load)
    model_bytes: int
    n_operators: int
    n_tensors: int
    in_flash: bool
    where: str  # 'flash', 'romfs', 'file' (read into RAM) or 'in place'
    integer: bool  # int8 inputs and outputs: forward() allocates nothing
    def __init__(self, buf: memoryview, owner: Any = None, name: str | None = None,
                 where: str | None = None) -> None: ...
    def forward(self, x: Buffer | array | tuple[Buffer | array, ...],
                out: bytearray | array | tuple[bytearray | array, ...] | None = None
                ) -> array | tuple[array, ...]:
        """The output(s): array('b') (int8) or array('f') (float32), owned by the model
        (or `out`). x: bytes/bytearray/array('b') of the input's size, array('f') for a
        float32 input, a tuple for several inputs; TypeError/ValueError otherwise. With int8
        inputs and outputs it allocates nothing, but for the first call after
        nn.use_backend() changed the tier and, in the python tier of a 32-bit port, an
        int32 accumulator past +-2^30."""
    def predict(self, x: Buffer | array | tuple[Buffer | array, ...]) -> int:
        """Index of the first maximum of the (first) output."""
    def quantize(self, values: Any, out: array | bytearray | None = None) -> array | bytearray:
        """int8 input of real values: round(v / input_scale) + input_zero_point."""
    def dequantize(self, y: Buffer | array, out: array | None = None) -> array:
        """array('f') of the real values of an int8 (first) output."""
    def tiers(self) -> list[Tier]:
        """The tier running each operator."""
    def summary(self) -> str:
        """Operators (kind, tier, MACs, output shape, live bytes), arena, model bytes."""
