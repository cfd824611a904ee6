// Graph runner of format version 2 (see nn_graph.h, docs/FORMAT.md "Version 2").
//
// One table, indexed by the operator kind, gives each kind's check and run functions.
// A check function proves what its run function relies on (every pointer it forms lies
// inside the model or the arena); a run function resolves the operator's tensors, fills
// the kernel's parameter struct and calls the kernel of nn_int8.c.
#include "nn_graph.h"

#include <stddef.h>
#include <string.h>

#include "nn_float.h"
#include "nn_int8.h"
#include "nn_xnor_graph.h"

_Static_assert(sizeof(nn_graph_header_t) == 64, "header record");
_Static_assert(sizeof(nn_graph_tensor_t) == 40, "tensor record");
_Static_assert(sizeof(nn_graph_op_t) == 80, "operator record");
_Static_assert(offsetof(nn_graph_header_t, inputs) == 44, "header inputs");
_Static_assert(offsetof(nn_graph_tensor_t, offset) == 12, "tensor offset");
_Static_assert(offsetof(nn_graph_op_t, params) == 16, "operator params");

// (Not static: a native module links its BSS through global symbols only.)
uint32_t nn_graph_scratch[NN_GRAPH_SCRATCH_BYTES / 4];

#define MAX_TENSORS (1024)
#define MAX_OPERATORS (1024)
#define MAX_STRIDE (4096)     // keeps out index x stride inside 32 bits
#define MAX_SOFTMAX_DEPTH (511)  // beyond, the sum of exponentials can leave its range
#define MAX_ADD_LEFT_SHIFT (22)  // (x + offset) << left_shift stays inside int32
#define MIN_SHIFT (-31)
#define MAX_SHIFT (30)
#define LUT8_BYTES (256)
#define LUT32_BYTES (256 * 4)
#define CHANNEL_BYTES (12)

// A model being checked or run.
typedef struct {
    const uint8_t *model;
    uint8_t *arena;
    const nn_graph_header_t *head;
    const nn_graph_tensor_t *tensors;
    const nn_graph_op_t *ops;
} graph_t;

static void graph_init(graph_t *g, const uint8_t *model, uint8_t *arena) {
    g->model = model;
    g->arena = arena;
    g->head = (const nn_graph_header_t *)(const void *)model;
    g->tensors = (const nn_graph_tensor_t *)(const void *)(model + g->head->tensor_table);
    g->ops = (const nn_graph_op_t *)(const void *)(model + g->head->operator_table);
}

static inline const nn_graph_tensor_t *tensor(const graph_t *g, uint32_t index) {
    return &g->tensors[index];
}

static inline void *tensor_data(const graph_t *g, uint32_t index) {
    const nn_graph_tensor_t *t = tensor(g, index);
    if (t->storage == NN_STORAGE_CONSTANT) {
        return (void *)(uintptr_t)(g->model + t->offset);
    }
    return g->arena + t->offset;
}

static inline const void *table(const graph_t *g, const nn_graph_op_t *op) {
    return g->model + op->table;
}

// Words of a bits row of c elements.
static inline uint32_t words_of(uint32_t c) {
    return (c + 31) >> 5;
}

static inline uint32_t element_size(uint32_t dtype) {
    return dtype == NN_DTYPE_I8 ? 1 : 4;
}

static inline uint32_t elements(const nn_graph_tensor_t *t) {
    return t->dtype == NN_DTYPE_I8 ? t->nbytes : t->nbytes >> 2;
}

// Dimension k counted from the last (0: the last), 1 past the rank.
static inline uint32_t dim_from_end(const nn_graph_tensor_t *t, uint32_t k) {
    return k < t->rank ? t->dims[t->rank - 1 - k] : 1;
}

// ---------------------------------------------------------------------------
// Checks

static uint32_t check_tensor(const graph_t *g, uint32_t index) {
    const nn_graph_tensor_t *t = tensor(g, index);
    const nn_graph_header_t *h = g->head;
    if ((t->dtype != NN_DTYPE_I8 && t->dtype != NN_DTYPE_I32 && t->dtype != NN_DTYPE_F32
         && t->dtype != NN_DTYPE_BITS) || t->rank > 4 || t->offset % 4) {
        return NN_GRAPH_E_TENSOR;
    }
    uint32_t n = 1;
    for (uint32_t k = 0; k < 4; k++) {
        uint32_t d = t->dims[k];  // (< 2^16)
        // n * d < 2^29 (4-byte elements then fit 31 bits), from 16 x 16-bit products
        uint32_t high = (n >> 16) * d + (((n & 0xffffu) * d) >> 16);
        if ((k >= t->rank && d != 1) || high >= (1u << (29 - 16))) {
            return NN_GRAPH_E_TENSOR;
        }
        n *= d;
    }
    if (t->dtype == NN_DTYPE_BITS) {
        // the last axis packed: rows of words(last dim) words (n / last < 2^29 / 32)
        uint32_t last = t->rank ? t->dims[t->rank - 1] : 0;
        if (last == 0 || t->nbytes != n / last * 4 * words_of(last)) {
            return NN_GRAPH_E_TENSOR;
        }
    } else if (t->nbytes != n * element_size(t->dtype)) {
        return NN_GRAPH_E_TENSOR;
    }
    if (t->storage == NN_STORAGE_ARENA) {
        if (t->offset > h->arena_size || t->nbytes > h->arena_size - t->offset) {
            return NN_GRAPH_E_TENSOR;
        }
    } else if (t->storage != NN_STORAGE_CONSTANT || t->offset < h->data
               || t->offset > h->total_size || t->nbytes > h->total_size - t->offset) {
        return NN_GRAPH_E_TENSOR;
    }
    return NN_GRAPH_OK;
}

