# Top-level list of piconn's MicroPython user C modules (CMake ports, e.g. rp2):
#   make -C ports/rp2 USER_C_MODULES=/path/to/piconn/device/c/micropython.cmake
# Make-based ports (unix) take the directory instead: USER_C_MODULES=/path/to/piconn/device/c
include(${CMAKE_CURRENT_LIST_DIR}/nn_c/micropython.cmake)

# Frozen models are read in place, word by word, so their bytes must be 4-byte aligned.
# mpy-tool emits each frozen bytes object's data as a C string literal, and gcc aligns
# string literals to 4 bytes except when optimizing for size (-Os, the rp2 default,
# puts them in .rodata.str1.1 at any address). -O2 for that one file keeps them aligned.
set_source_files_properties(${CMAKE_BINARY_DIR}/frozen_content.c
    PROPERTIES COMPILE_OPTIONS "-O2"
)
