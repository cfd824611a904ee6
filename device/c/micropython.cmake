# Top-level list of piconn's MicroPython user C modules (CMake ports, e.g. rp2):
#   make -C ports/rp2 USER_C_MODULES=/path/to/piconn/device/c/micropython.cmake
# Make-based ports (unix) take the directory instead: USER_C_MODULES=/path/to/piconn/device/c
include(${CMAKE_CURRENT_LIST_DIR}/nn_c/micropython.cmake)