// Input k of op (or its output, k = NN_GRAPH_MAX_OP_INPUTS) with a dtype and a rank
// (rank 0: any); *t the tensor.
#define OUTPUT (NN_GRAPH_MAX_OP_INPUTS)
static uint32_t expect(const graph_t *g, const nn_graph_op_t *op, uint32_t k, uint32_t dtype,
    uint32_t rank, const nn_graph_tensor_t **t) {
    uint32_t index = k == OUTPUT ? op->output : op->inputs[k];
    if (index == NN_GRAPH_NO_TENSOR || (k < OUTPUT && k >= op->n_inputs)) {
        return NN_GRAPH_E_INDEX;
    }
    uint32_t e = check_tensor(g, index);
    if (e) {
        return e;
    }
    *t = tensor(g, index);
    if ((*t)->dtype != dtype || (rank && (*t)->rank != rank)) {
        return NN_GRAPH_E_SHAPE;
    }
    return NN_GRAPH_OK;
}

static uint32_t check_table(const graph_t *g, const nn_graph_op_t *op, uint32_t nbytes) {
    const nn_graph_header_t *h = g->head;
    if (op->table % 4 || op->table < h->data || op->table > h->total_size
        || nbytes > h->total_size - op->table) {
        return NN_GRAPH_E_TABLE;
    }
    return NN_GRAPH_OK;
}

static inline int in_range(int32_t v, int32_t lo, int32_t hi) {
    return (uint32_t)v - (uint32_t)lo <= (uint32_t)hi - (uint32_t)lo;  // (one compare)
}

static inline int is_int8(int32_t v) {
    return in_range(v, -128, 127);
}

static inline int clamp_ok(int32_t lo, int32_t hi) {
    return is_int8(lo) && is_int8(hi) && lo <= hi;
}

static inline int shift_ok(int32_t shift) {
    return in_range(shift, MIN_SHIFT, MAX_SHIFT);
}

// The channels table of c_out records, every shift in range and every multiplier >= 0
// (as QuantizeMultiplier makes them; the kernels rely on it).
static uint32_t check_channels(const graph_t *g, const nn_graph_op_t *op, uint32_t c_out) {
    uint32_t e = check_table(g, op, c_out * CHANNEL_BYTES);
    if (e) {
        return e;
    }
    const nn_i8_channel_t *ch = table(g, op);
    for (uint32_t c = 0; c < c_out; c++) {
        if (!shift_ok(ch[c].shift) || ch[c].multiplier < 0) {
            return NN_GRAPH_E_TABLE;
        }
    }
    return NN_GRAPH_OK;
}

// ---------------------------------------------------------------------------
// Checks the float32 kinds share (nn_float.c calls them with float32 tensors)

uint32_t nn_graph_expect(const uint8_t *model, const nn_graph_op_t *op, uint32_t k,
    uint32_t dtype, uint32_t rank, const nn_graph_tensor_t **t) {
    graph_t g;
    graph_init(&g, model, NULL);
    return expect(&g, op, k, dtype, rank, t);
}

static uint32_t check_bias(const graph_t *g, const nn_graph_op_t *op, uint32_t dtype,
    uint32_t c_out) {
    if (op->n_inputs < 3 || op->inputs[2] == NN_GRAPH_NO_TENSOR) {
        return NN_GRAPH_OK;
    }
    const nn_graph_tensor_t *b;
    uint32_t e = expect(g, op, 2, dtype, 0, &b);
    if (e) {
        return e;
    }
    return elements(b) == c_out ? NN_GRAPH_OK : NN_GRAPH_E_SHAPE;
}

uint32_t nn_graph_check_bias(const uint8_t *model, const nn_graph_op_t *op, uint32_t dtype,
    uint32_t c_out) {
    graph_t g;
    graph_init(&g, model, NULL);
    return check_bias(&g, op, dtype, c_out);
}

static int window_params_ok(int32_t stride_h, int32_t stride_w, int32_t pad_top,
    int32_t pad_left) {
    return in_range(stride_h, 1, MAX_STRIDE) && in_range(stride_w, 1, MAX_STRIDE)
           && in_range(pad_top, 0, 0xffff) && in_range(pad_left, 0, 0xffff);
}

uint32_t nn_graph_check_conv_shape(const nn_graph_op_t *op, const nn_graph_tensor_t *x,
    const nn_graph_tensor_t *w, const nn_graph_tensor_t *y) {
    const nn_graph_conv_params_t *p = &op->params.conv;
    uint32_t c_out = y->dims[3];
    if (y->dims[0] != x->dims[0]) {
        return NN_GRAPH_E_SHAPE;
    }
    if (op->kind == NN_OP_CONV_2D) {
        if (w->dims[0] != c_out || w->dims[3] != x->dims[3]) {
            return NN_GRAPH_E_SHAPE;
        }
    } else {
        if (!in_range(p->depth_multiplier, 1, 0xffff)) {
            return NN_GRAPH_E_PARAMS;
        }
        if (w->dims[0] != 1 || w->dims[3] != c_out
            || c_out != x->dims[3] * (uint32_t)p->depth_multiplier) {
            return NN_GRAPH_E_SHAPE;
        }
    }
    return window_params_ok(p->stride_h, p->stride_w, p->pad_top, p->pad_left) ? NN_GRAPH_OK
           : NN_GRAPH_E_PARAMS;
}

uint32_t nn_graph_check_fc_shape(const nn_graph_tensor_t *x, const nn_graph_tensor_t *w,
    const nn_graph_tensor_t *y) {
    uint32_t c_out = w->dims[0], depth = w->dims[1];
    if (y->rank < 1 || dim_from_end(y, 0) != c_out || depth == 0 || c_out == 0
        || elements(x) != elements(y) / c_out * depth) {
        return NN_GRAPH_E_SHAPE;
    }
    return NN_GRAPH_OK;
}

uint32_t nn_graph_check_pool_shape(const nn_graph_op_t *op, const nn_graph_tensor_t *x,
    const nn_graph_tensor_t *y) {
    if (y->dims[0] != x->dims[0] || y->dims[3] != x->dims[3]) {
        return NN_GRAPH_E_SHAPE;
    }
    const nn_graph_pool_params_t *p = &op->params.pool;
    return window_params_ok(p->stride_h, p->stride_w, p->pad_top, p->pad_left)
           && in_range(p->filter_h, 1, 0xffff) && in_range(p->filter_w, 1, 0xffff)
           ? NN_GRAPH_OK : NN_GRAPH_E_PARAMS;
}

