# piconn: train on the host, run on a Raspberry Pi Pico under MicroPython.
#   make demo    train, export, build the firmware, run the demo on the virtual Pico
#   make test    the test suite (what CI runs)
#   make bench   benchmarks on the virtual Pico: build/bench.md, bench.json, bench.png
# Everything installs what it needs: Python packages into .venv, Debian's
# arm-none-eabi toolchain, npm packages into tools/node_modules.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: venv test lint node-deps

# The venv is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "piconn needs Python 3.10 or newer"' \
	  || { echo "error: $(PYTHON) is missing or older than 3.10; install python3 and python3-venv"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) \
	  || { echo "error: could not create $(VENV); on Debian: apt-get install python3-venv"; exit 1; }
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

test: venv test-builds node-deps
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check host tests tools

# npm packages for the tests (tools/node/package.json): MicroPython's webassembly
# port runs the plain-Python tier of `nn` where no unix-port build exists.
NODE_STAMP := tools/node/node_modules/.package-lock.json
node-deps: $(NODE_STAMP)
$(NODE_STAMP): tools/node/package.json tools/node/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix tools/node --no-audit --no-fund --loglevel=error; \
	else echo "note: no npm: the tests that use the webassembly MicroPython will skip"; fi

# ---------------------------------------------------------------------------
# Models, firmware, virtual Pico.
#   make models                  train + export the MNIST models into build/models (only what's missing)
#   make romfs                   build/models.romfs: models for the /rom partition (read in place)
#   make firmware [BOARD=PICO]   build/PICO/firmware.uf2 (BOARD=PICO2: build/PICO2, BOARD=UNIX: build/UNIX/micropython)
#   make emulate [PORT=2040]     boot build/PICO/firmware.uf2 in the virtual Pico, console on 127.0.0.1:PORT
#   make deploy [BOARD=PICO]     copy the UF2 to a Pico in BOOTSEL mode
# MicroPython $(MICROPY_VERSION) is taken from MICROPY_DIR (cloned there when missing).

MICROPY_VERSION := v1.28.0
MICROPY_DIR ?= $(HOME)/.cache/piconn/micropython-$(MICROPY_VERSION)
MICROPY_GIT ?= https://github.com/micropython/micropython.git
MICROPY_SUBMODULES := lib/pico-sdk lib/tinyusb lib/mbedtls lib/micropython-lib
# Files whose presence shows a usable tree (the rp2 build needs the four submodules).
MICROPY_TREE_FILES := py/mpconfig.h mpy-cross/Makefile ports/unix/Makefile ports/rp2/CMakeLists.txt \
  lib/pico-sdk/README.md lib/tinyusb/src/tusb.h lib/mbedtls/library/aes.c lib/micropython-lib/README.md
BOARD ?= PICO
PORT ?= 2040
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
ARM_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib
HOST_PACKAGES := build-essential cmake git

# Per-board settings: UF2 family, flash size, extra UF2 flags.
PICO_FAMILY := rp2040
PICO_FLASH := 2097152
PICO_UF2_FLAGS :=
PICO2_FAMILY := rp2350-arm-s
PICO2_FLASH := 4194304
# picotool adds this block for RP2350 (erratum RP2350-E10); so do we.
PICO2_UF2_FLAGS := --abs-block

# The C user module (device/c): used as soon as its build files exist.
NN_C_CMAKE := $(firstword $(wildcard device/c/micropython.cmake) $(wildcard device/c/*/micropython.cmake))
NN_C_MK_ROOT := $(if $(wildcard device/c/micropython.mk),$(abspath device),$(if $(wildcard device/c/*/micropython.mk),$(abspath device/c)))
FROZEN_MANIFEST := $(abspath boards/manifest.py)
# The model modules the firmware freezes: every NAME.py in this folder (default: the MNIST
# models). `make firmware FROZEN_MODELS=build/tflite` freezes MLPerf Tiny's int8 models
# instead (`make tflite-models`). A change of folder rebuilds the firmware from scratch.
FROZEN_MODELS ?= build/models
FROZEN_ENV = PICONN_FROZEN_MODELS=$(abspath $(FROZEN_MODELS))
rp2_cmake_args = -DPICO_BUILD_DOCS=0 -DPICO_NO_PICOTOOL=1 -DMICROPY_BOARD=$(1) \
  -DMICROPY_BOARD_DIR=$(abspath boards/$(1)) -DMICROPY_FROZEN_MANIFEST=$(FROZEN_MANIFEST) \
  $(if $(NN_C_CMAKE),-DUSER_C_MODULES=$(abspath $(NN_C_CMAKE))) \
  -DPICONN_FROZEN_MODELS=$(abspath $(FROZEN_MODELS))
