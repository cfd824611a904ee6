"""`piconn eval FILE`: test accuracy of a saved model.

A .nnb, a pruned or an XNOR .npz is scored with the device arithmetic
(`piconn.reference` on `lower.load_file`'s device model); a float .npz with the
host model (`train.evaluate`). A version-2 .nnb and a binary CNN .npz (lowered by
`xnor_cnn.to_graph`) are scored through their graph (`int8_ops.run`, the reference of
every version-2 operator).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .. import format2, ir, lower, nn, quant_int8, reference, train, xnor_cnn
from .. import graph as g
from .common import add_common, add_data, load_data, model_file, model_stats


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="test accuracy of a saved model",
                       description="Print the test accuracy of a model saved by train.")
    add_common(p)
    p.add_argument("model", metavar="FILE",
                   help="model file (.npz from piconn train/prune, or a .nnb)")
    add_data(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> tuple[dict, str]:
    path = model_file(args.model)
    _, _, x_test, y_test = load_data(args)
    with open(path, "rb") as f:
        head = f.read(format2.HEADER_SIZE)
    if format2.is_version2(head):
        graph = format2.from_bytes(path.read_bytes()).graph
        return _graph(path, graph, x_test, y_test, "version-2 graph")
    if not lower.is_nnb(path):
        model, meta = nn.load(path)
        if xnor_cnn.is_xnor_cnn(model):
            return _graph(path, xnor_cnn.to_graph(model), x_test, y_test, "binary CNN")
        if not lower.is_compressed(model):
            acc = train.evaluate(model, x_test, y_test)
            result = {"command": "eval", "model": str(path), "kind": meta.get("kind"),
                      "accuracy": acc, "n": len(y_test), **model_stats(model)}
            return result, f"test accuracy {100 * acc:.2f}% on {len(y_test)} images ({path})"
    return _device(path, lower.load_file(path).model, x_test, y_test)


def _device(path: Path, dm: ir.DeviceModel, x: np.ndarray, y: np.ndarray
            ) -> tuple[dict, str]:
    """Accuracy of the device arithmetic, with the device model's size figures."""
    acc = float((reference.predict(dm, x) == np.asarray(y)).mean())
    st = reference.stats(dm)
    result = {"command": "eval", "model": str(path), "kind": dm.family, "reference": True,
              "accuracy": acc, "n": len(y), **st}
    nnz = f", {st['nnz']} stored weights" if "nnz" in st else ""
    text = (f"test accuracy {100 * acc:.2f}% on {len(y)} images (device arithmetic, "
            f"{dm.family}); {st['params']} parameters{nnz}, {st['bytes']} bytes as .nnb ({path})")
    return result, text


def _graph(path: Path, graph: g.Graph, x: np.ndarray, y: np.ndarray, what: str
           ) -> tuple[dict, str]:
    """Accuracy of a version-2 graph (its first maximum output per image) by the reference."""
    size = graph.tensors[graph.inputs[0]].size
    if size != x.shape[1]:
        raise ValueError(f"{path}: the graph takes {size} inputs, MNIST digits have {x.shape[1]}")
    out = quant_int8.predict_int8(graph, x)
    acc = float((out.reshape(len(out), -1).argmax(axis=1) == np.asarray(y)).mean())
    result = {"command": "eval", "model": str(path), "kind": what, "reference": True,
              "accuracy": acc, "n": len(y), "operators": len(graph.operators),
              "macs": graph.macs(), "weight_bytes": graph.constant_bytes()}
    text = (f"test accuracy {100 * acc:.2f}% on {len(y)} images (reference arithmetic, {what}:"
            f" {len(graph.operators)} operators, constants {graph.constant_bytes()} bytes)"
            f" ({path})")
    return result, text
