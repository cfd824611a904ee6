// Runs the operators of a format version 2 model (docs/FORMAT.md "Version 2"): int8
// graphs of TensorFlow Lite models, with the kernels of nn_int8.c.
//
// The model is read in place (weights and tables stay in flash); every activation lives
// in one arena of the model's arena_size bytes at the offsets of its memory plan. The
// caller writes the graph inputs into the arena, runs operators [first, end) and reads
// the outputs from it. Plain C: no MicroPython headers, no allocation; one static
// scratch buffer (nn_graph_scratch) holds the per-pixel tap lists of convolutions.
//
// nn_graph_check() makes running safe: it checks the header and every record that
// operators [first, end) use (sizes, offsets, dtypes, shapes, params, tables), so that
// no kernel reads or writes outside the model and the arena. What it does not check
// (the CRC, the memory plan, that stored numbers match the quantization) the loader
// checks once; a model that passes only nn_graph_check may compute wrong values but
// never touches memory outside its buffers.
#ifndef PICONN_NN_GRAPH_H
#define PICONN_NN_GRAPH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NN_GRAPH_VERSION (2)
#define NN_GRAPH_MAX_IO (4)
#define NN_GRAPH_MAX_OP_INPUTS (3)
#define NN_GRAPH_N_PARAMS (16)
#define NN_GRAPH_NO_TENSOR (0xffff)

// Operator kinds (the record's `kind`).
enum {
    NN_OP_CONV_2D = 1,
    NN_OP_DEPTHWISE_CONV_2D = 2,
    NN_OP_FULLY_CONNECTED = 3,
    NN_OP_AVERAGE_POOL_2D = 4,
    NN_OP_MAX_POOL_2D = 5,
    NN_OP_ADD = 6,
    NN_OP_RESHAPE = 7,
    NN_OP_SOFTMAX = 8,
    NN_OP_PAD = 9,
    NN_OP_MEAN = 10,
    NN_OP_LOGISTIC = 11,
    NN_OP_TANH = 12,
    NN_OP_QUANTIZE = 13,
    NN_OP_DEQUANTIZE = 14,
    // binary operators (FORMAT.md "Binary operators"); 15..19 are unused
    NN_OP_BINARIZE = 20,
    NN_OP_XNOR_CONV_2D = 21,
    NN_OP_BINARY_MAX_POOL_2D = 22,
    NN_OP_BINARIZE_CONV_2D = 23,
    NN_OP_KINDS  // one past the last kind
};

// Tensor dtypes, storage and quantization codes.
enum { NN_DTYPE_F32 = 1, NN_DTYPE_BITS = 2, NN_DTYPE_I32 = 3, NN_DTYPE_I8 = 4 };
enum { NN_STORAGE_ARENA = 0, NN_STORAGE_CONSTANT = 1 };
enum { NN_QUANT_NONE = 0, NN_QUANT_TENSOR = 1, NN_QUANT_CHANNEL = 2 };

// Header (64 bytes at offset 0).
typedef struct {
    uint8_t magic[4];
    uint16_t version;
    uint16_t header_size;
    uint32_t total_size;
    uint32_t crc32;
    uint16_t n_tensors;
    uint16_t n_operators;
    uint16_t tensor_record_size;
    uint16_t operator_record_size;
    uint32_t tensor_table;
    uint32_t operator_table;
    uint32_t data;
    uint32_t arena_size;
    uint8_t n_inputs;
    uint8_t n_outputs;
    uint16_t reserved;
    uint16_t inputs[NN_GRAPH_MAX_IO];
    uint16_t outputs[NN_GRAPH_MAX_IO];
    uint32_t reserved2;
} nn_graph_header_t;

// Tensor record (40 bytes).
typedef struct {
    uint8_t dtype;
    uint8_t rank;
    uint8_t storage;
    uint8_t quant;
    uint16_t dims[4];
    uint32_t offset;
    uint32_t nbytes;
    uint32_t scale;  // f32 bits
    int32_t zero_point;
    uint32_t scales;
    uint16_t channels;
    uint16_t axis;
    uint32_t reserved;
} nn_graph_tensor_t;