# -march=host: frozen viper/native code for the machine that builds (and runs) the unix port.
UNIX_MAKE_ARGS = BUILD=$(abspath build/UNIX/obj) MICROPY_PY_FFI=0 MICROPY_PY_BTREE=0 MICROPY_PY_SSL=0 \
  MPY_CROSS_FLAGS=-march=host FROZEN_MANIFEST=$(FROZEN_MANIFEST) $(FROZEN_ENV) \
  $(if $(NN_C_MK_ROOT),USER_C_MODULES=$(NN_C_MK_ROOT))

# --- models (each file is made only when missing) ---------------------------
MODELS := build/models
PICONN := $(PY) -m piconn
TRAIN_F32 = $(PICONN) train mnist --arch 784-128-10 --out $@
TRAIN_XNOR = $(PICONN) train mnist --kind xnor --out $@
PRUNE = $(PICONN) prune $(MODELS)/mnist_f32.npz --sparsity 0.9 --out $@
QMODE = full
QUANTIZE = $(PICONN) quantize $(QSRC) --mode $(QMODE) --out $@
EXPORT = $(PICONN) export $(XSRC) --name $(basename $(notdir $@)) --out $(MODELS) --samples 100
MODEL_NAMES := mnist_f32 mnist_sparse mnist_q8w mnist_q8 mnist_sparse_q8 mnist_xnor
MODEL_MODULES := $(MODEL_NAMES:%=$(MODELS)/%.py)
# A failed step leaves no half-written file behind.
.DELETE_ON_ERROR:

.PHONY: models models-or-warn models-clean firmware firmware-PICO firmware-PICO2 firmware-UNIX \
  firmware-clean mp-tree arm-toolchain host-tools mpy-cross emulate deploy test-builds demo

models: $(MODEL_MODULES)

$(MODELS)/mnist_f32.npz: | $(VENV)/.installed
	@mkdir -p $(@D)
	$(TRAIN_F32)
$(MODELS)/mnist_xnor.npz: | $(VENV)/.installed
	@mkdir -p $(@D)
	$(TRAIN_XNOR)
$(MODELS)/mnist_pruned.npz: | $(MODELS)/mnist_f32.npz
	$(PRUNE)
$(MODELS)/mnist_q8.nnb: private QSRC = $(MODELS)/mnist_f32.npz
$(MODELS)/mnist_q8.nnb: | $(MODELS)/mnist_f32.npz
$(MODELS)/mnist_sparse_q8.nnb: private QSRC = $(MODELS)/mnist_pruned.npz
$(MODELS)/mnist_sparse_q8.nnb: | $(MODELS)/mnist_pruned.npz
$(MODELS)/mnist_q8w.nnb: private QSRC = $(MODELS)/mnist_f32.npz
$(MODELS)/mnist_q8w.nnb: private QMODE = weights
$(MODELS)/mnist_q8w.nnb: | $(MODELS)/mnist_f32.npz
$(MODELS)/mnist_q8.nnb $(MODELS)/mnist_sparse_q8.nnb $(MODELS)/mnist_q8w.nnb:
	$(QUANTIZE)