uint32_t nn_graph_check_broadcast(const nn_graph_tensor_t *a, const nn_graph_tensor_t *b,
    const nn_graph_tensor_t *y) {
    if (a->rank > y->rank || b->rank > y->rank) {
        return NN_GRAPH_E_SHAPE;
    }
    for (uint32_t k = 0; k < 4; k++) {
        uint32_t d = dim_from_end(y, k), da = dim_from_end(a, k), db = dim_from_end(b, k);
        if ((da != d && da != 1) || (db != d && db != 1)) {
            return NN_GRAPH_E_SHAPE;
        }
    }
    return NN_GRAPH_OK;
}

// Input k: a constant int32 tensor (PAD's paddings, MEAN's axes), read at check time
// (an arena tensor has no values yet).
static uint32_t expect_i32_constant(const graph_t *g, const nn_graph_op_t *op, uint32_t k,
    const nn_graph_tensor_t **t) {
    uint32_t e = expect(g, op, k, NN_DTYPE_I32, 0, t);
    return e ? e : (*t)->storage == NN_STORAGE_CONSTANT ? NN_GRAPH_OK : NN_GRAPH_E_SHAPE;
}

uint32_t nn_graph_check_pads(const uint8_t *model, const nn_graph_op_t *op,
    const nn_graph_tensor_t *x, const nn_graph_tensor_t *y) {
    graph_t g;
    graph_init(&g, model, NULL);
    const nn_graph_tensor_t *pads;
    uint32_t e = expect_i32_constant(&g, op, 1, &pads);
    if (e) {
        return e;
    }
    if (x->rank < 1 || y->rank != x->rank || elements(pads) != 2u * x->rank) {
        return NN_GRAPH_E_SHAPE;
    }
    const int32_t *pv = tensor_data(&g, op->inputs[1]);
    for (uint32_t k = 0; k < x->rank; k++) {
        if (!in_range(pv[2 * k], 0, 0xffff) || !in_range(pv[2 * k + 1], 0, 0xffff)
            || (uint32_t)x->dims[k] + (uint32_t)pv[2 * k] + (uint32_t)pv[2 * k + 1]
            != y->dims[k]) {
            return NN_GRAPH_E_SHAPE;
        }
    }
    return NN_GRAPH_OK;
}

uint32_t nn_graph_check_mean_axes(const uint8_t *model, const nn_graph_op_t *op,
    const nn_graph_tensor_t *x, const nn_graph_tensor_t *y) {
    graph_t g;
    graph_init(&g, model, NULL);
    const nn_graph_tensor_t *axes;
    uint32_t e = expect_i32_constant(&g, op, 1, &axes);
    if (e) {
        return e;
    }
    const int32_t *a = tensor_data(&g, op->inputs[1]);
    if (elements(axes) != 2 || (a[0] & 3) == (a[1] & 3) || ((a[0] & 3) != 1 && (a[0] & 3) != 2)
        || ((a[1] & 3) != 1 && (a[1] & 3) != 2) || !in_range(a[0], -4, 3)
        || !in_range(a[1], -4, 3) || elements(y) != (uint32_t)x->dims[0] * x->dims[3]) {
        return NN_GRAPH_E_SHAPE;
    }
    return NN_GRAPH_OK;
}

// ---------------------------------------------------------------------------
// Checks of the int8 kinds

static uint32_t check_conv(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *w, *y;
    uint32_t e;
    if ((e = expect(g, op, 0, NN_DTYPE_I8, 4, &x)) || (e = expect(g, op, 1, NN_DTYPE_I8, 4, &w))
        || (e = expect(g, op, OUTPUT, NN_DTYPE_I8, 4, &y))
        || (e = nn_graph_check_conv_shape(op, x, w, y))) {
        return e;
    }
    const nn_graph_conv_params_t *p = &op->params.conv;
    if (!is_int8(p->input_zero) || !is_int8(p->output_zero) || !clamp_ok(p->act_min, p->act_max)) {
        return NN_GRAPH_E_PARAMS;
    }
    uint32_t c_out = y->dims[3];
    if ((e = check_bias(g, op, NN_DTYPE_I32, c_out))) {
        return e;
    }
    return check_channels(g, op, c_out);
}

static uint32_t check_fully_connected(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *w, *y;
    uint32_t e;
    if ((e = expect(g, op, 0, NN_DTYPE_I8, 0, &x)) || (e = expect(g, op, 1, NN_DTYPE_I8, 2, &w))
        || (e = expect(g, op, OUTPUT, NN_DTYPE_I8, 0, &y))
        || (e = nn_graph_check_fc_shape(x, w, y))) {
        return e;
    }
    const nn_graph_fc_params_t *p = &op->params.fc;
    if (!is_int8(p->input_zero) || !is_int8(p->output_zero) || !clamp_ok(p->act_min, p->act_max)) {
        return NN_GRAPH_E_PARAMS;
    }
    uint32_t c_out = w->dims[0];
    if ((e = check_bias(g, op, NN_DTYPE_I32, c_out))) {
        return e;
    }
    return check_channels(g, op, c_out);
}

static uint32_t check_pool(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *y;
    uint32_t e;
    if ((e = expect(g, op, 0, NN_DTYPE_I8, 4, &x))
        || (e = expect(g, op, OUTPUT, NN_DTYPE_I8, 4, &y))
        || (e = nn_graph_check_pool_shape(op, x, y))) {
        return e;
    }
    const nn_graph_pool_params_t *p = &op->params.pool;
    return clamp_ok(p->act_min, p->act_max) ? NN_GRAPH_OK : NN_GRAPH_E_PARAMS;
}

