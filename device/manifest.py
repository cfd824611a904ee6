# Manifest of the device package `nn`, in micropython-lib's form. A board manifest that
# says include("path/to/piconn/device/manifest.py") freezes nn into its firmware. mip
# installs from package.json beside this file instead: nn compiled to .mpy plus the C
# kernels as native modules (device/mip/, made by `make mip-package`).
metadata(  # noqa: F821 - manifest.py's own functions
    description="Run piconn models (trained on a PC, docs/FORMAT.md) on MicroPython.",
    version="0.1.0",
    license="MIT",
)

package("nn")  # noqa: F821