// The params of each kind, in record order (FORMAT.md's operator table).
typedef struct {
    int32_t padding, activation, stride_h, stride_w, pad_top, pad_left, depth_multiplier;
    int32_t input_zero, output_zero, act_min, act_max;
} nn_graph_conv_params_t;

typedef struct {
    int32_t activation, keep_num_dims, input_zero, output_zero, act_min, act_max;
} nn_graph_fc_params_t;

typedef struct {
    int32_t padding, activation, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left;
    int32_t act_min, act_max;
} nn_graph_pool_params_t;

typedef struct {
    int32_t activation, input1_offset, input2_offset, left_shift;
    int32_t input1_multiplier, input1_shift, input2_multiplier, input2_shift;
    int32_t output_multiplier, output_shift, output_zero, act_min, act_max;
} nn_graph_add_params_t;

typedef struct {
    int32_t beta, input_multiplier, input_left_shift, diff_min;
} nn_graph_softmax_params_t;

typedef struct {
    int32_t value;
} nn_graph_pad_params_t;

typedef struct {
    int32_t keep_dims, input_zero_times_count, multiplier, shift, output_zero;
} nn_graph_mean_params_t;

typedef struct {
    int32_t input_zero, input_range_radius, input_multiplier, input_left_shift;
} nn_graph_sigmoid_params_t;

typedef struct {
    int32_t output_zero;
    uint32_t scale;  // f32 bits
    int32_t input_zero, multiplier, shift;
} nn_graph_quantize_params_t;

typedef struct {
    int32_t input_zero;
    uint32_t scale;  // f32 bits
} nn_graph_dequantize_params_t;

typedef struct {
    int32_t padding, stride_h, stride_w, pad_top, pad_left;
} nn_graph_xnor_conv_params_t;

typedef struct {
    int32_t padding, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left;
} nn_graph_binary_pool_params_t;

typedef struct {
    int32_t padding, stride_h, stride_w, pad_top, pad_left, input_zero;
} nn_graph_bconv_params_t;

// Operator record (80 bytes).
typedef struct {
    uint8_t kind;
    uint8_t n_inputs;
    uint16_t reserved;
    uint16_t inputs[NN_GRAPH_MAX_OP_INPUTS];
    uint16_t output;
    uint32_t table;
    union {
        int32_t raw[NN_GRAPH_N_PARAMS];
        nn_graph_conv_params_t conv;  // CONV_2D, DEPTHWISE_CONV_2D
        nn_graph_fc_params_t fc;
        nn_graph_pool_params_t pool;  // AVERAGE_POOL_2D, MAX_POOL_2D
        nn_graph_add_params_t add;
        nn_graph_softmax_params_t softmax;
        nn_graph_pad_params_t pad;
        nn_graph_mean_params_t mean;
        nn_graph_sigmoid_params_t sigmoid;  // LOGISTIC, TANH
        nn_graph_quantize_params_t quantize;
        nn_graph_dequantize_params_t dequantize;
        nn_graph_xnor_conv_params_t xnor_conv;
        nn_graph_binary_pool_params_t binary_pool;
        nn_graph_bconv_params_t bconv;  // BINARIZE_CONV_2D
    } params;
} nn_graph_op_t;

// What nn_graph_check found wrong (0: nothing).
enum {
    NN_GRAPH_OK = 0,
    NN_GRAPH_E_HEADER,      // not a version-2 header (magic, version, record sizes, tables)
    NN_GRAPH_E_MODEL_SIZE,  // the buffer is shorter than total_size
    NN_GRAPH_E_ARENA,       // the arena is shorter than arena_size
    NN_GRAPH_E_RANGE,       // not 0 <= first <= end <= n_operators
    NN_GRAPH_E_KIND,        // operator: unknown kind, or a wrong number of inputs
    NN_GRAPH_E_INDEX,       // operator: a tensor index out of range, or a required one absent
    NN_GRAPH_E_TENSOR,      // a tensor record: dtype, rank, dims, size or offset
    NN_GRAPH_E_SHAPE,       // operator: dtypes or shapes that do not fit its kind
    NN_GRAPH_E_PARAMS,      // operator: a param out of range
    NN_GRAPH_E_TABLE,       // operator: its table is missing, misplaced or out of range
    NN_GRAPH_ERRORS         // one past the last code
};

