# piconn `_nn_c` user C module for make-based ports (unix):
#   make -C ports/unix USER_C_MODULES=/path/to/piconn/device/c
NN_C_MOD_DIR := $(USERMOD_DIR)

# The binding is scanned for qstrs; the kernels have none (plain C, no MicroPython headers).
SRC_USERMOD_C += $(NN_C_MOD_DIR)/mod_nn_c.c
SRC_USERMOD_LIB_C += $(NN_C_MOD_DIR)/nn_kernels.c
# format version 2 (int8 graphs): the runner and its kernels
SRC_USERMOD_LIB_C += $(NN_C_MOD_DIR)/nn_graph.c $(NN_C_MOD_DIR)/nn_int8.c
# its float32 operators
SRC_USERMOD_LIB_C += $(NN_C_MOD_DIR)/nn_float.c
# its binary (XNOR) operators
SRC_USERMOD_LIB_C += $(NN_C_MOD_DIR)/nn_xnor_graph.c

CFLAGS_USERMOD += -I$(NN_C_MOD_DIR)
# Float kinds are IEEE float32 with every product and sum rounded (docs/FORMAT.md): no
# fused multiply-add, which GCC otherwise forms on targets that have one.
CFLAGS_USERMOD += -ffp-contract=off
