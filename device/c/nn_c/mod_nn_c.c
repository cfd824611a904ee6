// MicroPython binding of the piconn C kernels: module `_nn_c` (docs/KERNELS.md).
//
// Thin: each function fetches its buffers and ints, checks what is O(1) to check
// (buffer sizes against n_in/n_out, word alignment, small-int ranges) and calls the
// kernel in nn_kernels.c. Nothing is allocated (except the exception on bad input),
// so the functions run under micropython.heap_lock(). Contents are trusted: nn.load
// has validated the model (sparse row indices, monotonic colptr).
#ifndef NN_C_NATMOD  // the native module (device/c/natmod/natmod.c) includes py/dynruntime.h
#include "py/binary.h"
#include "py/runtime.h"
#endif

#include <string.h>

#include "nn_graph.h"
#include "nn_kernels.h"

#define NN_MAX_N (65535)

// The buffer of `obj` with at least `need` bytes, `align`-byte aligned; ValueError naming
// the argument otherwise (TypeError from MicroPython if it has no buffer, or is read-only
// when `writable`).
static void *nn_buf(mp_obj_t obj, uint64_t need, uint32_t align, bool writable, qstr name) {
    mp_buffer_info_t bi;
    mp_get_buffer_raise(obj, &bi, writable ? MP_BUFFER_WRITE : MP_BUFFER_READ);
    if ((uint64_t)bi.len < need) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("%q: %u bytes, need %u"),
            name, (unsigned)bi.len, (unsigned)need);
    }
    if ((uintptr_t)bi.buf & (align - 1)) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("%q must be %u-byte aligned"),
            name, (unsigned)align);
    }
    return bi.buf;
}

#define NN_IN(obj, need, align, name) nn_buf((obj), (need), (align), false, MP_QSTR_##name)
#define NN_OUT(obj, need, align, name) nn_buf((obj), (need), (align), true, MP_QSTR_##name)

// An int in [lo, hi], else ValueError.
static uint32_t nn_int(mp_obj_t obj, mp_int_t lo, mp_int_t hi, qstr name) {
    mp_int_t v = mp_obj_get_int(obj);
    if (v < lo || v > hi) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("%q must be %d..%d"),
            name, (int)lo, (int)hi);
    }
    return (uint32_t)v;
}

#define NN_SIZE(obj, name) nn_int((obj), 1, NN_MAX_N, MP_QSTR_##name)
#define NN_BYTE(obj, name) nn_int((obj), 0, 255, MP_QSTR_##name)

static inline uint32_t nn_words(uint32_t n_bits) {
    return (n_bits + 31) >> 5;
}

