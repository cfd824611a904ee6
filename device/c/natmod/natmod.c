// `_nn_c` as a dynamic native module (a .mpy file) for stock MicroPython firmware.
//
// The binding is device/c/nn_c/mod_nn_c.c and the kernels device/c/nn_c/nn_kernels.c,
// both compiled unchanged: this file only supplies what py/dynruntime.h lacks and
// registers the functions. A native module reaches the runtime through a table of
// function pointers (mp_fun_table), so anything the table has no entry for is built
// here from entries it does have:
//   - mp_raise_msg_varg (formatted messages): mp_vprintf into a stack buffer;
//   - mp_obj_get_type_str: the type's name as a str object's data;
//   - the types bytes, bytearray, memoryview and array.array, looked up once at import
//     (dynruntime's own bytes/bytearray are a globals lookup per use).
// A native module has no ROM module table and no MP_REGISTER_MODULE: mpy_init stores
// each function in the module's globals instead (mod_nn_c.c skips both when
// NN_C_NATMOD is defined). tests/test_natmod.py checks the names match the firmware's.
#include <stdarg.h>

#include "py/dynruntime.h"

// ------------------------------------------------------------------ runtime supplements

// (Not static: mpy_ld.py links a module's BSS through global symbols only.)
const mp_obj_type_t *nn_type_bytes;
const mp_obj_type_t *nn_type_bytearray;
const mp_obj_type_t *nn_type_memoryview;
const mp_obj_type_t *nn_type_array;

#undef mp_type_bytes
#undef mp_type_bytearray
#define mp_type_bytes (*nn_type_bytes)
#define mp_type_bytearray (*nn_type_bytearray)
#define mp_type_memoryview (*nn_type_memoryview)
#define mp_type_array (*nn_type_array)

// Longest message of the binding with its arguments filled in, plus room to spare:
// a longer one is cut, never overrun.
#define NN_MSG_MAX (120)

typedef struct {
    char text[NN_MSG_MAX];
    size_t len;
} nn_msg_t;

static void nn_msg_strn(void *data, const char *str, size_t len) {
    nn_msg_t *m = data;
    while (len-- && m->len < NN_MSG_MAX) {
        m->text[m->len++] = *str++;
    }
}

// As the runtime's mp_raise_msg_varg: the message formatted by mp_vprintf (%q, %u, %d,
// %s, %c), raised as an instance of `type`.
static MP_NORETURN void nn_raise_msg_varg(const mp_obj_type_t *type, const char *fmt, ...) {
    nn_msg_t m;
    m.len = 0;
    mp_print_t print = { &m, nn_msg_strn };
    va_list args;
    va_start(args, fmt);
    mp_vprintf(&print, fmt, args);
    va_end(args);
    mp_raise_dyn(mp_obj_new_exception_arg1(type, mp_obj_new_str(m.text, m.len)));
}

#define mp_raise_msg_varg nn_raise_msg_varg

// A type's name as a C string (qstr data is NUL-terminated).
static const char *nn_type_str(mp_const_obj_t obj) {
    const mp_obj_type_t *type = mp_obj_get_type((mp_obj_t)obj);
    return mp_obj_str_get_str(MP_OBJ_NEW_QSTR(type->name));
}

#define mp_obj_get_type_str nn_type_str

// The C library the kernels call, from the firmware's copies (as MicroPython's own
// examples/natmod modules do).
void *memcpy(void *dst, const void *src, size_t n) {
    return mp_fun_table.memmove_(dst, src, n);
}

void *memset(void *s, int c, size_t n) {
    return mp_fun_table.memset_(s, c, n);
}

void *memmove(void *dst, const void *src, size_t n) {
    return mp_fun_table.memmove_(dst, src, n);
}

// The type of graph_prepare's prepared graphs (mod_nn_c.c), filled in at import.
mp_obj_full_type_t nn_c_graph_type;

// The type of prepare's prepared steps (mod_nn_c.c), filled in at import.
mp_obj_full_type_t nn_c_prepared_type;

// ------------------------------------------------------------------ the binding

#define NN_C_NATMOD (1)
#include "mod_nn_c.c"

