# piconn demo: every MNIST model frozen into the firmware, on the frozen test digits.
#
#   mpremote run device/demo_mnist.py            (a Pico, or the virtual one: make emulate)
#   build/UNIX/micropython device/demo_mnist.py  (the unix-port build)
#
# Prints one digit as ASCII art with each model's prediction, then a table:
# variant, kind, kernel tier, accuracy on the digits, microseconds per inference
# (time.ticks_us, predict() alone), model bytes (in flash when frozen), heap
# bytes the model took (gc.mem_free before/after nn.load).
import gc
import time

import nn

# module names `piconn export` writes (the Makefile's models), in table order
VARIANTS = ("mnist_f32", "mnist_sparse", "mnist_pruned", "mnist_q8w", "mnist_q8",
            "mnist_sparse_q8", "mnist_xnor")
SHADES = " .:-=+*#%@"
SLOW_US = 200000  # a variant slower than this per digit runs on fewer digits


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


def evaluate(m, images, labels, count, size):
    """(correct, digits run, total microseconds) over the first `count` digits."""
    mv = memoryview(images)
    correct = 0
    total = 0
    n = 0
    for i in range(count):
        x = mv[i * size:(i + 1) * size]
        t0 = time.ticks_us()
        k = m.predict(x)
        total += time.ticks_diff(time.ticks_us(), t0)
        n += 1
        if k == labels[i]:
            correct += 1
        if n == 3 and total > 3 * SLOW_US and count > 20:
            count = 20  # keep slow tiers (e.g. float layers in plain Python) short
    return correct, n, total


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
    models = []
    for name in VARIANTS:
        try:
            mod = __import__(name)
        except ImportError:
            continue
        gc.collect()
        free0 = gc.mem_free()
        try:
            m = nn.load(mod)
        except (ValueError, TypeError) as e:
            print("%s: cannot load: %s" % (name, e))
            continue
        gc.collect()
        models.append((name, mod, m, free0 - gc.mem_free()))
    if not models:
        print("no model modules found (%s): make models, then rebuild the firmware"
              % ", ".join(VARIANTS))
        return

    img = memoryview(s.IMAGES)[0:size]
    print("\ndigit 0 (label %d):" % s.LABELS[0])
    print(ascii_digit(img))
    print("predictions: " + ", ".join("%s %d" % (n, m.predict(img)) for n, _, m, _ in models))

    print("\n%-16s %-7s %-13s %9s %10s %9s %7s" % ("variant", "kind", "tiers", "accuracy",
                                                 "us/digit", "model B", "heap B"))
    for name, mod, m, heap in models:
        gc.collect()
        correct, n, total = evaluate(m, s.IMAGES, s.LABELS, count, size)
        used = []  # type: list[str]
        for t in m.tiers():
            if t not in used:
                used.append(t)
        tiers = "+".join(used)
        where = m.where
        print("%-16s %-7s %-13s %5.1f%% %s %10d %9d %7d%s" % (
            name, m.family, tiers, 100.0 * correct / n, "   " if n == count else "*", total // n,
            len(mod.MODEL), heap, "" if where == "flash" else " (%s)" % where))
    print("\n* fewer digits (slow tier). us/digit: predict() alone, time.ticks_us.")
    print("model B: the frozen bytes constant (read in place by nn); heap B: gc.mem_free()")
    print("before minus after nn.load (activation buffers and the Model object).")
    for _, _, m, _ in models:
        print()
        print(m.summary())


main()