$(MODELS)/mnist_f32.py: private XSRC = $(MODELS)/mnist_f32.npz
$(MODELS)/mnist_f32.py: | $(MODELS)/mnist_f32.npz
$(MODELS)/mnist_sparse.py: private XSRC = $(MODELS)/mnist_pruned.npz
$(MODELS)/mnist_sparse.py: | $(MODELS)/mnist_pruned.npz
$(MODELS)/mnist_q8w.py: private XSRC = $(MODELS)/mnist_q8w.nnb
$(MODELS)/mnist_q8w.py: | $(MODELS)/mnist_q8w.nnb
$(MODELS)/mnist_q8.py: private XSRC = $(MODELS)/mnist_q8.nnb
$(MODELS)/mnist_q8.py: | $(MODELS)/mnist_q8.nnb
$(MODELS)/mnist_sparse_q8.py: private XSRC = $(MODELS)/mnist_sparse_q8.nnb
$(MODELS)/mnist_sparse_q8.py: | $(MODELS)/mnist_sparse_q8.nnb
$(MODELS)/mnist_xnor.py: private XSRC = $(MODELS)/mnist_xnor.npz
$(MODELS)/mnist_xnor.py: | $(MODELS)/mnist_xnor.npz
$(MODEL_MODULES):
	$(EXPORT)

# A ROMFS image of models for the /rom partition (256 KB on PICO), every model
# aligned so the device reads it in place: `mpremote romfs deploy build/models.romfs`.
#   make romfs [ROMFS_MODELS="mnist_q8 mnist_xnor"]
ROMFS_MODELS ?= mnist_q8 mnist_sparse_q8 mnist_xnor mnist_sparse
ROMFS_IMAGE := build/models.romfs
.PHONY: romfs
# Rebuilt every time (a second); the .nnb files come with their modules.
romfs: $(ROMFS_MODELS:%=$(MODELS)/%.py)
	$(PICONN) romfs $(ROMFS_MODELS:%=$(MODELS)/%.nnb) --out $(ROMFS_IMAGE)

