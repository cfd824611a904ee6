# piconn: Raspberry Pi Pico (RP2040, 2 MB flash), based on MicroPython's RPI_PICO.
set(PICO_BOARD "pico")
set(PICO_PLATFORM "rp2040")

include(${CMAKE_CURRENT_LIST_DIR}/../frozen_float.cmake)