// dense_f32(x, x_u8, w, b, y, n_in, n_out)
static mp_obj_t nn_c_dense_f32(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    uint32_t n_in = NN_SIZE(args[5], n_in), n_out = NN_SIZE(args[6], n_out);
    int x_u8 = mp_obj_is_true(args[1]);
    const void *x = x_u8 ? NN_IN(args[0], n_in, 1, x) : NN_IN(args[0], 4ull * n_in, 4, x);
    const float *w = NN_IN(args[2], 4ull * n_in * n_out, 4, w);
    const float *b = NN_IN(args[3], 4ull * n_out, 4, b);
    float *y = NN_OUT(args[4], 4ull * n_out, 4, y);
    nn_dense_f32(x, x_u8, w, b, y, n_in, n_out);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(nn_c_dense_f32_obj, 7, 7, nn_c_dense_f32);

// dense_q8w(x, x_u8, w, zw, scale, b, y, n_in, n_out)
static mp_obj_t nn_c_dense_q8w(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    uint32_t n_in = NN_SIZE(args[7], n_in), n_out = NN_SIZE(args[8], n_out);
    int x_u8 = mp_obj_is_true(args[1]);
    const void *x = x_u8 ? NN_IN(args[0], n_in, 1, x) : NN_IN(args[0], 4ull * n_in, 4, x);
    const uint8_t *w = NN_IN(args[2], (uint64_t)n_in * n_out, 1, w);
    const uint8_t *zw = NN_IN(args[3], n_out, 1, zw);
    const float *scale = NN_IN(args[4], 4ull * n_out, 4, scale);
    const float *b = NN_IN(args[5], 4ull * n_out, 4, b);
    float *y = NN_OUT(args[6], 4ull * n_out, 4, y);
    nn_dense_q8w(x, x_u8, w, zw, scale, b, y, n_in, n_out);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(nn_c_dense_q8w_obj, 9, 9, nn_c_dense_q8w);

// dense_q8(x, w, zw, bias, rq, acc, y, n_in, n_out, zy)
static mp_obj_t nn_c_dense_q8(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    uint32_t n_in = NN_SIZE(args[7], n_in), n_out = NN_SIZE(args[8], n_out);
    uint32_t zy = NN_BYTE(args[9], zy);
    const uint8_t *x = NN_IN(args[0], n_in, 1, x);
    const uint8_t *w = NN_IN(args[1], (uint64_t)n_in * n_out, 1, w);
    const uint8_t *zw = NN_IN(args[2], n_out, 1, zw);
    const int32_t *bias = NN_IN(args[3], 4ull * n_out, 4, bias);
    int32_t *acc = NN_OUT(args[5], 4ull * n_out, 4, acc);
    const uint32_t *rq = NULL;
    uint8_t *y = NULL;
    if (args[4] != mp_const_none) {
        rq = NN_IN(args[4], 4ull * n_out, 4, rq);
        y = NN_OUT(args[6], n_out, 1, y);
    }
    nn_dense_q8(x, w, zw, bias, rq, acc, y, n_in, n_out, zy);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(nn_c_dense_q8_obj, 10, 10, nn_c_dense_q8);

// The CSC arrays of a sparse layer: colptr (u32[n_in+1]) and rows; returns nnz.
static uint32_t nn_csc(mp_obj_t colptr_obj, mp_obj_t rows_obj, uint32_t index_bytes,
    uint32_t n_in, const uint32_t **colptr, const void **rows) {
    *colptr = NN_IN(colptr_obj, 4ull * (n_in + 1), 4, colptr);
    uint32_t nnz = (*colptr)[n_in];
    if ((*colptr)[0] != 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("colptr[0] must be 0"));
    }
    *rows = NN_IN(rows_obj, (uint64_t)nnz * index_bytes, index_bytes, rows);
    return nnz;
}

// sparse_f32(x, x_u8, colptr, rows, index_bytes, vals, b, y, n_in, n_out)
static mp_obj_t nn_c_sparse_f32(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    uint32_t n_in = NN_SIZE(args[8], n_in), n_out = NN_SIZE(args[9], n_out);
    uint32_t index_bytes = nn_int(args[4], 1, 2, MP_QSTR_index_bytes);
    int x_u8 = mp_obj_is_true(args[1]);
    const void *x = x_u8 ? NN_IN(args[0], n_in, 1, x) : NN_IN(args[0], 4ull * n_in, 4, x);
    const uint32_t *colptr;
    const void *rows;
    uint32_t nnz = nn_csc(args[2], args[3], index_bytes, n_in, &colptr, &rows);
    const float *vals = NN_IN(args[5], 4ull * nnz, 4, vals);
    const float *b = NN_IN(args[6], 4ull * n_out, 4, b);
    float *y = NN_OUT(args[7], 4ull * n_out, 4, y);
    nn_sparse_f32(x, x_u8, colptr, rows, index_bytes, vals, b, y, n_in, n_out);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(nn_c_sparse_f32_obj, 10, 10, nn_c_sparse_f32);

// sparse_q8(x, colptr, rows, index_bytes, vals, zw, bias, rq, acc, y, n_in, n_out, zy)
static mp_obj_t nn_c_sparse_q8(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    uint32_t n_in = NN_SIZE(args[10], n_in), n_out = NN_SIZE(args[11], n_out);
    uint32_t zy = NN_BYTE(args[12], zy);
    uint32_t index_bytes = nn_int(args[3], 1, 2, MP_QSTR_index_bytes);
    const uint8_t *x = NN_IN(args[0], n_in, 1, x);
    const uint32_t *colptr;
    const void *rows;
    uint32_t nnz = nn_csc(args[1], args[2], index_bytes, n_in, &colptr, &rows);
    const uint8_t *vals = NN_IN(args[4], nnz, 1, vals);
    const uint8_t *zw = NN_IN(args[5], n_out, 1, zw);
    const int32_t *bias = NN_IN(args[6], 4ull * n_out, 4, bias);
    int32_t *acc = NN_OUT(args[8], 4ull * n_out, 4, acc);
    const uint32_t *rq = NULL;
    uint8_t *y = NULL;
    if (args[7] != mp_const_none) {
        rq = NN_IN(args[7], 4ull * n_out, 4, rq);
        y = NN_OUT(args[9], n_out, 1, y);
    }
    nn_sparse_q8(x, colptr, rows, index_bytes, vals, zw, bias, rq, acc, y, n_in, n_out, zy);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(nn_c_sparse_q8_obj, 13, 13, nn_c_sparse_q8);

// binarize(x, threshold, y, n)
static mp_obj_t nn_c_binarize(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    uint32_t n = NN_SIZE(args[3], n);
    uint32_t threshold = NN_BYTE(args[1], threshold);
    const uint8_t *x = NN_IN(args[0], n, 1, x);
    uint32_t *y = NN_OUT(args[2], 4ull * nn_words(n), 4, y);
    nn_binarize(x, threshold, y, n);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(nn_c_binarize_obj, 4, 4, nn_c_binarize);

// The optional row popcounts pw of an XNOR layer (u32[n_out], popcount_rows), or NULL.
static const uint32_t *nn_pw(size_t n_args, const mp_obj_t *args, size_t at, uint32_t n_out) {
    if (n_args <= at || args[at] == mp_const_none) {
        return NULL;
    }
    return NN_IN(args[at], 4ull * n_out, 4, pw);
}

// xnor_dense(x, w, thr, y, n_in, n_out, pw=None)
static mp_obj_t nn_c_xnor_dense(size_t n_args, const mp_obj_t *args) {
    uint32_t n_in = NN_SIZE(args[4], n_in), n_out = NN_SIZE(args[5], n_out);
    const uint32_t *x = NN_IN(args[0], 4ull * nn_words(n_in), 4, x);
    const uint32_t *w = NN_IN(args[1], 4ull * nn_words(n_in) * n_out, 4, w);
    const int32_t *thr = NN_IN(args[2], 4ull * n_out, 4, thr);
    uint32_t *y = NN_OUT(args[3], 4ull * nn_words(n_out), 4, y);
    const uint32_t *pw = nn_pw(n_args, args, 6, n_out);
    if (pw) {
        nn_xnor_dense_pw(x, w, thr, pw, y, n_in, n_out);
    } else {
        nn_xnor_dense(x, w, thr, y, n_in, n_out);
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(nn_c_xnor_dense_obj, 6, 7, nn_c_xnor_dense);

// xnor_out(x, w, a, b, y, n_in, n_out, pw=None)
static mp_obj_t nn_c_xnor_out(size_t n_args, const mp_obj_t *args) {
    uint32_t n_in = NN_SIZE(args[5], n_in), n_out = NN_SIZE(args[6], n_out);
    const uint32_t *x = NN_IN(args[0], 4ull * nn_words(n_in), 4, x);
    const uint32_t *w = NN_IN(args[1], 4ull * nn_words(n_in) * n_out, 4, w);
    const int32_t *a = NN_IN(args[2], 4ull * n_out, 4, a);
    const int32_t *b = NN_IN(args[3], 4ull * n_out, 4, b);
    int32_t *y = NN_OUT(args[4], 4ull * n_out, 4, y);
    const uint32_t *pw = nn_pw(n_args, args, 7, n_out);
    if (pw) {
        nn_xnor_out_pw(x, w, a, b, pw, y, n_in, n_out);
    } else {
        nn_xnor_out(x, w, a, b, y, n_in, n_out);
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(nn_c_xnor_out_obj, 7, 8, nn_c_xnor_out);

// popcount_rows(w, n_in, n_out, pw): pw[c] = popcount of row c of an XNOR layer's weights
// (the optional last argument of xnor_dense and xnor_out; computed once, at load)
static mp_obj_t nn_c_popcount_rows(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    uint32_t n_in = NN_SIZE(args[1], n_in), n_out = NN_SIZE(args[2], n_out);
    const uint32_t *w = NN_IN(args[0], 4ull * nn_words(n_in) * n_out, 4, w);
    uint32_t *pw = NN_OUT(args[3], 4ull * n_out, 4, pw);
    nn_popcount_rows(w, nn_words(n_in), n_out, pw);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(nn_c_popcount_rows_obj, 4, 4, nn_c_popcount_rows);

// relu_f32(y, n)
static mp_obj_t nn_c_relu_f32(mp_obj_t y_obj, mp_obj_t n_obj) {
    uint32_t n = NN_SIZE(n_obj, n);
    float *y = NN_OUT(y_obj, 4ull * n, 4, y);
    nn_relu_f32(y, n);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(nn_c_relu_f32_obj, nn_c_relu_f32);

// argmax_i32(y, n) -> int, argmax_f32(y, n) -> int
static mp_obj_t nn_c_argmax_i32(mp_obj_t y_obj, mp_obj_t n_obj) {
    uint32_t n = NN_SIZE(n_obj, n);
    const int32_t *y = NN_IN(y_obj, 4ull * n, 4, y);
    return MP_OBJ_NEW_SMALL_INT(nn_argmax_i32(y, n));
}
static MP_DEFINE_CONST_FUN_OBJ_2(nn_c_argmax_i32_obj, nn_c_argmax_i32);

static mp_obj_t nn_c_argmax_f32(mp_obj_t y_obj, mp_obj_t n_obj) {
    uint32_t n = NN_SIZE(n_obj, n);
    const float *y = NN_IN(y_obj, 4ull * n, 4, y);
    return MP_OBJ_NEW_SMALL_INT(nn_argmax_f32(y, n));
}
static MP_DEFINE_CONST_FUN_OBJ_2(nn_c_argmax_f32_obj, nn_c_argmax_f32);

// check_csc(colptr, rows, index_bytes, n_in, n_out, nnz) -> int (any alignment)
static mp_obj_t nn_c_check_csc(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    uint32_t index_bytes = nn_int(args[2], 1, 2, MP_QSTR_index_bytes);
    uint32_t n_in = NN_SIZE(args[3], n_in), n_out = NN_SIZE(args[4], n_out);
    mp_int_t nnz = mp_obj_get_int(args[5]);
    if (nnz < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("nnz must be >= 0"));
    }
    const uint8_t *colptr = NN_IN(args[0], 4ull * (n_in + 1), 1, colptr);
    const uint8_t *rows = NN_IN(args[1], (uint64_t)nnz * index_bytes, 1, rows);
    return MP_OBJ_NEW_SMALL_INT(nn_check_csc(colptr, rows, index_bytes, n_in, n_out, nnz));
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(nn_c_check_csc_obj, 6, 6, nn_c_check_csc);

// check_f32(a, n) -> int (any alignment)
static mp_obj_t nn_c_check_f32(mp_obj_t a_obj, mp_obj_t n_obj) {
    mp_int_t n = mp_obj_get_int(n_obj);
    if (n < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("n must be >= 0"));
    }
    const uint8_t *a = NN_IN(a_obj, 4ull * n, 1, a);
    return MP_OBJ_NEW_SMALL_INT(nn_check_f32(a, n));
}
static MP_DEFINE_CONST_FUN_OBJ_2(nn_c_check_f32_obj, nn_c_check_f32);

// What run() knows of each function it may call: where its sizes are, the element type
// of its input (args[0]) and of its output buffer, and which argument that buffer is.
enum {
    NN_T_U8,    // bytes: bytes, bytearray, or an array/memoryview of typecode 'B'
    NN_T_F32,   // floats: an array('f') or a memoryview of one
    NN_T_I32,   // ints: an array('i') or a memoryview of one
    NN_T_BITS,  // packed bits: whole 32-bit words, any integer typecode
    NN_T_FLAG,  // input of a float kind: u8 if args[1] is true, else f32
    NN_T_Q8,    // output of dense_q8/sparse_q8: i32 in acc (args[y - 1]) if rq
                // (args[y - 2]) is None, else u8 in args[y]
};
#define NN_NONE (0xff)  // no such argument

typedef struct {
    const void *fun;
    uint8_t n_in_arg;
    uint8_t x_type;
    uint8_t n_out_arg;
    uint8_t y_arg;
    uint8_t y_type;
} nn_step_kind_t;

static const nn_step_kind_t nn_c_kernels[] = {
    { &nn_c_dense_f32_obj, 5, NN_T_FLAG, 6, 4, NN_T_F32 },
    { &nn_c_dense_q8w_obj, 7, NN_T_FLAG, 8, 6, NN_T_F32 },
    { &nn_c_dense_q8_obj, 7, NN_T_U8, 8, 6, NN_T_Q8 },
    { &nn_c_sparse_f32_obj, 8, NN_T_FLAG, 9, 7, NN_T_F32 },
    { &nn_c_sparse_q8_obj, 10, NN_T_U8, 11, 9, NN_T_Q8 },
    { &nn_c_binarize_obj, 3, NN_T_U8, 3, 2, NN_T_BITS },
    { &nn_c_xnor_dense_obj, 4, NN_T_BITS, 5, 3, NN_T_BITS },
    { &nn_c_xnor_out_obj, 5, NN_T_BITS, 6, 4, NN_T_I32 },
    { &nn_c_relu_f32_obj, 1, NN_T_F32, NN_NONE, NN_NONE, 0 },  // in place
    { &nn_c_argmax_i32_obj, 1, NN_T_I32, NN_NONE, NN_NONE, 0 },
    { &nn_c_argmax_f32_obj, 1, NN_T_F32, NN_NONE, NN_NONE, 0 },
};

static const nn_step_kind_t *nn_step_kind(mp_obj_t fun) {
    for (size_t k = 0; k < MP_ARRAY_SIZE(nn_c_kernels); k++) {
        if (MP_OBJ_TO_PTR(fun) == nn_c_kernels[k].fun) {
            return &nn_c_kernels[k];
        }
    }
    mp_raise_TypeError(MP_ERROR_TEXT("run: a step's function must be an _nn_c kernel"));
}

// A buffer given to run() for a model's input (what = "input") or output ("out"): an
// object of exactly n elements of `type` (NN_T_U8, F32, I32 or BITS; n bits for BITS),
// writable for an output; its buffer in *bi. O(1); TypeError/ValueError otherwise.
static void nn_check_buffer(mp_obj_t obj, int type, uint32_t n, bool writable,
    const char *what, mp_buffer_info_t *bi) {
    bool typed = mp_obj_is_type(obj, &mp_type_memoryview) || mp_obj_is_type(obj, &mp_type_array);
    bool bytes = mp_obj_is_type(obj, &mp_type_bytes) || mp_obj_is_type(obj, &mp_type_bytearray);
    bool words = type == NN_T_F32 || type == NN_T_I32;
    int want = type == NN_T_F32 ? 'f' : 'i';
    const char *unit = type == NN_T_F32 ? "floats" : type == NN_T_I32 ? "ints" : "bytes";
    if (!typed && !(bytes && !words)) {
        const char *is = mp_obj_get_type_str(obj);
        if (words) {
            mp_raise_msg_varg(&mp_type_TypeError,
                MP_ERROR_TEXT("%s must be array('%c') of %u %s (or a memoryview of one), not %s"),
                what, want, (unsigned)n, unit, is);
        }
        if (type == NN_T_U8) {
            mp_raise_msg_varg(&mp_type_TypeError,
                MP_ERROR_TEXT("%s must be %u bytes (bytes, bytearray, array('B') or a memoryview "
                    "of one), not %s"), what, (unsigned)n, is);
        }
        mp_raise_msg_varg(&mp_type_TypeError,
            MP_ERROR_TEXT("%s must be a bit buffer of %u bytes, not %s"), what,
            (unsigned)(4 * nn_words(n)), is);
    }
    mp_get_buffer_raise(obj, bi, MP_BUFFER_READ);
    int tc = bi->typecode == BYTEARRAY_TYPECODE ? 'B' : bi->typecode;
    size_t need = n;
    if (type == NN_T_U8) {
        if (tc == 'b') {
            mp_raise_msg_varg(&mp_type_TypeError,
                MP_ERROR_TEXT("%s must be %u u8 values (bytes, bytearray, array('B')); the %s "
                    "holds signed bytes (typecode 'b')"), what, (unsigned)n,
                mp_obj_get_type_str(obj));
        }
        if (tc != 'B') {
            mp_raise_msg_varg(&mp_type_TypeError,
                MP_ERROR_TEXT("%s must be %u raw bytes; the %s holds wider elements "
                    "(typecode '%c')"), what, (unsigned)n, mp_obj_get_type_str(obj), tc);
        }
    } else if (words) {
        if (tc != want) {
            mp_raise_msg_varg(&mp_type_TypeError,
                MP_ERROR_TEXT("%s must be array('%c') of %u %s (or a memoryview of one), not "
                    "%s('%c')"), what, want, (unsigned)n, unit, mp_obj_get_type_str(obj), tc);
        }
        need = 4 * (size_t)n;
    } else {  // bits: whole 32-bit words of any integer typecode
        if (tc == 'f' || tc == 'd') {
            mp_raise_msg_varg(&mp_type_TypeError,
                MP_ERROR_TEXT("%s must be a bit buffer of %u bytes, not floats"), what,
                (unsigned)(4 * nn_words(n)));
        }
        need = 4 * nn_words(n);
        n = need;
    }
    if (bi->len != need) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("%s takes %u %s, got %u"), what,
            (unsigned)n, unit, (unsigned)(words ? bi->len / 4 : bi->len));
    }
    if (writable && !mp_get_buffer(obj, bi, MP_BUFFER_WRITE)) {
        mp_raise_msg_varg(&mp_type_TypeError, MP_ERROR_TEXT("%s must be writable"), what);
    }
}

// The element type of a step's input, and its size.
static int nn_input_type(const nn_step_kind_t *kind, const mp_obj_t *args, uint32_t *n) {
    *n = NN_SIZE(args[kind->n_in_arg], n_in);
    if (kind->x_type == NN_T_FLAG) {
        return mp_obj_is_true(args[1]) ? NN_T_U8 : NN_T_F32;
    }
    return kind->x_type;
}

// The output buffer of a layer step, its element type and size.
static mp_obj_t nn_output(const nn_step_kind_t *kind, const mp_obj_t *args, int *type,
    uint32_t *n) {
    *n = NN_SIZE(args[kind->n_out_arg], n_out);
    *type = kind->y_type;
    if (*type == NN_T_Q8) {
        if (args[kind->y_arg - 2] == mp_const_none) {
            *type = NN_T_I32;
            return args[kind->y_arg - 1];
        }
        *type = NN_T_U8;
    }
    return args[kind->y_arg];
}

#define NN_RUN_MAX_ARGS (13)

// One step of run(): its kind, and its args (checked to fit the function).
static const nn_step_kind_t *nn_step(mp_obj_t step, mp_obj_t *fun, mp_obj_t **args,
    size_t *n_args) {
    size_t n_pair;
    mp_obj_t *pair;
    mp_obj_get_array(step, &n_pair, &pair);
    if (n_pair != 2) {
        mp_raise_TypeError(MP_ERROR_TEXT("run: a step is a (function, args) pair"));
    }
    const nn_step_kind_t *kind = nn_step_kind(pair[0]);
    mp_obj_get_array(pair[1], n_args, args);
    if (*n_args > NN_RUN_MAX_ARGS || *n_args <= kind->n_in_arg
        || (kind->n_out_arg != NN_NONE && *n_args <= kind->n_out_arg)) {
        mp_raise_TypeError(MP_ERROR_TEXT("run: a step's args do not fit its function"));
    }
    *fun = pair[0];
    return kind;
}

// run(steps, x=None, out=None) -> the last call's result: calls a prepared sequence of this
// module's functions from C, saving the interpreter's cost of one call per layer (about
// 25 us on an RP2040 at 125 MHz). steps: a tuple or list of (function, args) pairs,
// function one of this module's kernels, relu_f32, argmax_i32 or argmax_f32, and args a
// tuple of its arguments exactly as for a direct call.
// x, unless None, is the model input; it must be exactly what the first step takes (n_in
// bytes of typecode 'B' for u8: bytes, bytearray, array('B'), a memoryview of one; an
// array('f') of n_in floats for f32; 4*ceil(n_in/32) bytes of bits). If that step's
// args[0] is None, x is passed in its place; if it is a buffer (the model's input buffer),
// x is copied into it first, so that x may share memory with any buffer the steps write.
// out, unless None, replaces the output buffer of the last layer step (every argument
// that is that buffer, in that step and the steps after it) and must be exactly what that
// buffer is: array('f') or array('i') of n_out elements (or a memoryview of one),
// writable. Wrong x or out: TypeError/ValueError before anything runs. Allocates nothing.
static mp_obj_t nn_c_run(size_t n_run_args, const mp_obj_t *run_args) {
    mp_obj_t x_in = n_run_args > 1 ? run_args[1] : mp_const_none;
    mp_obj_t out = n_run_args > 2 ? run_args[2] : mp_const_none;
    size_t n_steps, n_args;
    mp_obj_t *steps, *args, fun;
    mp_obj_get_array(run_args[0], &n_steps, &steps);
    // out: checked against the last layer step's output buffer before any step runs
    size_t last_layer = n_steps;
    mp_obj_t y_obj = MP_OBJ_NULL;
    if (out != mp_const_none) {
        for (size_t s = 0; s < n_steps; s++) {
            if (nn_step(steps[s], &fun, &args, &n_args)->y_arg != NN_NONE) {
                last_layer = s;
            }
        }
        if (last_layer == n_steps) {
            mp_raise_TypeError(MP_ERROR_TEXT("run: out given, but no step has an output"));
        }
        const nn_step_kind_t *kind = nn_step(steps[last_layer], &fun, &args, &n_args);
        uint32_t n;
        int type;
        y_obj = nn_output(kind, args, &type, &n);
        mp_buffer_info_t bi;
        nn_check_buffer(out, type, n, true, "out", &bi);
    }
    mp_obj_t result = mp_const_none;
    for (size_t s = 0; s < n_steps; s++) {
        const nn_step_kind_t *kind = nn_step(steps[s], &fun, &args, &n_args);
        bool put_x = false;
        if (s == 0 && (x_in != mp_const_none || args[0] == mp_const_none)) {
            uint32_t n;
            int type = nn_input_type(kind, args, &n);
            mp_buffer_info_t bi;
            nn_check_buffer(x_in, type, n, false, "input", &bi);  // (x of None raises here)
            if (args[0] == mp_const_none) {
                put_x = true;
            } else {
                mp_buffer_info_t dst;
                mp_get_buffer_raise(args[0], &dst, MP_BUFFER_WRITE);
                if (dst.len < bi.len) {
                    mp_raise_ValueError(MP_ERROR_TEXT("run: the input buffer is too short"));
                }
                memcpy(dst.buf, bi.buf, bi.len);  // (x cannot be the private input buffer)
            }
        }
        bool put_out = y_obj != MP_OBJ_NULL && s >= last_layer;
        if (put_x || put_out) {
            mp_obj_t a[NN_RUN_MAX_ARGS];
            for (size_t k = 0; k < n_args; k++) {
                a[k] = put_out && args[k] == y_obj ? out : args[k];
            }
            if (put_x) {
                a[0] = x_in;
            }
            result = mp_call_function_n_kw(fun, n_args, 0, a);
        } else {
            result = mp_call_function_n_kw(fun, n_args, 0, args);
        }
    }
    return result;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(nn_c_run_obj, 1, 3, nn_c_run);

// ------------------------------------------------------------------ prepared steps

// What a step of prepare() does: its kernel, with the arguments resolved and checked once.
enum {
    NN_P_BINARIZE,
    NN_P_XNOR_DENSE,
    NN_P_XNOR_OUT,
    NN_P_ARGMAX_I32,
    NN_P_ARGMAX_F32,
};

typedef struct {
    uint8_t op;          // NN_P_*
    bool x_is_y, y_is_y;  // the argument is the last layer's output buffer (what out replaces)
    uint32_t n_in, n_out, threshold;
    const void *x;       // NULL in the first step: the call's input
    const void *w, *p1, *p2;  // weights; thr (xnor_dense) or a (xnor_out); b (xnor_out)
    const uint32_t *pw;  // row popcounts, or NULL
    void *y;             // output buffer (NULL for an argmax)
} nn_prep_step_t;

// A buffer of a bytearray or an array: it can be resized (moved), so each call checks that
// it has not been.
typedef struct {
    mp_obj_t obj;
    const void *buf;
    size_t len;
} nn_watch_t;

typedef struct {
    mp_obj_base_t base;
    mp_obj_t steps;      // keeps every buffer the steps point into alive
    mp_obj_t fallback, gate;  // see prepare()
    mp_obj_t y_obj;      // the last layer step's output buffer, or MP_OBJ_NULL
    size_t n_steps, last_layer, n_watch;
    uint8_t x_type, y_type;
    uint32_t x_n, y_n;
    nn_watch_t *watch;
    nn_prep_step_t step[];
} nn_c_prepared_t;

#ifdef NN_C_NATMOD
extern mp_obj_full_type_t nn_c_prepared_type;  // natmod.c fills it in at import
#define NN_C_PREPARED_TYPE ((const mp_obj_type_t *)&nn_c_prepared_type)
#else
static const mp_obj_type_t nn_c_prepared_type;
#define NN_C_PREPARED_TYPE (&nn_c_prepared_type)
#endif

static bool nn_resizable(mp_obj_t obj) {
    return mp_obj_is_type(obj, &mp_type_bytearray) || mp_obj_is_type(obj, &mp_type_array);
}

// The buffer of args[at] as the bindings check it (nn_buf), entered in the watch list if
// it can be resized.
static void *nn_prep_buf(nn_c_prepared_t *p, const mp_obj_t *args, size_t at, uint64_t need,
    uint32_t align, bool writable, qstr name) {
    void *buf = nn_buf(args[at], need, align, writable, name);
    if (nn_resizable(args[at])) {
        mp_buffer_info_t bi;
        mp_get_buffer_raise(args[at], &bi, MP_BUFFER_READ);
        nn_watch_t *w = &p->watch[p->n_watch++];
        w->obj = args[at];
        w->buf = bi.buf;
        w->len = bi.len;
    }
    return buf;
}

// Step k of p from a (function, args) pair of the binary kinds and argmax.
static void nn_prep_step(nn_c_prepared_t *p, size_t k, const nn_step_kind_t *kind,
    const mp_obj_t *args, size_t n_args) {
    nn_prep_step_t *s = &p->step[k];
    const void *fun = kind->fun;
    uint32_t n_in, n_out;
    if (fun == &nn_c_binarize_obj) {  // binarize(x, threshold, y, n)
        s->op = NN_P_BINARIZE;
        n_in = n_out = NN_SIZE(args[3], n);
        s->threshold = NN_BYTE(args[1], threshold);
        s->y = nn_prep_buf(p, args, 2, 4ull * nn_words(n_in), 4, true, MP_QSTR_y);
    } else if (fun == &nn_c_xnor_dense_obj || fun == &nn_c_xnor_out_obj) {
        bool dense = fun == &nn_c_xnor_dense_obj;
        n_in = NN_SIZE(args[dense ? 4 : 5], n_in);
        n_out = NN_SIZE(args[dense ? 5 : 6], n_out);
        s->op = dense ? NN_P_XNOR_DENSE : NN_P_XNOR_OUT;
        s->w = nn_prep_buf(p, args, 1, 4ull * nn_words(n_in) * n_out, 4, false, MP_QSTR_w);
        s->p1 = nn_prep_buf(p, args, 2, 4ull * n_out, 4, false, dense ? MP_QSTR_thr : MP_QSTR_a);
        if (!dense) {
            s->p2 = nn_prep_buf(p, args, 3, 4ull * n_out, 4, false, MP_QSTR_b);
        }
        size_t y_at = dense ? 3 : 4, pw_at = dense ? 6 : 7;
        s->y = nn_prep_buf(p, args, y_at, 4ull * (dense ? nn_words(n_out) : n_out), 4, true,
            MP_QSTR_y);
        s->pw = NULL;
        if (n_args > pw_at && args[pw_at] != mp_const_none) {
            s->pw = nn_prep_buf(p, args, pw_at, 4ull * n_out, 4, false, MP_QSTR_pw);
        }
    } else if (fun == &nn_c_argmax_i32_obj || fun == &nn_c_argmax_f32_obj) {
        s->op = fun == &nn_c_argmax_i32_obj ? NN_P_ARGMAX_I32 : NN_P_ARGMAX_F32;
        n_in = n_out = NN_SIZE(args[1], n);
        s->y = NULL;
    } else {
        mp_raise_TypeError(MP_ERROR_TEXT("prepare: steps of binarize, xnor_dense, xnor_out "
            "and argmax only"));
    }
    s->n_in = n_in;
    s->n_out = n_out;
    s->x = NULL;
    if (k > 0) {
        bool bits = s->op == NN_P_XNOR_DENSE || s->op == NN_P_XNOR_OUT;
        s->x = s->op == NN_P_BINARIZE ? nn_prep_buf(p, args, 0, n_in, 1, false, MP_QSTR_x)
            : nn_prep_buf(p, args, 0, 4ull * (bits ? nn_words(n_in) : n_in), 4, false,
                MP_QSTR_x);
    } else if (args[0] != mp_const_none) {
        mp_raise_TypeError(MP_ERROR_TEXT("prepare: the first step's input must be None "
            "(each call's x)"));
    }
    s->x_is_y = p->y_obj != MP_OBJ_NULL && k >= p->last_layer && args[0] == p->y_obj;
    s->y_is_y = p->y_obj != MP_OBJ_NULL && k >= p->last_layer && kind->y_arg != NN_NONE
        && args[kind->y_arg] == p->y_obj;
}

// prepare(steps, fallback=None, gate=None) -> a callable r: r(x, out=None) runs the steps
// as run(steps, x, out) does, with every argument but x and out checked here, once: the
// steps of a binary network (binarize, xnor_dense, xnor_out, argmax_i32/f32; TypeError for
// others), the first step's input None. r returns the last step's result: an argmax's
// index, else the output buffer (out if given). A call checks x and out (O(1)) and that no
// bytearray or array of the steps was resized since (ValueError); it allocates nothing.
// The steps are kept: their buffers stay alive. With a gate (a buffer whose byte 0 is
// read at each call), r calls fallback(*args, **kwargs) instead while that byte is 0, or
// when given keyword arguments: nn.load makes a model's forward and predict this way, so
// that they go straight into C while the C tier is in use (nn.use_backend sets the byte).
static mp_obj_t nn_c_prepare(size_t n_prep_args, const mp_obj_t *prep_args) {
    mp_obj_t steps_obj = prep_args[0];
    mp_obj_t fallback = n_prep_args > 1 ? prep_args[1] : mp_const_none;
    mp_obj_t gate = n_prep_args > 2 ? prep_args[2] : mp_const_none;
    if ((gate == mp_const_none) != (fallback == mp_const_none)) {
        mp_raise_TypeError(MP_ERROR_TEXT("prepare: a gate needs a fallback and a fallback a gate"));
    }
    if (gate != mp_const_none) {
        nn_buf(gate, 1, 1, false, MP_QSTR_gate);
    }
    size_t n_steps, n_args;
    mp_obj_t *steps, *args, fun;
    mp_obj_get_array(steps_obj, &n_steps, &steps);
    if (n_steps == 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("prepare: no steps"));
    }
    size_t n_watch = 0;
    for (size_t k = 0; k < n_steps; k++) {
        nn_step(steps[k], &fun, &args, &n_args);
        for (size_t a = 0; a < n_args; a++) {
            n_watch += nn_resizable(args[a]);
        }
    }
    nn_c_prepared_t *p = mp_obj_malloc_var(nn_c_prepared_t, step, nn_prep_step_t, n_steps,
        NN_C_PREPARED_TYPE);
    p->watch = m_new(nn_watch_t, n_watch ? n_watch : 1);
    p->steps = steps_obj;
    p->fallback = fallback;
    p->gate = gate;
    p->n_steps = n_steps;
    p->n_watch = 0;
    p->y_obj = MP_OBJ_NULL;
    p->last_layer = n_steps;
    for (size_t k = 0; k < n_steps; k++) {
        const nn_step_kind_t *kind = nn_step(steps[k], &fun, &args, &n_args);
        if (kind->y_arg != NN_NONE) {
            p->last_layer = k;
        }
    }
    if (p->last_layer < n_steps) {
        const nn_step_kind_t *kind = nn_step(steps[p->last_layer], &fun, &args, &n_args);
        int type;
        uint32_t n;
        p->y_obj = nn_output(kind, args, &type, &n);
        p->y_type = type;
        p->y_n = n;
    }
    for (size_t k = 0; k < n_steps; k++) {
        const nn_step_kind_t *kind = nn_step(steps[k], &fun, &args, &n_args);
        if (k == 0) {
            uint32_t n;
            p->x_type = nn_input_type(kind, args, &n);
            p->x_n = n;
        }
        nn_prep_step(p, k, kind, args, n_args);
    }
    return MP_OBJ_FROM_PTR(p);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(nn_c_prepare_obj, 1, 3, nn_c_prepare);

static mp_obj_t nn_c_prepared_call(mp_obj_t self_in, size_t n_args, size_t n_kw,
    const mp_obj_t *args) {
    nn_c_prepared_t *p = MP_OBJ_TO_PTR(self_in);
    mp_buffer_info_t bi;
    if (p->gate != mp_const_none) {
        if (n_kw != 0 || !mp_get_buffer(p->gate, &bi, MP_BUFFER_READ) || bi.len == 0
            || ((const uint8_t *)bi.buf)[0] == 0) {
            return mp_call_function_n_kw(p->fallback, n_args, n_kw, args);
        }
    }
    if (n_kw != 0 || n_args < 1 || n_args > 2) {
        mp_raise_TypeError(MP_ERROR_TEXT("prepared steps take (x, out=None)"));
    }
    nn_check_buffer(args[0], p->x_type, p->x_n, false, "input", &bi);
    const void *xp = bi.buf;
    mp_obj_t out = n_args > 1 ? args[1] : mp_const_none;
    void *outp = NULL;
    if (out != mp_const_none) {
        if (p->y_obj == MP_OBJ_NULL) {
            mp_raise_TypeError(MP_ERROR_TEXT("run: out given, but no step has an output"));
        }
        nn_check_buffer(out, p->y_type, p->y_n, true, "out", &bi);
        outp = bi.buf;
    }
    for (size_t k = 0; k < p->n_watch; k++) {
        const nn_watch_t *w = &p->watch[k];
        if (!mp_get_buffer(w->obj, &bi, MP_BUFFER_READ) || bi.buf != w->buf || bi.len != w->len) {
            mp_raise_ValueError(MP_ERROR_TEXT("prepared steps: a buffer was resized since "
                "prepare"));
        }
    }
    uint32_t result = 0;
    for (size_t k = 0; k < p->n_steps; k++) {
        const nn_prep_step_t *s = &p->step[k];
        const void *x = k == 0 ? xp : s->x;
        void *y = s->y;
        if (outp) {
            x = s->x_is_y ? outp : x;
            y = s->y_is_y ? outp : y;
        }
        switch (s->op) {
            case NN_P_BINARIZE:
                nn_binarize(x, s->threshold, y, s->n_in);
                break;
            case NN_P_XNOR_DENSE:
                if (s->pw) {
                    nn_xnor_dense_pw(x, s->w, s->p1, s->pw, y, s->n_in, s->n_out);
                } else {
                    nn_xnor_dense(x, s->w, s->p1, y, s->n_in, s->n_out);
                }
                break;
            case NN_P_XNOR_OUT:
                if (s->pw) {
                    nn_xnor_out_pw(x, s->w, s->p1, s->p2, s->pw, y, s->n_in, s->n_out);
                } else {
                    nn_xnor_out(x, s->w, s->p1, s->p2, y, s->n_in, s->n_out);
                }
                break;
            case NN_P_ARGMAX_I32:
                result = nn_argmax_i32(x, s->n_in);
                break;
            default:
                result = nn_argmax_f32(x, s->n_in);
                break;
        }
    }
    uint8_t last = p->step[p->n_steps - 1].op;
    if (last == NN_P_ARGMAX_I32 || last == NN_P_ARGMAX_F32) {
        return MP_OBJ_NEW_SMALL_INT(result);
    }
    return outp ? out : p->y_obj;
}

#ifndef NN_C_NATMOD
static MP_DEFINE_CONST_OBJ_TYPE(nn_c_prepared_type, MP_QSTR_Prepared, MP_TYPE_FLAG_NONE,
    call, nn_c_prepared_call);
#endif

// A buffer length for the 32-bit lengths of nn_graph.c (a longer one counts as 2^32 - 1).
static inline uint32_t nn_len32(size_t len) {
    return (uint64_t)len >= (1ull << 32) ? 0xffffffffu : (uint32_t)len;
}

// What nn_graph_check found, by its NN_GRAPH_E_* code.
static const char *const nn_graph_errors[NN_GRAPH_ERRORS] = {
    [NN_GRAPH_OK] = "",
    [NN_GRAPH_E_HEADER] = "not a version-2 model header",
    [NN_GRAPH_E_MODEL_SIZE] = "model buffer shorter than its total_size",
    [NN_GRAPH_E_ARENA] = "arena shorter than the model's arena_size",
    [NN_GRAPH_E_RANGE] = "first/end outside 0 <= first <= end <= operators",
    [NN_GRAPH_E_KIND] = "unknown kind or input count",
    [NN_GRAPH_E_INDEX] = "tensor index out of range or missing",
    [NN_GRAPH_E_TENSOR] = "tensor record out of range",
    [NN_GRAPH_E_SHAPE] = "dtypes or shapes do not fit the kind",
    [NN_GRAPH_E_PARAMS] = "param out of range",
    [NN_GRAPH_E_TABLE] = "table missing or out of range",
};

// graph_run(model, arena, first, end): runs operators [first, end) of a format version 2
// model (docs/FORMAT.md) on the arena (nn_graph.c). model: the model's bytes, 4-byte
// aligned (read in place); arena: a writable 4-byte aligned buffer of at least the
// model's arena_size bytes, holding the graph inputs at their planned offsets and
// receiving every activation. The records the operators use are checked first (O(records
// + output channels)): ValueError naming the operator, and nothing runs. Allocates nothing.
static mp_obj_t nn_c_graph_run(size_t n_args, const mp_obj_t *args) {
    (void)n_args;
    mp_buffer_info_t model, arena;
    mp_get_buffer_raise(args[0], &model, MP_BUFFER_READ);
    mp_get_buffer_raise(args[1], &arena, MP_BUFFER_WRITE);
    mp_int_t first = mp_obj_get_int(args[2]), end = mp_obj_get_int(args[3]);
    if (((uintptr_t)model.buf & 3) || ((uintptr_t)arena.buf & 3)) {
        mp_raise_ValueError(MP_ERROR_TEXT("graph_run: model and arena must be 4-byte aligned"));
    }
    if (first < 0 || end < first || end > 0xffff) {
        mp_raise_ValueError(MP_ERROR_TEXT("graph_run: need 0 <= first <= end <= operators"));
    }
    uint32_t at;
    uint32_t e = nn_graph_check(model.buf, nn_len32(model.len), nn_len32(arena.len),
        (uint32_t)first, (uint32_t)end, &at);
    if (e) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("graph_run: operator %u: %s"),
            (unsigned)at, nn_graph_errors[e < NN_GRAPH_ERRORS ? e : NN_GRAPH_E_HEADER]);
    }
    nn_graph_run(model.buf, arena.buf, (uint32_t)first, (uint32_t)end);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(nn_c_graph_run_obj, 4, 4, nn_c_graph_run);

// A graph checked once and run many times: graph_prepare(model, arena, out) makes it, a
// call runs it. It keeps its model, arena and output buffer alive; the model is
// read-only (bytes, a read-only memoryview, or flash), so the records checked at
// preparation are the records every call runs, and a call rechecks only what can change
// (the arena's size, the input's size).
typedef struct {
    mp_obj_base_t base;
    mp_obj_t model, arena, out;  // (references: the buffers stay where they were checked)
    const uint8_t *model_buf;
    uint32_t arena_size, n_operators;
    uint32_t in_offset, in_nbytes;
    uint32_t out_offset, out_nbytes;
    bool out_constant;  // the output is a constant tensor: copied from the model
} nn_c_graph_t;

#ifdef NN_C_NATMOD
extern mp_obj_full_type_t nn_c_graph_type;  // natmod.c fills it in at import
#define NN_C_GRAPH_TYPE ((const mp_obj_type_t *)&nn_c_graph_type)
#else
static const mp_obj_type_t nn_c_graph_type;
#define NN_C_GRAPH_TYPE (&nn_c_graph_type)
#endif

// True if [buf, buf + len) is execute-in-place flash: stores through a memory view never
// change it (nn.load trusts a model there the same way: nn.model._is_flash).
static bool nn_in_flash(const void *buf, size_t len) {
    #if defined(MICROPY_PY_SYS_PLATFORM) && defined(XIP_BASE)
    const uintptr_t window = 0x01000000;  // the 16 MB cached window of the flash chip
    uintptr_t a = (uintptr_t)buf;
    return a >= XIP_BASE && a - XIP_BASE <= window && len <= window - (a - XIP_BASE);
    #else
    (void)buf;
    (void)len;
    return false;
    #endif
}

// The int8 bytes of x if it is bytes, a bytearray, an array('b') or a memoryview of one of
// them (what Model.forward accepts), else NULL.
static const void *nn_int8_input(mp_obj_t x, size_t *len) {
    mp_buffer_info_t bi;
    if (!mp_get_buffer(x, &bi, MP_BUFFER_READ)) {
        return NULL;
    }
    if (bi.typecode == 'b' || bi.typecode == BYTEARRAY_TYPECODE
        || (bi.typecode == 'B' && mp_obj_is_type(x, &mp_type_bytes))) {
        *len = bi.len;
        return bi.buf;
    }
    return NULL;
}

// graph_prepare(model, arena, out): checks a format version 2 model of one input (int8,
// in the arena) and one output once, as graph_run checks it (every operator), and returns
// a callable g: g(x) copies x (bytes, bytearray or array('b') of the input's size) into
// the arena, runs every operator and copies the output into out, which it returns; it
// returns None, running nothing, when x is not such a buffer (the caller's own checks
// then say why). model: read-only (TypeError for a writable buffer outside flash: it
// could change after the check), 4-byte aligned; arena: writable, 4-byte aligned, at
// least arena_size bytes; out: writable, the output's bytes. A call allocates nothing.
static mp_obj_t nn_c_graph_prepare(mp_obj_t model_obj, mp_obj_t arena_obj, mp_obj_t out_obj) {
    mp_buffer_info_t model, arena, out;
    mp_get_buffer_raise(model_obj, &model, MP_BUFFER_READ);
    if (mp_get_buffer(model_obj, &out, MP_BUFFER_WRITE) && !nn_in_flash(model.buf, model.len)) {
        mp_raise_TypeError(MP_ERROR_TEXT("graph_prepare: the model must be read-only (bytes): "
            "a writable buffer could change after it is checked"));
    }
    mp_get_buffer_raise(arena_obj, &arena, MP_BUFFER_WRITE);
    mp_get_buffer_raise(out_obj, &out, MP_BUFFER_WRITE);
    if (((uintptr_t)model.buf & 3) || ((uintptr_t)arena.buf & 3)) {
        mp_raise_ValueError(MP_ERROR_TEXT("graph_prepare: model and arena must be 4-byte aligned"));
    }
    uint32_t at, model_len = nn_len32(model.len), arena_len = nn_len32(arena.len);
    uint32_t e = nn_graph_check(model.buf, model_len, arena_len, 0, 0, &at);  // the header
    const nn_graph_header_t *h = model.buf;
    if (!e) {
        e = nn_graph_check(model.buf, model_len, arena_len, 0, h->n_operators, &at);
    }
    if (e) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("graph_prepare: operator %u: %s"),
            (unsigned)at, nn_graph_errors[e < NN_GRAPH_ERRORS ? e : NN_GRAPH_E_HEADER]);
    }
    const nn_graph_tensor_t *x = h->n_inputs == 1 ? nn_graph_tensor(model.buf, h->inputs[0]) : NULL;
    const nn_graph_tensor_t *y = h->n_outputs == 1 ? nn_graph_tensor(model.buf, h->outputs[0]) : NULL;
    if (x == NULL || y == NULL || x->dtype != NN_DTYPE_I8 || x->storage != NN_STORAGE_ARENA) {
        mp_raise_ValueError(MP_ERROR_TEXT("graph_prepare: needs one int8 input and one output"));
    }
    if (out.len != y->nbytes) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("graph_prepare: out: %u bytes, "
            "the output has %u"), (unsigned)out.len, (unsigned)y->nbytes);
    }
    nn_c_graph_t *g = mp_obj_malloc(nn_c_graph_t, NN_C_GRAPH_TYPE);
    g->model = model_obj;
    g->arena = arena_obj;
    g->out = out_obj;
    g->model_buf = model.buf;
    g->arena_size = h->arena_size;
    g->n_operators = h->n_operators;
    g->in_offset = x->offset;
    g->in_nbytes = x->nbytes;
    g->out_offset = y->offset;
    g->out_nbytes = y->nbytes;
    g->out_constant = y->storage == NN_STORAGE_CONSTANT;
    return MP_OBJ_FROM_PTR(g);
}
static MP_DEFINE_CONST_FUN_OBJ_3(nn_c_graph_prepare_obj, nn_c_graph_prepare);

// g(x): see graph_prepare. The arena and out are fetched again (a bytearray or an array
// can be resized, and move, between calls).
static mp_obj_t nn_c_graph_call(mp_obj_t self_in, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    nn_c_graph_t *g = MP_OBJ_TO_PTR(self_in);
    if (n_args != 1 || n_kw != 0) {
        mp_raise_TypeError(MP_ERROR_TEXT("a prepared graph takes one input"));
    }
    size_t n;
    const void *x = nn_int8_input(args[0], &n);
    if (x == NULL || n != g->in_nbytes) {
        return mp_const_none;
    }
    uint8_t *arena = NN_OUT(g->arena, g->arena_size, 4, arena);
    uint8_t *out = NN_OUT(g->out, g->out_nbytes, 1, out);
    memmove(arena + g->in_offset, x, n);  // (x may be a view of the arena)
    nn_graph_run(g->model_buf, arena, 0, g->n_operators);
    memmove(out, (g->out_constant ? g->model_buf : arena) + g->out_offset, g->out_nbytes);
    return g->out;
}

#ifndef NN_C_NATMOD
static MP_DEFINE_CONST_OBJ_TYPE(nn_c_graph_type, MP_QSTR_Graph, MP_TYPE_FLAG_NONE,
    call, nn_c_graph_call);
#endif

#ifndef NN_C_NATMOD  // a native module stores its functions at import instead (natmod.c)
static const mp_rom_map_elem_t nn_c_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR__nn_c) },
    { MP_ROM_QSTR(MP_QSTR_run), MP_ROM_PTR(&nn_c_run_obj) },
    { MP_ROM_QSTR(MP_QSTR_prepare), MP_ROM_PTR(&nn_c_prepare_obj) },
    { MP_ROM_QSTR(MP_QSTR_dense_f32), MP_ROM_PTR(&nn_c_dense_f32_obj) },
    { MP_ROM_QSTR(MP_QSTR_dense_q8w), MP_ROM_PTR(&nn_c_dense_q8w_obj) },
    { MP_ROM_QSTR(MP_QSTR_dense_q8), MP_ROM_PTR(&nn_c_dense_q8_obj) },
    { MP_ROM_QSTR(MP_QSTR_sparse_f32), MP_ROM_PTR(&nn_c_sparse_f32_obj) },
    { MP_ROM_QSTR(MP_QSTR_sparse_q8), MP_ROM_PTR(&nn_c_sparse_q8_obj) },
    { MP_ROM_QSTR(MP_QSTR_binarize), MP_ROM_PTR(&nn_c_binarize_obj) },
    { MP_ROM_QSTR(MP_QSTR_xnor_dense), MP_ROM_PTR(&nn_c_xnor_dense_obj) },
    { MP_ROM_QSTR(MP_QSTR_xnor_out), MP_ROM_PTR(&nn_c_xnor_out_obj) },
    { MP_ROM_QSTR(MP_QSTR_popcount_rows), MP_ROM_PTR(&nn_c_popcount_rows_obj) },
    { MP_ROM_QSTR(MP_QSTR_relu_f32), MP_ROM_PTR(&nn_c_relu_f32_obj) },
    { MP_ROM_QSTR(MP_QSTR_argmax_i32), MP_ROM_PTR(&nn_c_argmax_i32_obj) },
    { MP_ROM_QSTR(MP_QSTR_argmax_f32), MP_ROM_PTR(&nn_c_argmax_f32_obj) },
    { MP_ROM_QSTR(MP_QSTR_check_csc), MP_ROM_PTR(&nn_c_check_csc_obj) },
    { MP_ROM_QSTR(MP_QSTR_check_f32), MP_ROM_PTR(&nn_c_check_f32_obj) },
    { MP_ROM_QSTR(MP_QSTR_graph_run), MP_ROM_PTR(&nn_c_graph_run_obj) },
    { MP_ROM_QSTR(MP_QSTR_graph_prepare), MP_ROM_PTR(&nn_c_graph_prepare_obj) },
};
static MP_DEFINE_CONST_DICT(nn_c_module_globals, nn_c_module_globals_table);

const mp_obj_module_t nn_c_user_cmodule = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&nn_c_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR__nn_c, nn_c_user_cmodule);
#endif