// Bytes of nn_graph_scratch: the tap list of one output pixel, 4 bytes a tap (windows of
// more taps are run in pieces), and ADD's two tables of 256 rescaled inputs.
#define NN_GRAPH_SCRATCH_BYTES (4096)
extern uint32_t nn_graph_scratch[NN_GRAPH_SCRATCH_BYTES / 4];

// 0 if operators [first, end) of the model can run on an arena of arena_len bytes, else
// an NN_GRAPH_E_* code with the operator it concerns in *op_at (or first). model must be
// 4-byte aligned with model_len bytes.
uint32_t nn_graph_check(const uint8_t *model, uint32_t model_len, uint32_t arena_len,
    uint32_t first, uint32_t end, uint32_t *op_at);

// Runs operators [first, end) of a model that nn_graph_check accepted; arena: 4-byte
// aligned, arena_size bytes.
void nn_graph_run(const uint8_t *model, uint8_t *arena, uint32_t first, uint32_t end);

// The record of tensor `index` of a model whose header nn_graph_check accepted, or NULL
// when the index is out of range or the record fails the checks operators' tensors get
// (its bytes lie inside the model or the arena_size bytes of an arena).
const nn_graph_tensor_t *nn_graph_tensor(const uint8_t *model, uint32_t index);

// The record checks that the int8 kinds (nn_graph.c) and the float32 kinds (nn_float.c)
// share, each an NN_GRAPH_E_* code (nn_graph_check has checked the header and the op's
// indices). Tensors passed in have had their records checked (nn_graph_expect).
// Input k of op (k = NN_GRAPH_MAX_OP_INPUTS: its output), its record checked, of dtype
// and rank (0: any) in *t.
uint32_t nn_graph_expect(const uint8_t *model, const nn_graph_op_t *op, uint32_t k,
    uint32_t dtype, uint32_t rank, const nn_graph_tensor_t **t);
// The optional bias (input 2): absent, or of dtype with c_out elements.
uint32_t nn_graph_check_bias(const uint8_t *model, const nn_graph_op_t *op, uint32_t dtype,
    uint32_t c_out);
// CONV_2D, DEPTHWISE_CONV_2D: the dims of x, w and y, the depth multiplier, the stride
// and padding.
uint32_t nn_graph_check_conv_shape(const nn_graph_op_t *op, const nn_graph_tensor_t *x,
    const nn_graph_tensor_t *w, const nn_graph_tensor_t *y);
// FULLY_CONNECTED: weights w [c_out, depth] take x to y.
uint32_t nn_graph_check_fc_shape(const nn_graph_tensor_t *x, const nn_graph_tensor_t *w,
    const nn_graph_tensor_t *y);
// AVERAGE_POOL_2D, MAX_POOL_2D: the dims of x and y, the window.
uint32_t nn_graph_check_pool_shape(const nn_graph_op_t *op, const nn_graph_tensor_t *x,
    const nn_graph_tensor_t *y);
// ADD: a and b broadcast to y.
uint32_t nn_graph_check_broadcast(const nn_graph_tensor_t *a, const nn_graph_tensor_t *b,
    const nn_graph_tensor_t *y);
// PAD: input 1, constant int32 [rank(x), 2], pads x to y.
uint32_t nn_graph_check_pads(const uint8_t *model, const nn_graph_op_t *op,
    const nn_graph_tensor_t *x, const nn_graph_tensor_t *y);
// MEAN: input 1, constant int32 [2], names the height and width axes of x [n, h, w, c];
// y has n x c elements.
uint32_t nn_graph_check_mean_axes(const uint8_t *model, const nn_graph_op_t *op,
    const nn_graph_tensor_t *x, const nn_graph_tensor_t *y);

#ifdef __cplusplus
}
#endif

#endif // PICONN_NN_GRAPH_H
