// piconn: Raspberry Pi Pico (RP2040, 2 MB flash), based on MicroPython's RPI_PICO.
// Flash layout (see README.md): 1408 KB code (firmware + frozen nn + frozen
// models), then 256 KB ROMFS (mounted at /rom), then 384 KB littlefs at /.
#define MICROPY_HW_BOARD_NAME                   "Raspberry Pi Pico (piconn)"
#define MICROPY_HW_ROMFS_BYTES                  (256 * 1024)
#define MICROPY_HW_FLASH_STORAGE_BYTES          (384 * 1024)