static uint32_t check_add(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *a, *b, *y;
    uint32_t e;
    if ((e = expect(g, op, 0, NN_DTYPE_I8, 0, &a)) || (e = expect(g, op, 1, NN_DTYPE_I8, 0, &b))
        || (e = expect(g, op, OUTPUT, NN_DTYPE_I8, 0, &y))
        || (e = nn_graph_check_broadcast(a, b, y))) {
        return e;
    }
    const nn_graph_add_params_t *p = &op->params.add;
    if (!in_range(p->input1_offset, -127, 128) || !in_range(p->input2_offset, -127, 128)
        || !in_range(p->left_shift, 0, MAX_ADD_LEFT_SHIFT) || !shift_ok(p->input1_shift)
        || !shift_ok(p->input2_shift) || !shift_ok(p->output_shift)
        || !is_int8(p->output_zero) || !clamp_ok(p->act_min, p->act_max)) {
        return NN_GRAPH_E_PARAMS;
    }
    return NN_GRAPH_OK;
}

static uint32_t check_reshape(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *y;
    uint32_t e;
    if ((e = check_tensor(g, op->inputs[0])) || (e = check_tensor(g, op->output))) {
        return e;
    }
    x = tensor(g, op->inputs[0]);
    y = tensor(g, op->output);
    if (op->n_inputs == 2 && op->inputs[1] != NN_GRAPH_NO_TENSOR
        && (e = check_tensor(g, op->inputs[1]))) {
        return e;
    }
    return x->dtype == y->dtype && x->nbytes == y->nbytes ? NN_GRAPH_OK : NN_GRAPH_E_SHAPE;
}

// An elementwise operator: input 0 of `dtype`, output of `out_dtype`, as many elements.
static uint32_t check_elementwise(const graph_t *g, const nn_graph_op_t *op, uint32_t dtype,
    uint32_t out_dtype, uint32_t table_bytes) {
    const nn_graph_tensor_t *x, *y;
    uint32_t e;
    if ((e = expect(g, op, 0, dtype, 0, &x)) || (e = expect(g, op, OUTPUT, out_dtype, 0, &y))) {
        return e;
    }
    if (elements(x) != elements(y)) {
        return NN_GRAPH_E_SHAPE;
    }
    return table_bytes ? check_table(g, op, table_bytes) : NN_GRAPH_OK;
}

static uint32_t check_softmax(const graph_t *g, const nn_graph_op_t *op) {
    uint32_t e = check_elementwise(g, op, NN_DTYPE_I8, NN_DTYPE_I8, LUT32_BYTES);
    if (e) {
        return e;
    }
    const nn_graph_tensor_t *x = tensor(g, op->inputs[0]), *y = tensor(g, op->output);
    uint32_t depth = dim_from_end(x, 0);
    if (x->rank < 1 || depth < 1 || depth > MAX_SOFTMAX_DEPTH || dim_from_end(y, 0) != depth) {
        return NN_GRAPH_E_SHAPE;
    }
    return NN_GRAPH_OK;
}

static uint32_t check_pad(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *y;
    uint32_t e;
    if ((e = expect(g, op, 0, NN_DTYPE_I8, 0, &x))
        || (e = expect(g, op, OUTPUT, NN_DTYPE_I8, 0, &y))
        || (e = nn_graph_check_pads(g->model, op, x, y))) {
        return e;
    }
    return is_int8(op->params.pad.value) ? NN_GRAPH_OK : NN_GRAPH_E_PARAMS;
}

static uint32_t check_mean(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *y;
    uint32_t e;
    if ((e = expect(g, op, 0, NN_DTYPE_I8, 4, &x))
        || (e = expect(g, op, OUTPUT, NN_DTYPE_I8, 0, &y))
        || (e = nn_graph_check_mean_axes(g->model, op, x, y))) {
        return e;
    }
    const nn_graph_mean_params_t *p = &op->params.mean;
    return shift_ok(p->shift) && is_int8(p->output_zero) ? NN_GRAPH_OK : NN_GRAPH_E_PARAMS;
}

static uint32_t check_lut8(const graph_t *g, const nn_graph_op_t *op) {
    return check_elementwise(g, op, NN_DTYPE_I8, NN_DTYPE_I8, LUT8_BYTES);
}

static uint32_t check_quantize(const graph_t *g, const nn_graph_op_t *op) {
    if (op->inputs[0] < g->head->n_tensors && !check_tensor(g, op->inputs[0])
        && tensor(g, op->inputs[0])->dtype == NN_DTYPE_F32) {
        uint32_t e = check_elementwise(g, op, NN_DTYPE_F32, NN_DTYPE_I8, 0);
        if (e) {
            return e;
        }
        // a finite scale > 0 (f32 bits: sign 0, exponent not all ones, not +0)
        uint32_t s = op->params.quantize.scale;
        return s != 0 && s < 0x7f800000u && is_int8(op->params.quantize.output_zero)
               ? NN_GRAPH_OK : NN_GRAPH_E_PARAMS;
    }
    return check_elementwise(g, op, NN_DTYPE_I8, NN_DTYPE_I8, LUT8_BYTES);
}

static uint32_t check_dequantize(const graph_t *g, const nn_graph_op_t *op) {
    return check_elementwise(g, op, NN_DTYPE_I8, NN_DTYPE_F32, LUT32_BYTES);
}

// BINARIZE: int8 x, its bits y of the same dims, bounds i32[C][2].
static uint32_t check_binarize(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *bounds, *y;
    uint32_t e;
    if ((e = expect(g, op, 0, NN_DTYPE_I8, 0, &x))
        || (e = expect(g, op, 1, NN_DTYPE_I32, 0, &bounds))
        || (e = expect(g, op, OUTPUT, NN_DTYPE_BITS, x->rank, &y))) {
        return e;
    }
    if (x->rank < 1 || x->nbytes == 0 || elements(bounds) != 2u * dim_from_end(x, 0)) {
        return NN_GRAPH_E_SHAPE;
    }
    for (uint32_t k = 0; k < x->rank; k++) {
        if (x->dims[k] != y->dims[k]) {
            return NN_GRAPH_E_SHAPE;
        }
    }
    return NN_GRAPH_OK;
}

