"""Magnitude pruning, the cubic schedule, masks through fine-tuning, and the CLI commands."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from piconn import commands, lower, nn, prune, reference, train
from piconn import format as fmt


def _mlp(seed: int = 0, sizes=(784, 32, 10)) -> nn.Sequential:
    return nn.Sequential(nn.Linear(sizes[0], sizes[1]), nn.ReLU(),
                         nn.Linear(sizes[1], sizes[2])).init(seed)


def test_per_layer_and_global_magnitude_pruning() -> None:
    model = _mlp(1, (50, 40, 30))
    w0 = [la.weight.data.copy() for _, la in prune.linears(model)]
    prune.magnitude_prune(model, 0.75)
    for (_, la), w in zip(prune.linears(model), w0):
        kept = la.mask
        assert kept.sum() == round(0.25 * w.size)
        assert np.abs(w[kept]).min() >= np.abs(w[~kept]).max()  # the largest survive
        assert np.all(la.weight.data[~kept] == 0)
    model = _mlp(1, (50, 40, 30))
    prune.magnitude_prune(model, 0.75, global_=True)
    rep = prune.report(model)
    assert rep["nnz"] == round(0.25 * rep["weights"])
    kept = np.concatenate([np.abs(w[la.mask]) for (_, la), w in zip(prune.linears(model), w0)])
    gone = np.concatenate([np.abs(w[~la.mask]) for (_, la), w in zip(prune.linears(model), w0)])
    assert kept.min() >= gone.max()
    assert rep["layers"][0]["sparsity"] != rep["layers"][1]["sparsity"]  # global: uneven


def test_masks_only_grow() -> None:
    model = _mlp(2, (30, 20, 5))
    prune.magnitude_prune(model, 0.5)
    first = [la.mask.copy() for _, la in prune.linears(model)]
    for (_, la) in prune.linears(model):  # kept weights shrink below pruned magnitudes: still 0
        la.weight.data *= 1e-6
    prune.magnitude_prune(model, 0.8)
    for (_, la), m in zip(prune.linears(model), first):
        assert not np.any(la.mask & ~m)


def test_cubic_schedule() -> None:
    s = [prune.cubic_schedule(t, 0.9, 10, 110) for t in range(130)]
    assert s[0] == 0 and s[10] == 0 and s[110] == pytest.approx(0.9) and s[129] == 0.9
    assert all(b >= a for a, b in itertools.pairwise(s))
    assert s[60] == pytest.approx(0.9 * (1 - 0.5**3))  # fast at first, slow at the end


def test_bad_sparsity() -> None:
    for bad in (-0.1, 1.0, 1.5, "abc", None):
        with pytest.raises(ValueError, match=r"sparsity"):
            prune.check_sparsity(bad)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune.magnitude_prune(_mlp(), 1.0)


def test_masks_survive_fine_tuning(mnist, tmp_path) -> None:
    xtr, ytr, xte, yte = mnist
    model = _mlp(3)
    train.fit(model, xtr[:4000], ytr[:4000], optimizer=nn.Adam(model.params(), 2e-3), epochs=2,
              batch_size=64, progress=False)
    prune.magnitude_prune(model, 0.5)
    first = [la.mask.copy() for _, la in prune.linears(model)]
    prune.prune(model, xtr[:4000], ytr[:4000], 0.75, epochs=2, batch_size=64, update_every=10,
                progress=False)
    rep = prune.report(model)
    assert rep["sparsity"] == pytest.approx(0.75, abs=1e-3)
    for (_, la), m in zip(prune.linears(model), first):
        assert np.all(la.weight.data[~la.mask] == 0)
        assert not np.any(la.mask & ~m)  # once pruned, never back
    acc = train.evaluate(model, xte[:1000], yte[:1000])
    assert acc > 0.8
    path = nn.save(model, tmp_path / "p.npz", {"input_scale": 1 / 255})
    back, meta = nn.load(path)
    for (_, a), (_, b) in zip(prune.linears(model), prune.linears(back)):
        np.testing.assert_array_equal(a.mask, b.mask)
    dm = lower.to_device(back, meta)
    assert dm.family == "sparse" and dm.input_dtype == "u8"
    blob = fmt.to_bytes(dm)
    assert fmt.KIND_NAMES[blob[40]] == "sparse_f32"
    out = reference.run(fmt.from_bytes(blob), xte[:500])
    np.testing.assert_allclose(out, train.predict(model, xte[:500]), rtol=1e-4, atol=1e-4)


def test_cli_prune_quantize_eval(mnist, tmp_path, capsys) -> None:
    xtr, ytr, _, _ = mnist
    model = _mlp(4, (784, 16, 10))
    train.fit(model, xtr[:3000], ytr[:3000], optimizer=nn.Adam(model.params(), 2e-3), epochs=1,
              progress=False)
    src = nn.save(model, tmp_path / "f.npz", {"input_scale": 1 / 255})
    with pytest.raises(SystemExit) as e:
        commands.main(["prune", str(src), "--sparsity", "1.2", "--out", str(tmp_path / "x.npz")])
    assert e.value.code == 2 and "[0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        commands.main(["quantize", str(src), "--mode", "int4", "--out", str(tmp_path / "x.nnb")])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert commands.main(["prune", str(src), "--sparsity", "0.7", "--epochs", "0", "--global",
                          "--out", str(tmp_path / "p.npz"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["sparsity"] == pytest.approx(0.7, abs=1e-3) and len(res["layers"]) == 2
    assert commands.main(["quantize", str(tmp_path / "p.npz"), "--mode", "full",
                          "--calib", "500", "--out", str(tmp_path / "q.nnb"), "--json"]) == 0
    q = json.loads(capsys.readouterr().out)
    assert q["layers"] == ["sparse_q8", "sparse_q8"] and q["bytes"] == (tmp_path / "q.nnb").stat().st_size
    assert commands.main(["eval", str(tmp_path / "q.nnb"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["accuracy"] == q["accuracy"] and ev["nnz"] == res["nnz"]
    assert ev["n"] == 10000 and ev["params"] == 784 * 16 + 16 * 10 + 2 * (16 + 10)
