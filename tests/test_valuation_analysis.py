"""Selection consistency (pure functions), `fedsim analyze` and its report section."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedsim.cli import main
from fedsim.config import from_dict
from fedsim.models import build_model
from fedsim.rundir import RunWriter, checkpoint_paths
from fedsim.valuation.analysis import analyze_runs, report_section
from fedsim.valuation.consistency import (
    bhattacharyya_distance,
    compare_selections,
    save_grid,
    ssim_mean_images,
    top_k_per_class,
)

SHARED_RAY = True  # its in-process runs share one Ray and warm workers (conftest)


def test_top_k_per_class_hand_computed() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.2, 0.8])
    labels = np.array([0, 0, 0, 1, 1, 1])
    top = top_k_per_class(scores, labels, 2)
    assert top[0].tolist() == [1, 2] and top[1].tolist() == [5, 3]
    low = top_k_per_class(scores, labels, 2, largest=False)
    assert low[0].tolist() == [0, 2] and low[1].tolist() == [4, 3]
    assert top_k_per_class(scores, labels, 10)[0].tolist() == [1, 2, 0]  # class smaller than k
    with pytest.raises(ValueError, match="k must be"):
        top_k_per_class(scores, labels, 0)


def test_ssim_and_bhattacharyya_properties() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((5, 1, 12, 12))
    assert ssim_mean_images(a, a) == pytest.approx(1.0)
    assert ssim_mean_images(a, 1 - a) < 0.5
    assert bhattacharyya_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    dark, bright = np.full((2, 1, 4, 4), 0.05), np.full((2, 1, 4, 4), 0.95)
    assert math.isinf(bhattacharyya_distance(dark, bright))
    # hand-computed: halves of two bins vs all in one bin -> BC = sqrt(1/2) -> D = ln(2)/2
    half = np.array([0.1] * 8 + [0.9] * 8).reshape(1, 1, 4, 4)
    assert bhattacharyya_distance(half, dark, bins=2) == pytest.approx(math.log(2) / 2)


def test_compare_selections_identical_and_reversed() -> None:
    rng = np.random.default_rng(1)
    images = rng.random((40, 1, 8, 8)).astype(np.float32)
    labels = np.arange(40) % 2
    s = rng.random(40)
    same = compare_selections("loss", s, 3 * s + 1, labels, images, 5)
    assert same.overlap == same.selected == 10
    assert same.pearson == pytest.approx(1.0) and same.spearman == pytest.approx(1.0)
    assert same.mean_ssim == pytest.approx(1.0) and same.mean_bhattacharyya == pytest.approx(0.0)
    rev = compare_selections("loss", s, -s, labels, images, 5)
    assert rev.overlap == 0 and rev.pearson == pytest.approx(-1.0)
    doc = rev.to_json()
    assert json.loads(json.dumps(doc))["classes"][0]["k"] == 5


def test_save_grid_writes_png(tmp_path: Path) -> None:
    images = np.random.default_rng(0).random((6, 3, 8, 8))
    save_grid(images, {0: np.array([0, 1, 2]), 1: np.array([3])}, tmp_path / "g.png", "t")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def _fake_run(path: Path, seed: int, checkpoints: int, model: str = "mlp") -> Path:
    cfg = from_dict(
        {
            "name": path.name,
            "seed": 0,
            "data": {"name": "pneumoniamnist", "num_clients": 2, "train_samples": 40},
            "model": {"name": model},
            "dp": {"enabled": False},
        }
    )
    writer = RunWriter(path, cfg, tensorboard=False)
    for r in range(1, checkpoints + 1):
        writer.save_checkpoint(
            r, build_model(model, (1, 28, 28), 2, seed=seed * 10 + r).state_dict()
        )
    writer.save_model(build_model(model, (1, 28, 28), 2, seed=seed).state_dict())
    writer.close()
    return path


def test_analyze_two_runs(tmp_path: Path) -> None:
    a = _fake_run(tmp_path / "eps1", seed=1, checkpoints=3)
    b = _fake_run(tmp_path / "eps8", seed=2, checkpoints=2)
    assert len(checkpoint_paths(a)) == 3
    doc = analyze_runs(a, b, k=4, max_samples=30)
    out = a / "analysis"
    assert [m["metric"] for m in doc["metrics"]] == ["vog", "plis", "loss", "grad_norm"]
    assert doc["num_samples"] == 30 and doc["checkpoints"] == [3, 2]
    for m in doc["metrics"]:
        assert (out / f"grid_{m['metric']}_a.png").exists()
        assert (out / f"grid_{m['metric']}_b.png").exists()
        assert 0 <= m["overlap"] <= m["selected"] == 8
    scores = np.load(out / "scores_a.npz")
    assert scores["plis"].shape == (30,) and scores["index"].shape == (30,)
    md = (out / "analysis.md").read_text()
    assert "| plis |" in md and "grid_vog_a.png" in md
    section = report_section(a)
    assert section is not None and "](analysis/grid_loss_b.png)" in section
    assert report_section(b) is None
    # the same model against itself agrees completely
    self_doc = analyze_runs(a, a, tmp_path / "self", k=4, metrics=["loss"], max_samples=30)
    (only,) = self_doc["metrics"]
    assert only["overlap"] == only["selected"] and only["pearson"] == pytest.approx(1.0)


def test_analyze_cli_errors_and_vog_skip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _fake_run(tmp_path / "a", seed=1, checkpoints=0)
    b = _fake_run(tmp_path / "b", seed=2, checkpoints=0)
    assert main(["analyze", str(a), str(b), "-m", "vog"]) == 2
    assert "save_checkpoints=true" in capsys.readouterr().err
    assert main(["analyze", str(a), str(b), "-m", "shapley"]) == 2
    assert "valid: vog, plis, loss, grad_norm" in capsys.readouterr().err
    assert main(["analyze", str(a), str(tmp_path / "nope")]) == 2
    assert main(["analyze", str(a), str(b), "--client", "5"]) == 2
    assert "--client must be in [0, 1]" in capsys.readouterr().err
    code = main(
        [
            "analyze",
            str(a),
            str(b),
            "-m",
            "loss",
            "-m",
            "grad_norm",
            "-k",
            "3",
            "--client",
            "1",
            "--out",
            str(tmp_path / "out"),
            "--labels",
            "A",
            "B",
        ]
    )
    assert code == 0
    assert "grad_norm" in capsys.readouterr().out
    doc = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert doc["labels"] == ["A", "B"] and doc["pool"] == "client 1's data"
    # default metrics without checkpoints: VoG skipped with a note
    default = analyze_runs(a, b, tmp_path / "d", k=2, max_samples=10)
    assert "vog" not in [m["metric"] for m in default["metrics"]]
    assert any("VoG skipped" in n for n in default["notes"])


def test_analyze_rejects_mismatched_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _fake_run(tmp_path / "a", seed=1, checkpoints=0)
    b = _fake_run(tmp_path / "b", seed=2, checkpoints=0, model="cnn")
    (b / "config.yaml").write_text(
        (b / "config.yaml").read_text().replace("name: cnn", "name: mlp")
    )
    assert main(["analyze", str(a), str(b), "-m", "loss"]) == 2
    assert "does not fit mlp" in capsys.readouterr().err


@pytest.mark.e2e
def test_run_saves_checkpoints_and_analyze_uses_them(tmp_path: Path) -> None:
    from fedsim.run import run_experiment

    raw = {
        "name": "ckpt",
        "seed": 1,
        "rounds": 2,
        "save_checkpoints": True,
        "data": {
            "name": "pneumoniamnist",
            "num_clients": 2,
            "train_samples": 60,
            "test_samples": 40,
        },
        "model": {"name": "mlp"},
        "client": {"local_epochs": 1, "batch_size": 16, "lr": 0.1},
        "dp": {"enabled": False},
    }
    run_experiment(from_dict(raw), tmp_path / "run")
    paths = checkpoint_paths(tmp_path / "run")
    assert [p.name for p in paths] == ["round_0001.pt", "round_0002.pt"]
    import torch

    final = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    last = torch.load(paths[-1], weights_only=True)
    assert all(torch.equal(final[k], last[k]) for k in final)
    doc = analyze_runs(tmp_path / "run", tmp_path / "run", k=3, metrics=["vog", "loss"])
    assert doc["checkpoints"] == [2, 2]
    assert all(m["overlap"] == m["selected"] for m in doc["metrics"])