// The window of XNOR_CONV_2D and BINARY_MAX_POOL_2D over bits x [N, H, W, C] giving y
// [N, OH, OW, *]: every tap is bounds-checked by the kernels, so only the ranges that
// keep the index arithmetic inside int32.
static uint32_t check_window(const nn_graph_tensor_t *x, const nn_graph_tensor_t *y,
    int32_t stride_h, int32_t stride_w, int32_t pad_top, int32_t pad_left) {
    if (y->dims[0] != x->dims[0] || x->dims[3] == 0 || y->dims[3] == 0) {
        return NN_GRAPH_E_SHAPE;
    }
    return window_params_ok(stride_h, stride_w, pad_top, pad_left) ? NN_GRAPH_OK
           : NN_GRAPH_E_PARAMS;
}

static uint32_t check_xnor_conv(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *w, *ch, *y;
    uint32_t e;
    if ((e = expect(g, op, 0, NN_DTYPE_BITS, 4, &x)) || (e = expect(g, op, 1, NN_DTYPE_BITS, 4, &w))
        || (e = expect(g, op, 2, NN_DTYPE_I32, 0, &ch))
        || (e = check_tensor(g, op->output))) {
        return e;
    }
    y = tensor(g, op->output);
    const nn_graph_xnor_conv_params_t *p = &op->params.xnor_conv;
    uint32_t c_out = y->dims[3], bits_out = y->dtype == NN_DTYPE_BITS;
    if ((y->dtype != NN_DTYPE_BITS && y->dtype != NN_DTYPE_I32) || y->rank != 4) {
        return NN_GRAPH_E_SHAPE;
    }
    if ((e = check_window(x, y, p->stride_h, p->stride_w, p->pad_top, p->pad_left))) {
        return e;
    }
    if (w->dims[0] != c_out || w->dims[3] != x->dims[3] || w->dims[1] == 0 || w->dims[2] == 0
        || elements(ch) != (bits_out ? 1u : 2u) * c_out
        || (uint32_t)w->dims[1] * w->dims[2] * words_of(x->dims[3]) > NN_XNOR_MAX_FIELD_WORDS) {
        return NN_GRAPH_E_SHAPE;
    }
    return NN_GRAPH_OK;
}

// BINARIZE_CONV_2D: int8 x [N, H, W, C_in] -> bits y [N, OH, OW, C_out], int8 weights
// [C_out, kh, kw, C_in] of at most NN_BCONV_MAX_FIELD_TAPS taps, i32 thresholds [C_out].
static uint32_t check_bconv(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *w, *t, *y;
    uint32_t e;
    if ((e = expect(g, op, 0, NN_DTYPE_I8, 4, &x)) || (e = expect(g, op, 1, NN_DTYPE_I8, 4, &w))
        || (e = expect(g, op, 2, NN_DTYPE_I32, 0, &t))
        || (e = expect(g, op, OUTPUT, NN_DTYPE_BITS, 4, &y))) {
        return e;
    }
    const nn_graph_bconv_params_t *p = &op->params.bconv;
    if ((e = check_window(x, y, p->stride_h, p->stride_w, p->pad_top, p->pad_left))) {
        return e;
    }
    if (w->dims[0] != y->dims[3] || w->dims[3] != x->dims[3] || w->dims[1] == 0
        || w->dims[2] == 0 || elements(t) != y->dims[3]
        || (uint32_t)w->dims[1] * w->dims[2] * w->dims[3] > NN_BCONV_MAX_FIELD_TAPS) {
        return NN_GRAPH_E_SHAPE;
    }
    return is_int8(p->input_zero) ? NN_GRAPH_OK : NN_GRAPH_E_PARAMS;
}

static uint32_t check_binary_pool(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x, *y;
    uint32_t e;
    if ((e = expect(g, op, 0, NN_DTYPE_BITS, 4, &x))
        || (e = expect(g, op, OUTPUT, NN_DTYPE_BITS, 4, &y))) {
        return e;
    }
    const nn_graph_binary_pool_params_t *p = &op->params.binary_pool;
    if (y->dims[3] != x->dims[3]) {
        return NN_GRAPH_E_SHAPE;
    }
    if ((e = check_window(x, y, p->stride_h, p->stride_w, p->pad_top, p->pad_left))) {
        return e;
    }
    return in_range(p->filter_h, 1, 0xffff) && in_range(p->filter_w, 1, 0xffff) ? NN_GRAPH_OK
           : NN_GRAPH_E_PARAMS;
}

// ---------------------------------------------------------------------------
// Run

static const int32_t *bias_of(const graph_t *g, const nn_graph_op_t *op) {
    if (op->n_inputs < 3 || op->inputs[2] == NN_GRAPH_NO_TENSOR) {
        return NULL;
    }
    return tensor_data(g, op->inputs[2]);
}

static void conv_params(const graph_t *g, const nn_graph_op_t *op, nn_i8_conv_t *p) {
    const nn_graph_tensor_t *x = tensor(g, op->inputs[0]), *w = tensor(g, op->inputs[1]);
    const nn_graph_tensor_t *y = tensor(g, op->output);
    const nn_graph_conv_params_t *q = &op->params.conv;
    p->batches = x->dims[0];
    p->in_h = x->dims[1];
    p->in_w = x->dims[2];
    p->in_c = x->dims[3];
    p->out_h = y->dims[1];
    p->out_w = y->dims[2];
    p->out_c = y->dims[3];
    p->k_h = w->dims[1];
    p->k_w = w->dims[2];
    p->stride_h = (uint32_t)q->stride_h;
    p->stride_w = (uint32_t)q->stride_w;
    p->pad_top = (uint32_t)q->pad_top;
    p->pad_left = (uint32_t)q->pad_left;
    p->depth_multiplier = op->kind == NN_OP_DEPTHWISE_CONV_2D ? (uint32_t)q->depth_multiplier : 1;
    p->input_zero = q->input_zero;
    p->output_zero = q->output_zero;
    p->act_min = q->act_min;
    p->act_max = q->act_max;
}

