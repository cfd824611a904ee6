# piconn: Raspberry Pi Pico 2 (RP2350 Arm cores, 4 MB flash), based on MicroPython's RPI_PICO2.
set(PICO_BOARD "pico2")
set(PICO_PLATFORM "rp2350")

include(${CMAKE_CURRENT_LIST_DIR}/../frozen_float.cmake)