// ------------------------------------------------------------------ module init

mp_obj_t mpy_init(mp_obj_fun_bc_t *self, size_t n_args, size_t n_kw, mp_obj_t *args) {
    MP_DYNRUNTIME_INIT_ENTRY

    nn_type_bytes = MP_OBJ_TO_PTR(mp_load_global(MP_QSTR_bytes));
    nn_type_bytearray = MP_OBJ_TO_PTR(mp_load_global(MP_QSTR_bytearray));
    nn_type_memoryview = MP_OBJ_TO_PTR(mp_load_global(MP_QSTR_memoryview));
    mp_obj_t array_module = mp_import_name(MP_QSTR_array, mp_const_none, MP_OBJ_NEW_SMALL_INT(0));
    nn_type_array = MP_OBJ_TO_PTR(mp_load_attr(array_module, MP_QSTR_array));

    mp_store_global(MP_QSTR_run, MP_OBJ_FROM_PTR(&nn_c_run_obj));
    nn_c_prepared_type.base.type = (void *)&mp_type_type;
    nn_c_prepared_type.flags = MP_TYPE_FLAG_NONE;
    nn_c_prepared_type.name = MP_QSTR_Prepared;
    MP_OBJ_TYPE_SET_SLOT(&nn_c_prepared_type, call, nn_c_prepared_call, 0);
    mp_store_global(MP_QSTR_prepare, MP_OBJ_FROM_PTR(&nn_c_prepare_obj));
    mp_store_global(MP_QSTR_dense_f32, MP_OBJ_FROM_PTR(&nn_c_dense_f32_obj));
    mp_store_global(MP_QSTR_dense_q8w, MP_OBJ_FROM_PTR(&nn_c_dense_q8w_obj));
    mp_store_global(MP_QSTR_dense_q8, MP_OBJ_FROM_PTR(&nn_c_dense_q8_obj));
    mp_store_global(MP_QSTR_sparse_f32, MP_OBJ_FROM_PTR(&nn_c_sparse_f32_obj));
    mp_store_global(MP_QSTR_sparse_q8, MP_OBJ_FROM_PTR(&nn_c_sparse_q8_obj));
    mp_store_global(MP_QSTR_binarize, MP_OBJ_FROM_PTR(&nn_c_binarize_obj));
    mp_store_global(MP_QSTR_xnor_dense, MP_OBJ_FROM_PTR(&nn_c_xnor_dense_obj));
    mp_store_global(MP_QSTR_xnor_out, MP_OBJ_FROM_PTR(&nn_c_xnor_out_obj));
    mp_store_global(MP_QSTR_popcount_rows, MP_OBJ_FROM_PTR(&nn_c_popcount_rows_obj));
    mp_store_global(MP_QSTR_relu_f32, MP_OBJ_FROM_PTR(&nn_c_relu_f32_obj));
    mp_store_global(MP_QSTR_argmax_i32, MP_OBJ_FROM_PTR(&nn_c_argmax_i32_obj));
    mp_store_global(MP_QSTR_argmax_f32, MP_OBJ_FROM_PTR(&nn_c_argmax_f32_obj));
    mp_store_global(MP_QSTR_check_csc, MP_OBJ_FROM_PTR(&nn_c_check_csc_obj));
    mp_store_global(MP_QSTR_check_f32, MP_OBJ_FROM_PTR(&nn_c_check_f32_obj));
    mp_store_global(MP_QSTR_graph_run, MP_OBJ_FROM_PTR(&nn_c_graph_run_obj));
    nn_c_graph_type.base.type = (void *)&mp_type_type;
    nn_c_graph_type.flags = MP_TYPE_FLAG_NONE;
    nn_c_graph_type.name = MP_QSTR_Graph;
    MP_OBJ_TYPE_SET_SLOT(&nn_c_graph_type, call, nn_c_graph_call, 0);
    mp_store_global(MP_QSTR_graph_prepare, MP_OBJ_FROM_PTR(&nn_c_graph_prepare_obj));

    MP_DYNRUNTIME_INIT_EXIT
}
