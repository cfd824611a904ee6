# Included by the rp2 boards' mpconfigboard.cmake.
# MicroPython v1.28.0's mpy-tool writes a NaN or infinite float constant of a frozen
# module (e.g. a folded `math.nan` or `math.inf`) as the bare C tokens `nan` / `inf`,
# which do not compile. frozen_content.c does not include <math.h>, so define them there.
set_source_files_properties(${CMAKE_BINARY_DIR}/frozen_content.c PROPERTIES
    COMPILE_DEFINITIONS "nan=__builtin_nan(\"\");inf=__builtin_inf()")
# Word-aligned frozen bytes: nn reads model weights in place with word loads. At -Os
# (MinSizeRel) ARM GCC leaves C string literals (mpy-tool's bytes constants)
# unaligned; at -O2 it aligns them to 4 bytes (at most 3 pad bytes per constant), so
# nn.load need not copy misaligned arrays to RAM.
set_property(SOURCE ${CMAKE_BINARY_DIR}/frozen_content.c APPEND PROPERTY COMPILE_OPTIONS "-O2")
