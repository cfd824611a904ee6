# piconn frozen-module manifest, shared by the PICO, PICO2 and UNIX builds
# (passed as FROZEN_MANIFEST by the top-level Makefile). It keeps the stock
# port's frozen modules, then freezes the device package `nn` and every
# exported model module in build/models/*.py.
#
# Paths without $(...) are relative to this file (boards/).
import glob
import os

# The stock manifest: rp2 keeps it in $(PORT_DIR)/boards/, the unix port's
# standard variant in $(PORT_DIR)/variants/standard/. include() cannot test
# for a file, so resolve $(PORT_DIR) through the manifest object (its v1.28.0
# API).
_port_dir = include.__self__._resolve_path("$(PORT_DIR)")  # noqa: F821
for _stock in ("boards/manifest.py", "variants/standard/manifest.py"):
    if os.path.isfile(os.path.join(_port_dir, _stock)):
        include("$(PORT_DIR)/" + _stock)  # noqa: F821
        break
else:
    raise SystemExit("piconn manifest: no stock manifest under " + _port_dir)

# The device package: device/nn/**/*.py frozen as `nn` (and `nn.*`).
if os.path.isdir("../device/nn"):
    package("nn", base_path="../device")  # noqa: F821

# Exported models: NAME.py in $PICONN_FROZEN_MODELS (the Makefile's FROZEN_MODELS,
# default build/models) frozen as module NAME. Their bytes constants stay in flash and
# are read in place.
_models = os.environ.get("PICONN_FROZEN_MODELS") or "../build/models"
for _path in sorted(glob.glob(os.path.join(_models, "*.py"))):
    module(os.path.basename(_path), base_path=_models)  # noqa: F821