static void run_conv_2d(const graph_t *g, const nn_graph_op_t *op) {
    nn_i8_conv_t p;
    conv_params(g, op, &p);
    nn_i8_conv_2d(&p, tensor_data(g, op->inputs[0]), tensor_data(g, op->inputs[1]),
        bias_of(g, op), table(g, op), tensor_data(g, op->output), nn_graph_scratch,
        sizeof(nn_graph_scratch));
}

static void run_depthwise_conv_2d(const graph_t *g, const nn_graph_op_t *op) {
    nn_i8_conv_t p;
    conv_params(g, op, &p);
    nn_i8_depthwise_conv_2d(&p, tensor_data(g, op->inputs[0]), tensor_data(g, op->inputs[1]),
        bias_of(g, op), table(g, op), tensor_data(g, op->output), nn_graph_scratch,
        sizeof(nn_graph_scratch));
}

// FULLY_CONNECTED as a 1x1 convolution over a row of `rows` pixels of `depth` channels.
static void run_fully_connected(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *w = tensor(g, op->inputs[1]), *y = tensor(g, op->output);
    const nn_graph_fc_params_t *q = &op->params.fc;
    uint32_t c_out = w->dims[0];
    nn_i8_conv_t p = {
        .batches = 1, .in_h = 1, .in_w = elements(y) / c_out, .in_c = w->dims[1],
        .out_h = 1, .out_w = elements(y) / c_out, .out_c = c_out, .k_h = 1, .k_w = 1,
        .stride_h = 1, .stride_w = 1, .pad_top = 0, .pad_left = 0, .depth_multiplier = 1,
        .input_zero = q->input_zero, .output_zero = q->output_zero,
        .act_min = q->act_min, .act_max = q->act_max,
    };
    nn_i8_conv_2d(&p, tensor_data(g, op->inputs[0]), tensor_data(g, op->inputs[1]),
        bias_of(g, op), table(g, op), tensor_data(g, op->output), nn_graph_scratch,
        sizeof(nn_graph_scratch));
}

static void pool_params(const graph_t *g, const nn_graph_op_t *op, nn_i8_pool_t *p) {
    const nn_graph_tensor_t *x = tensor(g, op->inputs[0]), *y = tensor(g, op->output);
    const nn_graph_pool_params_t *q = &op->params.pool;
    p->batches = x->dims[0];
    p->in_h = x->dims[1];
    p->in_w = x->dims[2];
    p->channels = x->dims[3];
    p->out_h = y->dims[1];
    p->out_w = y->dims[2];
    p->filter_h = (uint32_t)q->filter_h;
    p->filter_w = (uint32_t)q->filter_w;
    p->stride_h = (uint32_t)q->stride_h;
    p->stride_w = (uint32_t)q->stride_w;
    p->pad_top = (uint32_t)q->pad_top;
    p->pad_left = (uint32_t)q->pad_left;
    p->act_min = q->act_min;
    p->act_max = q->act_max;
}

static void run_average_pool_2d(const graph_t *g, const nn_graph_op_t *op) {
    nn_i8_pool_t p;
    pool_params(g, op, &p);
    nn_i8_average_pool(&p, tensor_data(g, op->inputs[0]), tensor_data(g, op->output));
}

static void run_max_pool_2d(const graph_t *g, const nn_graph_op_t *op) {
    nn_i8_pool_t p;
    pool_params(g, op, &p);
    nn_i8_max_pool(&p, tensor_data(g, op->inputs[0]), tensor_data(g, op->output));
}

static void run_add(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *a = tensor(g, op->inputs[0]), *b = tensor(g, op->inputs[1]);
    const nn_graph_tensor_t *y = tensor(g, op->output);
    const nn_graph_add_params_t *q = &op->params.add;
    nn_i8_add_t p = {
        .input1_offset = q->input1_offset, .input2_offset = q->input2_offset,
        .left_shift = q->left_shift,
        .input1_multiplier = q->input1_multiplier, .input1_shift = q->input1_shift,
        .input2_multiplier = q->input2_multiplier, .input2_shift = q->input2_shift,
        .output_multiplier = q->output_multiplier, .output_shift = q->output_shift,
        .output_zero = q->output_zero, .act_min = q->act_min, .act_max = q->act_max,
    };
    for (uint32_t k = 0; k < NN_I8_MAX_RANK; k++) {
        p.out_dims[NN_I8_MAX_RANK - 1 - k] = dim_from_end(y, k);
        p.in1_dims[NN_I8_MAX_RANK - 1 - k] = dim_from_end(a, k);
        p.in2_dims[NN_I8_MAX_RANK - 1 - k] = dim_from_end(b, k);
    }
    nn_i8_add(&p, tensor_data(g, op->inputs[0]), tensor_data(g, op->inputs[1]),
        tensor_data(g, op->output), nn_graph_scratch, sizeof(nn_graph_scratch));
}

// RESHAPE: the output shares the input's bytes in the memory plan; a copy otherwise (in
// the direction that overlapping buffers allow; a native module has no memmove).
static void run_reshape(const graph_t *g, const nn_graph_op_t *op) {
    const uint8_t *x = tensor_data(g, op->inputs[0]);
    uint8_t *y = tensor_data(g, op->output);
    uint32_t n = tensor(g, op->output)->nbytes;
    if (y < x) {
        for (uint32_t i = 0; i < n; i++) {
            y[i] = x[i];
        }
    } else if (y > x) {
        while (n--) {
            y[n] = x[n];
        }
    }
}

static void run_softmax(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x = tensor(g, op->inputs[0]);
    uint32_t depth = dim_from_end(x, 0);
    nn_i8_softmax(tensor_data(g, op->inputs[0]), tensor_data(g, op->output),
        elements(x) / depth, depth, table(g, op), op->params.softmax.diff_min);
}

