# piconn `_nn_c` user C module for CMake-based ports (rp2). Included from
# device/c/micropython.cmake, which is what USER_C_MODULES points at:
#   make -C ports/rp2 BOARD=RPI_PICO USER_C_MODULES=/path/to/piconn/device/c/micropython.cmake
add_library(usermod_nn_c INTERFACE)

target_sources(usermod_nn_c INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}/mod_nn_c.c
    ${CMAKE_CURRENT_LIST_DIR}/nn_kernels.c
    ${CMAKE_CURRENT_LIST_DIR}/nn_graph.c
    ${CMAKE_CURRENT_LIST_DIR}/nn_int8.c
    ${CMAKE_CURRENT_LIST_DIR}/nn_float.c
    ${CMAKE_CURRENT_LIST_DIR}/nn_xnor_graph.c
)

target_include_directories(usermod_nn_c INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}
)

# The kernels' hot loops go to RAM on the RP2040 (.time_critical.* sections, which the
# pico-sdk linker script places in SRAM): flash runs through a 16 KB XIP cache that
# the streamed weights keep evicting.
target_compile_definitions(usermod_nn_c INTERFACE NN_KERNELS_IN_RAM=1)

# The firmware is built -Os (MinSizeRel); the kernels want -O2, as MicroPython does for
# its own hot files (py/vm.c, py/map.c). Float kinds are IEEE float32 with every product
# and sum rounded (docs/FORMAT.md): no fused multiply-add (the RP2350's FPU has one).
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/nn_kernels.c
    ${CMAKE_CURRENT_LIST_DIR}/nn_graph.c ${CMAKE_CURRENT_LIST_DIR}/nn_int8.c
    ${CMAKE_CURRENT_LIST_DIR}/nn_float.c
    ${CMAKE_CURRENT_LIST_DIR}/nn_xnor_graph.c
    PROPERTIES COMPILE_OPTIONS "-O2;-ffp-contract=off"
)

target_link_libraries(usermod INTERFACE usermod_nn_c)
