# piconn demo: every MNIST model frozen into the firmware, on the frozen test digits.
#
#   mpremote run device/demo_mnist.py            (a Pico, or the virtual one: make emulate)
#   build/UNIX/micropython device/demo_mnist.py  (the unix-port build)
#
# Prints one digit as ASCII art with each model's prediction, then a table:
# variant, kind, kernel tier, accuracy on the digits, microseconds per inference
# (time.ticks_us, predict() alone), model bytes (in flash when frozen), heap
# bytes the model took (gc.mem_free before/after nn.load). The MLPs (784 pixels in)
# come first, then the CNNs of `make cnn-models`, which take the 28x28 image as the
# model's input tensor: pixel/255 as float32, or quantized with the model's input scale
# and zero point (made before the timing).
import gc
import time
from array import array

import nn

# module names `piconn export` writes (the Makefile's models), in table order
VARIANTS = ("mnist_f32", "mnist_sparse", "mnist_pruned", "mnist_q8w", "mnist_q8",
            "mnist_sparse_q8", "mnist_xnor")
# the CNNs of `make cnn-models` and their kinds; the float32 ones do not fit the 2 MB
# Pico's code partition beside the MLPs (not frozen: `make bench` measures them)
CNN_VARIANTS = (("mnist_cnn_f32", "float32"), ("mnist_cnn_pruned", "float32"),
                ("mnist_cnn_int8", "int8"), ("mnist_cnn_small_int8", "int8"),
                ("mnist_cnn_xnor", "xnor"))
SHADES = " .:-=+*#%@"
SLOW_US = 200000  # a variant slower than this per digit runs on fewer digits
BUDGET_US = 4000000  # and one whose digits would take longer than this in all


def ascii_digit(img, rows=28, cols=28):
    """The digit as text, two characters per pixel column pair (28x14)."""
    lines = []
    for r in range(0, rows, 2):
        line = ""
        for c in range(cols):
            v = max(img[r * cols + c], img[(r + 1) * cols + c] if r + 1 < rows else 0)
            line += SHADES[v * (len(SHADES) - 1) // 255]
        lines.append(line)
    return "\n".join(lines)


def feeder(m):
    """A function pixels -> the model's input: the pixels for an MLP; for a CNN, pixel/255
    as float32 or quantized with the input's scale and zero point, in a buffer it
    reuses. ValueError if the CNN does not take 784 values."""
    if hasattr(m, "family"):  # an MLP (nn.Model) takes the u8 pixels as they are
        return lambda img: img
    n = 1
    for d in m.input_shape[0]:
        n *= d
    if n != 784:
        raise ValueError("takes %s, not a 28x28 image" % (m.input_shape[0],))
    if m.input_dtype[0] == "f":
        xf = array("f", bytes(4 * n))
        scale = 1 / 255  # (as the host's training and reference prepare pixels)

        def to_float(img):
            for i in range(n):
                xf[i] = img[i] * scale
            return xf
        return to_float
    s, z = m.input_scale[0], m.input_zero_point[0]
    lut = bytearray(256)  # pixel -> int8 byte
    for p in range(256):
        q = round(p / 255 / s) + z
        lut[p] = (-128 if q < -128 else 127 if q > 127 else q) & 0xFF
    xb = bytearray(n)

    def to_int8(img):
        for i in range(n):
            xb[i] = lut[img[i]]
        return xb
    return to_int8


def evaluate(m, feed, images, labels, count, size):
    """(correct, digits run, total microseconds) over the first `count` digits; only
    predict() is timed."""
    mv = memoryview(images)
    correct = 0
    total = 0
    n = 0
    for i in range(count):
        x = feed(mv[i * size:(i + 1) * size])
        t0 = time.ticks_us()
        k = m.predict(x)
        total += time.ticks_diff(time.ticks_us(), t0)
        n += 1
        if k == labels[i]:
            correct += 1
        if n == 3 and count > 20 and (total > 3 * SLOW_US or total * count > 3 * BUDGET_US):
            # keep slow tiers (e.g. float layers in plain Python) and big CNNs short
            count = max(10, min(20, BUDGET_US * 3 // total))
    return correct, n, total


def load_variant(name, kind, models, skipped):
    """Load module `name` (frozen) into models: (name, kind, module, model, heap B, feed);
    a module that is not there goes to skipped, one that fails to load is printed."""
    try:
        mod = __import__(name)
    except ImportError:
        skipped.append(name)
        return
    if kind is not None:
        from nn import graph  # noqa: F401 - imported first: its heap is not the model's
    gc.collect()
    free0 = gc.mem_free()
    try:
        m = nn.load(mod)
        feed = feeder(m)
    except (ValueError, TypeError) as e:
        print("%s: cannot load: %s" % (name, e))
        return
    gc.collect()
    family = m.family if isinstance(m, nn.Model) else "int8"  # (nn.graph's Model has none)
    models.append((name, kind or family, mod, m, free0 - gc.mem_free(), feed))


def main():
    try:
        import mnist_samples as s  # type: ignore[import-not-found]  # made by piconn export
    except ImportError:
        print("no mnist_samples module: export a model with --samples N (make models)")
        return
    size = s.SIZE
    count = s.COUNT
    print("nn backend: %s (present: %s); %d test digits" % (nn.backend(),
                                                           ", ".join(nn.backends()), count))
    models = []  # type: list
    skipped = []  # type: list[str]
    for name in VARIANTS:
        load_variant(name, None, models, skipped)
    for name, kind in CNN_VARIANTS:
        load_variant(name, kind, models, skipped)
    if not models:
        print("no model modules found (%s): make models, then rebuild the firmware"
              % ", ".join(VARIANTS))
        return

    img = memoryview(s.IMAGES)[0:size]
    print("\ndigit 0 (label %d):" % s.LABELS[0])
    print(ascii_digit(img))
    print("predictions: " + ", ".join("%s %d" % (v[0], v[3].predict(v[5](img)))
                                      for v in models))

    print("\n%-20s %-7s %-13s %9s %10s %9s %7s" % ("variant", "kind", "tiers", "accuracy",
                                                 "us/digit", "model B", "heap B"))
    for name, kind, mod, m, heap, feed in models:
        gc.collect()
        correct, n, total = evaluate(m, feed, s.IMAGES, s.LABELS, count, size)
        used = []  # type: list[str]
        for t in m.tiers():
            if t not in used:
                used.append(t)
        tiers = "+".join(used)
        where = m.where
        print("%-20s %-7s %-13s %5.1f%% %s %10d %9d %7d%s" % (
            name, kind, tiers, 100.0 * correct / n, "   " if n == count else "*", total // n,
            len(mod.MODEL), heap, "" if where == "flash" else " (%s)" % where))
    if skipped:
        print("\nnot in this firmware, skipped: %s (make models / make cnn-models, then "
              "rebuild it; the float32 CNNs are too big to freeze beside the MLPs: make "
              "bench measures them)" % ", ".join(skipped))
    print("\n* fewer digits (slow tier or big model). us/digit: predict() alone, "
          "time.ticks_us.")
    print("model B: the frozen bytes constant (read in place by nn); heap B: gc.mem_free()")
    print("before minus after nn.load (activation buffers and the Model object).")
    for v in models:
        print()
        print(v[3].summary())


main()