static void run_pad(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x = tensor(g, op->inputs[0]);
    const int32_t *pv = tensor_data(g, op->inputs[1]);
    uint32_t dims[NN_I8_MAX_RANK], before[NN_I8_MAX_RANK], after[NN_I8_MAX_RANK];
    uint32_t lead = NN_I8_MAX_RANK - x->rank;
    for (uint32_t k = 0; k < NN_I8_MAX_RANK; k++) {
        int in = k >= lead;
        dims[k] = in ? x->dims[k - lead] : 1;
        before[k] = in ? (uint32_t)pv[2 * (k - lead)] : 0;
        after[k] = in ? (uint32_t)pv[2 * (k - lead) + 1] : 0;
    }
    nn_i8_pad(tensor_data(g, op->inputs[0]), tensor_data(g, op->output), dims, before, after,
        (int8_t)op->params.pad.value);
}

static void run_mean(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x = tensor(g, op->inputs[0]);
    const nn_graph_mean_params_t *q = &op->params.mean;
    nn_i8_mean_hw(tensor_data(g, op->inputs[0]), tensor_data(g, op->output), x->dims[0],
        x->dims[1], x->dims[2], x->dims[3], q->input_zero_times_count, q->multiplier, q->shift,
        q->output_zero);
}

static void run_lut8(const graph_t *g, const nn_graph_op_t *op) {
    nn_i8_lut8(tensor_data(g, op->inputs[0]), tensor_data(g, op->output),
        elements(tensor(g, op->output)), table(g, op));
}

static void run_quantize(const graph_t *g, const nn_graph_op_t *op) {
    if (tensor(g, op->inputs[0])->dtype != NN_DTYPE_F32) {
        run_lut8(g, op);
        return;
    }
    union {
        uint32_t u;
        float f;
    } scale = { op->params.quantize.scale };
    nn_i8_quantize_f32(tensor_data(g, op->inputs[0]), tensor_data(g, op->output),
        elements(tensor(g, op->output)), scale.f, op->params.quantize.output_zero);
}

static void run_dequantize(const graph_t *g, const nn_graph_op_t *op) {
    nn_i8_lut_f32(tensor_data(g, op->inputs[0]), tensor_data(g, op->output),
        elements(tensor(g, op->output)), table(g, op));
}

static void run_binarize(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x = tensor(g, op->inputs[0]);
    uint32_t c = dim_from_end(x, 0);
    nn_xnor_binarize(tensor_data(g, op->inputs[0]), elements(x) / c, c,
        tensor_data(g, op->inputs[1]), tensor_data(g, op->output));
}

static void xnor_geometry(const graph_t *g, const nn_graph_op_t *op, uint32_t k_h, uint32_t k_w,
    int32_t stride_h, int32_t stride_w, int32_t pad_top, int32_t pad_left, nn_xnor_geometry_t *p) {
    const nn_graph_tensor_t *x = tensor(g, op->inputs[0]), *y = tensor(g, op->output);
    p->batches = x->dims[0];
    p->in_h = x->dims[1];
    p->in_w = x->dims[2];
    p->in_words = words_of(x->dims[3]);
    p->out_h = y->dims[1];
    p->out_w = y->dims[2];
    p->out_c = y->dims[3];
    p->k_h = k_h;
    p->k_w = k_w;
    p->stride_h = (uint32_t)stride_h;
    p->stride_w = (uint32_t)stride_w;
    p->pad_top = (uint32_t)pad_top;
    p->pad_left = (uint32_t)pad_left;
}

static void run_xnor_conv(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *w = tensor(g, op->inputs[1]);
    const nn_graph_xnor_conv_params_t *q = &op->params.xnor_conv;
    nn_xnor_geometry_t p;
    xnor_geometry(g, op, w->dims[1], w->dims[2], q->stride_h, q->stride_w, q->pad_top,
        q->pad_left, &p);
    if (tensor(g, op->output)->dtype == NN_DTYPE_BITS) {
        nn_xnor_conv_2d_bits(&p, tensor_data(g, op->inputs[0]), tensor_data(g, op->inputs[1]),
            tensor_data(g, op->inputs[2]), tensor_data(g, op->output), nn_graph_scratch);
    } else {
        nn_xnor_conv_2d_i32(&p, tensor_data(g, op->inputs[0]), tensor_data(g, op->inputs[1]),
            tensor_data(g, op->inputs[2]), (uint32_t)w->dims[1] * w->dims[2] * w->dims[3],
            tensor_data(g, op->output), nn_graph_scratch);
    }
}

static void run_binary_pool(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_binary_pool_params_t *q = &op->params.binary_pool;
    nn_xnor_geometry_t p;
    xnor_geometry(g, op, (uint32_t)q->filter_h, (uint32_t)q->filter_w, q->stride_h, q->stride_w,
        q->pad_top, q->pad_left, &p);
    nn_xnor_max_pool(&p, tensor_data(g, op->inputs[0]), tensor_data(g, op->output));
}

static void run_bconv(const graph_t *g, const nn_graph_op_t *op) {
    const nn_graph_tensor_t *x = tensor(g, op->inputs[0]), *w = tensor(g, op->inputs[1]);
    const nn_graph_tensor_t *y = tensor(g, op->output);
    const nn_graph_bconv_params_t *q = &op->params.bconv;
    nn_bconv_geometry_t p = {
        .batches = x->dims[0], .in_h = x->dims[1], .in_w = x->dims[2], .in_c = x->dims[3],
        .out_h = y->dims[1], .out_w = y->dims[2], .out_c = y->dims[3],
        .k_h = w->dims[1], .k_w = w->dims[2],
        .stride_h = (uint32_t)q->stride_h, .stride_w = (uint32_t)q->stride_w,
        .pad_top = (uint32_t)q->pad_top, .pad_left = (uint32_t)q->pad_left,
        .input_zero = q->input_zero,
    };
    _Static_assert(NN_BCONV_MAX_FIELD_TAPS * 4 <= NN_GRAPH_SCRATCH_BYTES,
        "the tap list of one output pixel fits the scratch buffer");
    nn_xnor_bconv_2d(&p, tensor_data(g, op->inputs[0]), tensor_data(g, op->inputs[1]),
        tensor_data(g, op->inputs[2]), tensor_data(g, op->output), nn_graph_scratch);
}

// ---------------------------------------------------------------------------
// The kinds