# MLPerf Tiny's four int8 reference models imported with `piconn import` into build/tflite
# (kws, vww, ic, ad: .py + .nnb, format version 2), for
# `make firmware FROZEN_MODELS=build/tflite` or the ROMFS image (kws and ic fit its 256 KB).
MLPERF_TINY ?= ../shared/models/mlperf-tiny
TFLITE_MODELS := build/tflite
TFLITE_FILES := kws:kws_ref_model vww:vww_96_int8 ic:pretrainedResnet_quant ad:ad01_int8
.PHONY: tflite-models
tflite-models: venv
	@mkdir -p $(TFLITE_MODELS)
	@for pair in $(TFLITE_FILES); do name=$${pair%%:*}; file=$(MLPERF_TINY)/$${pair#*:}.tflite; \
	  [ -f $(TFLITE_MODELS)/$$name.py ] || $(PICONN) import $$file --name $$name --out $(TFLITE_MODELS) \
	  || exit 1; done

# MNIST CNNs (not part of `make models`: the default CNN trains for about 4 minutes, and
# `make test` needs none of them; `make demo` makes them): the default CNN (conv.py's
# DEFAULT_CNN) and the small one (SMALL_CNN) trained into build/models, then from them
# float32, 50% structured-pruned float32, int8 of both sizes, and the XNOR CNN.
#   make cnn-models   only what is missing; a step that fails leaves FILE.why (its error
#                     and command) beside the file it should have made, which make bench
#                     reports
# The float32 CNNs (about 320 KB and 150 KB) do not fit the 2 MB Pico's code partition
# beside the MLPs: they go to build/models/large, which the firmware does not freeze
# (make bench reads them from flash through its UF2).
CNN_LARGE := $(MODELS)/large
CNN_SMALL_ARCH := c8k5s2vb-c16k3s2vb-f32-f10
CNN_STRUCTURED := 0.5
CNN_FROZEN := mnist_cnn_int8 mnist_cnn_small_int8 mnist_cnn_xnor
CNN_LARGE_NAMES := mnist_cnn_f32 mnist_cnn_pruned
CNN_MODULES := $(CNN_FROZEN:%=$(MODELS)/%.py) $(CNN_LARGE_NAMES:%=$(CNN_LARGE)/%.py)
# One step: its command; on failure its last line of output and the command go to $@.why
# (removed once the step succeeds).
cnn_step = @mkdir -p $(@D); rm -f $@.why; echo '$(1)'; \
  { $(1) 2>&1; echo $$? >$@.rc; } | tee $@.log; rc=$$(cat $@.rc); rm -f $@.rc; \
  [ "$$rc" = 0 ] || printf '%s (from: %s)\n' "$$(tail -n 1 $@.log | tr -d '\r')" '$(strip $(1))' >$@.why; \
  rm -f $@.log; exit $$rc
.PHONY: cnn-models
cnn-models: venv
	@$(MAKE) --no-print-directory -k $(CNN_MODULES) || { \
	  echo "warning: CNN models missing:"; \
	  for f in $(CNN_MODULES); do [ -f $$f ] || echo "  $$f"; done; \
	  for w in $(MODELS)/*.why $(CNN_LARGE)/*.why; do [ -f $$w ] && echo "  $$w: $$(cat $$w)"; done; \
	  exit 1; }

$(MODELS)/mnist_cnn.npz: | $(VENV)/.installed
	$(call cnn_step,$(PICONN) train mnist --model cnn --out $@)
$(MODELS)/mnist_cnn_small.npz: | $(VENV)/.installed
	$(call cnn_step,$(PICONN) train mnist --model cnn --arch $(CNN_SMALL_ARCH) --out $@)
$(MODELS)/mnist_cnn_xnor.npz: | $(VENV)/.installed
	$(call cnn_step,$(PICONN) train mnist --kind xnor --model cnn --out $@)
$(MODELS)/mnist_cnn_pruned.npz: | $(MODELS)/mnist_cnn.npz
	$(call cnn_step,$(PICONN) prune $(MODELS)/mnist_cnn.npz --structured $(CNN_STRUCTURED) --out $@)
$(CNN_LARGE)/mnist_cnn_f32.py: | $(MODELS)/mnist_cnn.npz
	$(call cnn_step,$(PICONN) export $(MODELS)/mnist_cnn.npz --name mnist_cnn_f32 --out $(@D))
$(CNN_LARGE)/mnist_cnn_pruned.py: | $(MODELS)/mnist_cnn_pruned.npz
	$(call cnn_step,$(PICONN) export $(MODELS)/mnist_cnn_pruned.npz --name mnist_cnn_pruned --out $(@D))
$(MODELS)/mnist_cnn_int8.py: | $(MODELS)/mnist_cnn.npz
	$(call cnn_step,$(PICONN) quantize $(MODELS)/mnist_cnn.npz --mode int8 --out $(@:.py=.nnb) --name mnist_cnn_int8)
$(MODELS)/mnist_cnn_small_int8.py: | $(MODELS)/mnist_cnn_small.npz
	$(call cnn_step,$(PICONN) quantize $(MODELS)/mnist_cnn_small.npz --mode int8 --out $(@:.py=.nnb) --name mnist_cnn_small_int8)
$(MODELS)/mnist_cnn_xnor.py: | $(MODELS)/mnist_cnn_xnor.npz
	$(call cnn_step,$(PICONN) export $(MODELS)/mnist_cnn_xnor.npz --name mnist_cnn_xnor --out $(@D))

# The firmware freezes whatever models exist: a model step that fails is a
# warning here (STRICT_MODELS=1 makes it an error); `make models` shows it.
models-or-warn: venv
	@$(MAKE) --no-print-directory -k models || { \
	  if [ "$(STRICT_MODELS)" = 1 ]; then exit 1; fi; \
	  echo "warning: some models could not be made (see above); the firmware freezes the" \
	       "$$(ls $(MODELS)/*.py 2>/dev/null | wc -l) model module(s) in $(MODELS)"; }

models-clean:
	rm -rf $(MODELS)

# --- the MicroPython tree and the toolchains --------------------------------
mp-tree:
	@missing() { for f in $(MICROPY_TREE_FILES); do [ -e "$(MICROPY_DIR)/$$f" ] || echo "$$f"; done; }; \
	if [ -n "$$(missing)" ]; then \
	  if [ ! -e "$(MICROPY_DIR)" ]; then \
	    echo "Cloning MicroPython $(MICROPY_VERSION) into $(MICROPY_DIR)"; \
	    GIT_TERMINAL_PROMPT=0 git clone --depth 1 --branch $(MICROPY_VERSION) $(MICROPY_GIT) "$(MICROPY_DIR)" \
	      || rm -rf "$(MICROPY_DIR)"; \
	  fi; \
	  if [ -d "$(MICROPY_DIR)/.git" ]; then \
	    GIT_TERMINAL_PROMPT=0 git -C "$(MICROPY_DIR)" submodule update --init --depth 1 $(MICROPY_SUBMODULES) \
	      || GIT_TERMINAL_PROMPT=0 git -C "$(MICROPY_DIR)" submodule update --init $(MICROPY_SUBMODULES); \
	  fi; \
	fi; \
	if [ -n "$$(missing)" ]; then \
	  echo "error: no usable MicroPython $(MICROPY_VERSION) tree at MICROPY_DIR=$(MICROPY_DIR)"; \
	  echo "  missing: $$(missing | tr '\n' ' ')"; \
	  echo "  Provide one (needs internet once), then pass its path if it is elsewhere:"; \
	  echo "    git clone --depth 1 --branch $(MICROPY_VERSION) $(MICROPY_GIT) DIR"; \
	  echo "    git -C DIR submodule update --init --depth 1 $(MICROPY_SUBMODULES)"; \
	  echo "    make firmware MICROPY_DIR=DIR"; \
	  exit 1; \
	fi; \
	grep -q "define MICROPY_VERSION_MINOR $(word 2,$(subst ., ,$(MICROPY_VERSION)))$$" "$(MICROPY_DIR)/py/mpconfig.h" || { \
	  echo "error: $(MICROPY_DIR) is not MicroPython $(MICROPY_VERSION):" \
	       "$$(grep -h 'define MICROPY_VERSION_M' $(MICROPY_DIR)/py/mpconfig.h | tr -s ' \n' ' ')"; exit 1; }

# Installs Debian's packages when missing (as root), else says what to install.
define ensure_packages
	@if ! { $(1); }; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing $(2) with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	  fi; \
	  $(1) || { echo "error: missing build tools; install them: sudo apt-get install $(2)"; exit 1; }; \
	fi
endef

host-tools:
	$(call ensure_packages,command -v cc >/dev/null && command -v cmake >/dev/null && command -v git >/dev/null,$(HOST_PACKAGES))

arm-toolchain: host-tools
	$(call ensure_packages,command -v arm-none-eabi-gcc >/dev/null && [ "$$(arm-none-eabi-gcc -print-file-name=libc.a)" != libc.a ] && [ "$$(arm-none-eabi-g++ -print-file-name=libstdc++.a 2>/dev/null)" != libstdc++.a ],$(ARM_PACKAGES))

mpy-cross: mp-tree host-tools
	@$(MAKE) --no-print-directory -s -C $(MICROPY_DIR)/mpy-cross -j$(JOBS)

# --- firmware ---------------------------------------------------------------
firmware: firmware-$(BOARD)

# frozen_content.c declares the qstrs of the frozen modules that the firmware itself
# lacks, and MicroPython regenerates it only when a frozen module changes: when device/c
# gains a name the frozen code also uses, the stale file redeclares MP_QSTR_<name>.
# So it is deleted (and regenerated) whenever a device/c file is newer.
stale_frozen = f=$(1); if [ -f $$f ] && [ -n "$$(find device/c -type f -newer $$f)" ]; then rm -f $$f; fi

# rp2 boards through CMake, configured afresh (clean build) whenever the
# configuration changes, e.g. when device/c gains its build files.
firmware-PICO firmware-PICO2: firmware-%: venv mp-tree arm-toolchain mpy-cross models-or-warn
	@args='$(strip $(call rp2_cmake_args,$*))'; \
	if [ "$$(cat build/$*/config.txt 2>/dev/null)" != "$$args" ]; then \
	  rm -rf build/$*/cmake; mkdir -p build/$*; printf '%s\n' "$$args" > build/$*/config.txt; fi; \
	[ -f build/$*/cmake/Makefile ] || cmake -S $(MICROPY_DIR)/ports/rp2 -B build/$*/cmake $$args
	@$(call stale_frozen,build/$*/cmake/frozen_content.c)
	$(FROZEN_ENV) cmake --build build/$*/cmake -j $(JOBS) -- --no-print-directory
	@cp build/$*/cmake/firmware.bin build/$*/cmake/firmware.elf build/$*/cmake/firmware.elf.map build/$*/
	@$(PY) tools/uf2.py build/$*/firmware.bin build/$*/firmware.uf2 --family $($*_FAMILY) $($*_UF2_FLAGS)
	@$(PY) tools/fwinfo.py --build-dir build/$*/cmake --image build/$*/firmware.bin --models $(FROZEN_MODELS) \
	  --size-tool arm-none-eabi-size --board-h boards/$*/mpconfigboard.h --flash-bytes $($*_FLASH)

firmware-UNIX: venv mp-tree host-tools mpy-cross models-or-warn
	@args='$(strip $(UNIX_MAKE_ARGS))'; \
	if [ "$$(cat build/UNIX/config.txt 2>/dev/null)" != "$$args" ]; then \
	  rm -rf build/UNIX/obj; mkdir -p build/UNIX; printf '%s\n' "$$args" > build/UNIX/config.txt; fi
	@$(call stale_frozen,build/UNIX/obj/frozen_content.c)
	$(FROZEN_ENV) $(MAKE) --no-print-directory -C $(MICROPY_DIR)/ports/unix -f Makefile -f $(abspath boards/UNIX/piconn.mk) \
	  -j$(JOBS) $(UNIX_MAKE_ARGS)
	@cp build/UNIX/obj/micropython build/UNIX/micropython
	@$(PY) tools/fwinfo.py --build-dir build/UNIX/obj --image build/UNIX/micropython --models $(FROZEN_MODELS)

firmware-clean:
	rm -rf build/$(BOARD)

# --- virtual Pico, real Pico ------------------------------------------------
# Brings the PICO firmware up to date first (a few seconds when nothing changed).
emulate: venv
	@$(MAKE) --no-print-directory firmware-PICO || { [ -f build/PICO/firmware.uf2 ] \
	  && echo "warning: could not rebuild the firmware; emulating the existing build/PICO/firmware.uf2"; }
	$(PY) tools/vpico.py serve build/PICO/firmware.uf2 --port $(PORT)

# The main job: models, firmware, the virtual Pico, and the demo run through
# mpremote exactly as on a real board (about 4 minutes of emulation).
DEMO_PORT ?= 2041
MPREMOTE := $(VENV)/bin/mpremote
demo: firmware-PICO
	@$(PY) tools/vpico.py serve build/PICO/firmware.uf2 --port $(DEMO_PORT) >build/demo-vpico.log 2>&1 & \
	pid=$$!; trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null' EXIT INT TERM; \
	for i in $$(seq 60); do $(MPREMOTE) connect socket://127.0.0.1:$(DEMO_PORT) exec pass >/dev/null 2>&1 && break; \
	  kill -0 $$pid 2>/dev/null || { cat build/demo-vpico.log; exit 1; }; sleep 1; done; \
	echo "virtual Pico on socket://127.0.0.1:$(DEMO_PORT); running: mpremote connect socket://127.0.0.1:$(DEMO_PORT) run device/demo_mnist.py"; \
	$(MPREMOTE) connect socket://127.0.0.1:$(DEMO_PORT) run device/demo_mnist.py
# The demo's firmware freezes the CNNs too: they are made first (a missing one is a warning).
ifneq ($(filter demo,$(MAKECMDGOALS)),)
firmware-PICO: demo-cnn-models
endif
.PHONY: demo-cnn-models
demo-cnn-models: venv
	@$(MAKE) --no-print-directory cnn-models || echo "warning: the demo runs without the missing CNNs"

# The bootloader's drive is RPI-RP2 (RP2040) or RP2350; we copy the UF2 there.
deploy:
	@uf2=build/$(BOARD)/firmware.uf2; label=$$([ "$(BOARD)" = PICO2 ] && echo RP2350 || echo RPI-RP2); \
	[ -f "$$uf2" ] || { echo "error: no $$uf2: run make firmware BOARD=$(BOARD) first"; exit 1; }; \
	mnt=$$(findmnt -rn -S LABEL=$$label -o TARGET 2>/dev/null | head -n1); \
	for d in /media/*/$$label /media/$$label /run/media/*/$$label /mnt/$$label /Volumes/$$label; do \
	  [ -z "$$mnt" ] && [ -f "$$d/INFO_UF2.TXT" ] && mnt=$$d; done; \
	if [ -n "$$mnt" ]; then \
	  echo "Copying $$uf2 to $$mnt"; cp "$$uf2" "$$mnt/" && sync; \
	  echo "Done: the Pico reboots into the new firmware."; \
	elif [ -e /dev/disk/by-label/$$label ]; then \
	  echo "A Pico in BOOTSEL mode is attached but not mounted: udisksctl mount -b /dev/disk/by-label/$$label," \
	       "then make deploy BOARD=$(BOARD)"; exit 1; \
	else \
	  echo "No Pico in BOOTSEL mode found (no drive labelled $$label)."; \
	  echo "  Hold BOOTSEL while plugging the Pico in (or, if it runs MicroPython: $(VENV)/bin/mpremote bootloader),"; \
	  echo "  wait for the $$label drive to be mounted, then run: make deploy BOARD=$(BOARD)"; \
	  echo "  Or copy $$uf2 onto the drive yourself."; exit 1; \
	fi

# What the tests need, built when possible; when the tree or the toolchain is
# missing the reason is printed and the tests that need them skip.
test-builds: venv
	@if $(MAKE) --no-print-directory mp-tree; then \
	  $(MAKE) --no-print-directory firmware-UNIX || exit 1; \
	  $(MAKE) --no-print-directory firmware-stock-UNIX natmod NATMOD_ARCHS=x64 || exit 1; \
	  if $(MAKE) --no-print-directory arm-toolchain; then \
	    $(MAKE) --no-print-directory firmware-PICO || exit 1; \
	    $(MAKE) --no-print-directory firmware-PICO2 || exit 1; \
	    $(MAKE) --no-print-directory firmware-stock-PICO natmod || exit 1; \
	  else echo "note: no Arm toolchain: build/PICO/firmware.uf2 not built, its tests will skip"; fi; \
	else echo "note: no MicroPython tree: firmware not built, the firmware tests will skip"; fi

# --- stock MicroPython: nn installed with mip, the C kernels as a native module ----
#   make firmware-stock [BOARD=PICO]   MicroPython's own firmware, unmodified (PICO: RPI_PICO,
#                                      PICO2: RPI_PICO2, UNIX: the unix port) in build/STOCK_<BOARD>/
#   make natmod [NATMOD_ARCHS=...]     _nn_c as a native module: build/natmod/<arch>/_nn_c.mpy
#                                      (armv6m: RP2040, armv7emsp: RP2350, x64: the unix port)
#   make mip-package                   device/mip/ and device/package.json, what `mpremote mip
#                                      install` copies (committed: tools/mip_package.py --check)
.PHONY: firmware-stock firmware-stock-PICO firmware-stock-PICO2 firmware-stock-UNIX natmod mip-package
STOCK_PICO_BOARD := RPI_PICO
STOCK_PICO2_BOARD := RPI_PICO2
firmware-stock: firmware-stock-$(BOARD)

firmware-stock-PICO firmware-stock-PICO2: firmware-stock-%: venv mp-tree arm-toolchain mpy-cross
	@[ -f build/STOCK_$*/cmake/Makefile ] || cmake -S $(MICROPY_DIR)/ports/rp2 -B build/STOCK_$*/cmake \
	  -DPICO_BUILD_DOCS=0 -DPICO_NO_PICOTOOL=1 -DMICROPY_BOARD=$(STOCK_$*_BOARD)
	cmake --build build/STOCK_$*/cmake -j $(JOBS) -- --no-print-directory
	@cp build/STOCK_$*/cmake/firmware.bin build/STOCK_$*/
	@$(PY) tools/uf2.py build/STOCK_$*/firmware.bin build/STOCK_$*/firmware.uf2 --family $($*_FAMILY) $($*_UF2_FLAGS)

# The standard variant without the parts that need libraries (as firmware-UNIX).
firmware-stock-UNIX: venv mp-tree host-tools mpy-cross
	$(MAKE) --no-print-directory -C $(MICROPY_DIR)/ports/unix -j$(JOBS) BUILD=$(abspath build/STOCK_UNIX/obj) \
	  MICROPY_PY_FFI=0 MICROPY_PY_BTREE=0 MICROPY_PY_SSL=0
	@cp build/STOCK_UNIX/obj/micropython build/STOCK_UNIX/micropython

NATMOD_ARCHS ?= armv6m armv7emsp
natmod: venv mp-tree $(if $(filter arm%,$(NATMOD_ARCHS)),arm-toolchain,host-tools)
	@for a in $(NATMOD_ARCHS); do mkdir -p build/natmod/$$a && \
	  $(MAKE) --no-print-directory -C build/natmod/$$a -f $(abspath device/c/natmod/Makefile) ARCH=$$a \
	    MPY_DIR=$(MICROPY_DIR) PYTHON=$(abspath $(PY)) || exit 1; done

mip-package: natmod
	$(PY) tools/mip_package.py --natmod build/natmod

# --- benchmarks -------------------------------------------------------------
#   make bench [BENCH_ARGS=...]   every MNIST variant x kernel tier (c, viper, python) and the
#   float size ladder (trained into build/ladder/ when missing), then MLPerf Tiny's int8
#   TFLite models (C tier; BENCH_ARGS="--int8-tiers c,viper" adds viper), then the MNIST CNNs
#   of `make cnn-models` (c and viper tiers) on the virtual Pico:
#   build/bench.json, build/bench.md (the README's tables), build/bench.png. Options:
#   .venv/bin/python tools/bench.py --help (e.g. BENCH_ARGS="--no-ladder --tiers c").
#   make bench-int8 [BENCH_ARGS=...]   only the int8 models (their rows of bench.json
#   replaced, the others kept; a few minutes).
#   The README's tables from the last run: .venv/bin/python tools/report.py --readme README.md
BENCH_ARGS ?=
.PHONY: bench bench-int8
bench: venv
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(PIP) install --quiet -e '.[test,bench]'
	-@$(MAKE) --no-print-directory cnn-models
	@$(MAKE) --no-print-directory firmware BOARD=PICO
	$(PY) tools/bench.py $(BENCH_ARGS)

bench-int8: venv
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(PIP) install --quiet -e '.[test,bench]'
	@$(MAKE) --no-print-directory firmware BOARD=PICO
	$(PY) tools/bench.py --only int8 $(BENCH_ARGS)

#   make bench-cnn [BENCH_ARGS=...]   only the MNIST CNNs (make cnn-models first; a CNN that
#   could not be made is a row saying why), c and viper tiers; their rows of bench.json
#   replaced, the others kept.
.PHONY: bench-cnn
bench-cnn: venv
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(PIP) install --quiet -e '.[test,bench]'
	-@$(MAKE) --no-print-directory cnn-models
	@$(MAKE) --no-print-directory firmware BOARD=PICO
	$(PY) tools/bench.py --only cnn $(BENCH_ARGS)
