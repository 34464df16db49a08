"""``fedsim report``: report.md and PNGs for hand-written run and sweep directories."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fedsim.cli import main
from fedsim.errors import FedsimError
from fedsim.report import render_sections, write_report, write_report_safely
from fedsim.report.run import overview_section
from fedsim.report.sweep import aggregate_points, swept_keys

SHARED_RAY = True  # its in-process runs share one Ray and warm workers (conftest)


def _client(eps: float, steps: int) -> dict:
    return {
        "status": "ok",
        "epsilon": eps,
        "epsilon_total": eps,
        "delta": 1e-5,
        "num_examples": 100,
        "train_loss": 1.0,
        "noise_multiplier": 1.0,
        "sample_rate": 0.1,
        "steps": steps,
    }


def make_run(path: Path, *, with_summary: bool = True, rewards: bool = False) -> Path:
    path.mkdir(parents=True)
    lines = [
        {
            "round": r,
            "test_accuracy": 0.5 + 0.1 * r,
            "test_loss": 1.0 / r,
            "sampled": [0, 1],
            "selected": [0, 1],
            "seconds": 1.0,
            "clients": {"0": _client(0.5 * r, 10 * r), "1": _client(0.6 * r, 10 * r)},
        }
        for r in (1, 2, 3)
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    if with_summary:
        clients = {
            str(c): {
                "epsilon_spent": eps,
                "epsilon_total": eps + 0.25,
                "delta": 1e-5,
                "noise_multiplier": 1.0,
                "role": role,
                "valuation": 0.7 if rewards else None,
                "reward_total": 12.5 if rewards else 0.0,
                "num_examples": 100,
                "rounds_trained": 3,
                "last_status": "ok",
            }
            for c, eps, role in ((0, 1.5, "honest"), (1, 1.8, "unreliable"))
        }
        summary = {
            "name": "tiny",
            "rounds": 3,
            "wall_seconds": 4.2,
            "final": {"test_accuracy": 0.8, "test_loss": 0.33},
            "dp": {"enabled": True, "delta": 1e-5, "max_epsilon_spent": 1.8},
            "clients": clients,
        }
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def make_sweep(path: Path) -> Path:
    path.mkdir(parents=True)
    header = [
        "point",
        "dp.noise_multiplier",
        "dp.clipping",
        "seed",
        "status",
        "final.test_accuracy",
        "dp.max_epsilon_spent",
        "wall_seconds",
        "run_dir",
    ]
    rows = []
    for sigma, eps in ((2.0, 1.0), (1.0, 3.0)):
        for clipping, bonus in (("flat", 0.1), ("per_layer_uniform", 0.0)):
            for seed in (0, 1):
                acc = 0.5 + bonus + (0.1 if sigma == 1.0 else 0.0) + 0.02 * seed
                rows.append(
                    [len(rows), sigma, clipping, seed, "done", acc, eps + 0.01 * seed, 3.0, "p"]
                )
    rows.append([len(rows), 0.5, "flat", 0, "failed", "", "", "", "p"])
    with (path / "sweep.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_run_report_has_plots_and_client_table(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", rewards=True)
    out = write_report(run)
    text = out.read_text()
    assert out == run / "report.md"
    for png in ("accuracy.png", "epsilon.png"):
        assert (run / png).stat().st_size > 1000
        assert f"]({png})" in text
    assert "| 0 | honest | 1.5 | 1.75 |" in text
    assert "| 1 | unreliable | 1.8 | 2.05 |" in text
    assert "valuation" in text and "reward_total" in text and "12.5" in text
    assert "| 3 | 0.8 | 0.3333 | 2 |" in text  # round 3 of the per-round table
    assert "failed" not in text


def test_run_report_without_rewards_or_summary(tmp_path: Path) -> None:
    text = write_report(make_run(tmp_path / "a")).read_text()
    assert "reward_total" not in text and "valuation" not in text
    text = write_report(make_run(tmp_path / "b", with_summary=False)).read_text()
    assert "did not finish; 3 completed round(s)" in text
    assert "## Clients" not in text


def test_sweep_points_average_over_seeds() -> None:
    rows = [
        {"dp.noise_multiplier": "1.0", "dp.clipping": "flat", "seed": "0",
         "final.test_accuracy": "0.6", "dp.max_epsilon_spent": "2.0"},
        {"dp.noise_multiplier": "1.0", "dp.clipping": "flat", "seed": "1",
         "final.test_accuracy": "0.8", "dp.max_epsilon_spent": "2.0"},
    ]  # fmt: skip
    keys = swept_keys(list(rows[0]))
    assert keys == ["dp.noise_multiplier", "dp.clipping"]
    (point,) = aggregate_points(rows, keys)
    assert point.variant == (("dp.clipping", "flat"),)
    assert point.level == (("dp.noise_multiplier", "1.0"),)
    assert point.accuracy_mean == pytest.approx(0.7)
    assert point.accuracy_std == pytest.approx(0.1414213, rel=1e-5)
    assert point.seeds == 2


def test_sweep_report(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "sweep")
    text = write_report(sweep).read_text()
    assert (sweep / "accuracy_vs_epsilon.png").stat().st_size > 1000
    assert "8 finished run(s)" in text and "`dp.noise_multiplier`, `dp.clipping`" in text
    assert "| dp.clipping=flat | dp.noise_multiplier=1.0 | 2 | 3.005 | 0.71 |" in text
    assert "| dp.clipping=per_layer_uniform | dp.noise_multiplier=2.0 | 2 | 1.005 | 0.51 |" in text


def test_extra_section_and_failing_section(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    text = render_sections(run, (("overview", overview_section), ("broken", _broken_section)))
    assert "# Run report: tiny" in text
    assert "Section `broken` failed: RuntimeError: boom" in text


def _broken_section(run_dir: Path) -> str:
    raise RuntimeError("boom")


def test_neither_run_nor_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FedsimError, match="neither a run directory"):
        write_report(tmp_path)
    assert write_report_safely(tmp_path) is None
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "run")
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.md")


@pytest.mark.e2e
def test_fedsim_run_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "name: tiny\nrounds: 1\n"
        "data: {name: pneumoniamnist, num_clients: 2, train_samples: 200, test_samples: 100}\n"
        "model: {name: mlp}\nclient: {batch_size: 50, lr: 0.1}\n"
        "dp: {noise_multiplier: 1.0, delta: 1.0e-4}\n"
    )
    run = tmp_path / "run"
    assert main(["run", str(config), "--out", str(run)]) == 0
    text = (run / "report.md").read_text()
    assert "# Run report: tiny" in text and (run / "accuracy.png").is_file()
    assert "failed" not in text
    # a report that cannot be written is logged; the run and its exit code stand
    import fedsim.report

    def broken(path: object) -> Path:
        raise RuntimeError("disk full")

    monkeypatch.setattr(fedsim.report, "write_report", broken)
    again = tmp_path / "again"
    assert main(["run", str(config), "--out", str(again)]) == 0
    assert (again / "summary.json").is_file() and not (again / "report.md").exists()
