// piconn: Raspberry Pi Pico 2 (RP2350, 4 MB flash), based on MicroPython's RPI_PICO2.
// Flash layout (see ../PICO/README.md): 1536 KB code (firmware + frozen nn +
// frozen models), 512 KB ROMFS (mounted at /rom), 2048 KB littlefs at /.
#define MICROPY_HW_BOARD_NAME                   "Raspberry Pi Pico2 (piconn)"
#define MICROPY_HW_ROMFS_BYTES                  (512 * 1024)
#define MICROPY_HW_FLASH_STORAGE_BYTES          (2048 * 1024)