typedef struct {
    uint32_t (*check)(const graph_t *g, const nn_graph_op_t *op);
    void (*run)(const graph_t *g, const nn_graph_op_t *op);
    uint8_t min_inputs, max_inputs;
} kind_t;

static const kind_t kinds[NN_OP_KINDS] = {
    [NN_OP_CONV_2D] = { check_conv, run_conv_2d, 2, 3 },
    [NN_OP_DEPTHWISE_CONV_2D] = { check_conv, run_depthwise_conv_2d, 2, 3 },
    [NN_OP_FULLY_CONNECTED] = { check_fully_connected, run_fully_connected, 2, 3 },
    [NN_OP_AVERAGE_POOL_2D] = { check_pool, run_average_pool_2d, 1, 1 },
    [NN_OP_MAX_POOL_2D] = { check_pool, run_max_pool_2d, 1, 1 },
    [NN_OP_ADD] = { check_add, run_add, 2, 2 },
    [NN_OP_RESHAPE] = { check_reshape, run_reshape, 1, 2 },
    [NN_OP_SOFTMAX] = { check_softmax, run_softmax, 1, 1 },
    [NN_OP_PAD] = { check_pad, run_pad, 2, 2 },
    [NN_OP_MEAN] = { check_mean, run_mean, 2, 2 },
    [NN_OP_LOGISTIC] = { check_lut8, run_lut8, 1, 1 },
    [NN_OP_TANH] = { check_lut8, run_lut8, 1, 1 },
    [NN_OP_QUANTIZE] = { check_quantize, run_quantize, 1, 1 },
    [NN_OP_DEQUANTIZE] = { check_dequantize, run_dequantize, 1, 1 },
    [NN_OP_BINARIZE] = { check_binarize, run_binarize, 2, 2 },
    [NN_OP_XNOR_CONV_2D] = { check_xnor_conv, run_xnor_conv, 3, 3 },
    [NN_OP_BINARY_MAX_POOL_2D] = { check_binary_pool, run_binary_pool, 1, 1 },
    [NN_OP_BINARIZE_CONV_2D] = { check_bconv, run_bconv, 3, 3 },
};

static uint32_t check_header(const uint8_t *model, uint32_t model_len, uint32_t arena_len) {
    if (model_len < sizeof(nn_graph_header_t)) {
        return NN_GRAPH_E_HEADER;
    }
    const nn_graph_header_t *h = (const nn_graph_header_t *)(const void *)model;
    if (h->magic[0] != 'P' || h->magic[1] != 'C' || h->magic[2] != 'N' || h->magic[3] != 'N'
        || h->version != NN_GRAPH_VERSION
        || h->header_size != sizeof(nn_graph_header_t)
        || h->tensor_record_size != sizeof(nn_graph_tensor_t)
        || h->operator_record_size != sizeof(nn_graph_op_t)
        || h->n_tensors < 1 || h->n_tensors > MAX_TENSORS
        || h->n_operators < 1 || h->n_operators > MAX_OPERATORS
        || h->tensor_table != sizeof(nn_graph_header_t)
        || h->operator_table != h->tensor_table + h->n_tensors * sizeof(nn_graph_tensor_t)
        || h->data != h->operator_table + h->n_operators * sizeof(nn_graph_op_t)
        || h->data > h->total_size) {
        return NN_GRAPH_E_HEADER;
    }
    if (h->total_size > model_len) {
        return NN_GRAPH_E_MODEL_SIZE;
    }
    return h->arena_size > arena_len ? NN_GRAPH_E_ARENA : NN_GRAPH_OK;
}

uint32_t nn_graph_check(const uint8_t *model, uint32_t model_len, uint32_t arena_len,
    uint32_t first, uint32_t end, uint32_t *op_at) {
    *op_at = first;
    uint32_t e = check_header(model, model_len, arena_len);
    if (e) {
        return e;
    }
    graph_t g;
    graph_init(&g, model, NULL);
    if (first > end || end > g.head->n_operators) {
        return NN_GRAPH_E_RANGE;
    }
    for (uint32_t k = first; k < end; k++) {
        const nn_graph_op_t *op = &g.ops[k];
        *op_at = k;
        if (op->kind >= NN_OP_KINDS || kinds[op->kind].check == NULL  // (unused codes too)
            || op->n_inputs < kinds[op->kind].min_inputs
            || op->n_inputs > kinds[op->kind].max_inputs) {
            return NN_GRAPH_E_KIND;
        }
        // Unused input slots hold NO_TENSOR; an optional input (past the first) may too,
        // and the kind's check requires what it needs.
        for (uint32_t i = 0; i < NN_GRAPH_MAX_OP_INPUTS; i++) {
            uint32_t t = op->inputs[i];
            if (i >= op->n_inputs ? t != NN_GRAPH_NO_TENSOR
                : t >= g.head->n_tensors && (t != NN_GRAPH_NO_TENSOR || i == 0)) {
                return NN_GRAPH_E_INDEX;
            }
        }
        if (op->output >= g.head->n_tensors) {
            return NN_GRAPH_E_INDEX;
        }
        // float32 operators share the kind codes; nn_float.c checks and runs them
        if ((e = nn_graph_is_float(model, op) ? nn_graph_float_check(model, op)
                 : kinds[op->kind].check(&g, op))) {
            return e;
        }
    }
    return NN_GRAPH_OK;
}

void nn_graph_run(const uint8_t *model, uint8_t *arena, uint32_t first, uint32_t end) {
    graph_t g;
    graph_init(&g, model, arena);
    for (uint32_t k = first; k < end; k++) {
        const nn_graph_op_t *op = &g.ops[k];
        if (nn_graph_is_float(model, op)) {
            nn_graph_float_run(model, arena, op);
        } else {
            kinds[op->kind].run(&g, op);
        }
    }
}

const nn_graph_tensor_t *nn_graph_tensor(const uint8_t *model, uint32_t index) {
    graph_t g;
    graph_init(&g, model, NULL);
    if (index >= g.head->n_tensors || check_tensor(&g, index)) {
        return NULL;
    }
    return tensor(&g, index);
}
