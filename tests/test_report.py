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
    assert "| pneumoniamnist | 2 | iid | mlp | fedavg (all clients every round) | 1 | 0 |" in text
    assert "failed" not in text
    # a report that cannot be written is logged; the run and its exit code stand
    import fedsim.report

    def broken(path: object) -> Path:
        raise RuntimeError("disk full")

    monkeypatch.setattr(fedsim.report, "write_report", broken)
    again = tmp_path / "again"
    assert main(["run", str(config), "--out", str(again)]) == 0
    assert (again / "summary.json").is_file() and not (again / "report.md").exists()


def _with_config(run: Path, raw: dict) -> Path:
    from fedsim.config import from_dict
    from fedsim.rundir import config_text

    (run / "config.yaml").write_text(config_text(from_dict(raw)))
    return run


def _capture_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Keep each figure the run sections save, by file name, instead of closing it."""
    import fedsim.report.run as run_sections

    figures: dict[str, object] = {}
    real = run_sections.save_figure

    def keep(fig: object, path: Path) -> str:
        figures[path.name] = fig
        import matplotlib.pyplot as plt

        fig.savefig(path)  # type: ignore[attr-defined]
        plt.close(fig)  # type: ignore[arg-type]
        return path.name

    monkeypatch.setattr(run_sections, "save_figure", keep)
    assert real is not keep
    return figures


def _add_to_rounds(run: Path, **values: list[float]) -> None:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for i, m in enumerate(lines):
        m.update({k: v[i] for k, v in values.items()})
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))


def test_accuracy_plot_adds_auc_and_balanced_accuracy_where_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = _capture_figures(monkeypatch)
    plain = make_run(tmp_path / "plain")
    text = write_report(plain).read_text()
    ax = figures["accuracy.png"].axes[0]  # type: ignore[attr-defined]
    assert [line.get_label() for line in ax.get_lines()] == ["accuracy"]
    assert "test AUC" not in text and "balanced" not in text

    run = make_run(tmp_path / "run")
    _add_to_rounds(run, test_auc=[0.7, 0.8, 0.9], test_balanced_accuracy=[0.55, 0.65, 0.75])
    text = write_report(run).read_text()
    ax = figures["accuracy.png"].axes[0]  # type: ignore[attr-defined]
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert lines == {
        "accuracy": [0.6, 0.7, 0.8],
        "AUC": [0.7, 0.8, 0.9],
        "balanced accuracy": [0.55, 0.65, 0.75],
    }
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(lines)
    assert "| round | test accuracy | test AUC | test balanced accuracy | test loss |" in text
    assert "| 3 | 0.8 | 0.9 | 0.75 | 0.3333 | 2 |" in text


def test_epsilon_plot_draws_the_budgets_and_keeps_clients_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = _capture_figures(monkeypatch)
    run = _with_config(make_run(tmp_path / "run"), {"dp": {"epsilon": 2.0, "max_epsilon": 3.0}})
    text = write_report(run).read_text()
    ax = figures["epsilon.png"].axes[0]  # type: ignore[attr-defined]
    lines = ax.get_lines()
    budgets = {
        ln.get_label(): ln.get_ydata()[0] for ln in lines if not ln.get_label().startswith("client")
    }
    assert budgets == {"target ε = 2": 2.0, "max_epsilon = 3": 3.0}
    assert "Reference lines: target ε = 2; max_epsilon = 3." in text
    clients = [line for line in lines if line.get_label().startswith("client")]
    assert [c.get_label() for c in clients] == ["client 0", "client 1"]
    styles = {(c.get_marker(), c.get_linestyle()) for c in clients}
    assert len(styles) == 2  # each client its own marker/line style
    x0, x1 = (list(c.get_xdata()) for c in clients)
    assert all(a < b for a, b in zip(x0, x1, strict=True))  # drawn apart along the rounds
    assert all(abs(a - r) < 0.2 for a, r in zip(x0, (1, 2, 3), strict=True))

    # a target equal to the cap is one line; without config.yaml, summary.json's dp
    same = _with_config(make_run(tmp_path / "same"), {"dp": {"epsilon": 4.0, "max_epsilon": 4.0}})
    write_report(same)
    labels = [ln.get_label() for ln in figures["epsilon.png"].axes[0].get_lines()]  # type: ignore[attr-defined]
    assert [lb for lb in labels if not lb.startswith("client")] == ["target ε = max_epsilon = 4"]
    bare = make_run(tmp_path / "bare")
    doc = json.loads((bare / "summary.json").read_text())
    doc["dp"]["target_epsilon"] = 1.5
    (bare / "summary.json").write_text(json.dumps(doc))
    write_report(bare)
    labels = [ln.get_label() for ln in figures["epsilon.png"].axes[0].get_lines()]  # type: ignore[attr-defined]
    assert [lb for lb in labels if not lb.startswith("client")] == ["target ε = 1.5"]


def test_many_clients_get_distinct_styles_and_a_legend_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = _capture_figures(monkeypatch)
    run = make_run(tmp_path / "run")
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for m in lines:
        m["clients"] = {str(c): _client(0.5 * m["round"], 10) for c in range(20)}
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    write_report(run)
    fig = figures["epsilon.png"]
    ax = fig.axes[0]  # type: ignore[attr-defined]
    clients = [ln for ln in ax.get_lines() if ln.get_label().startswith("client")]
    assert len({(c.get_marker(), c.get_linestyle()) for c in clients}) == 20
    assert len({c.get_xdata()[0] for c in clients}) == 20  # equal ε, still apart
    legend = ax.get_legend()
    assert legend.get_bbox_to_anchor().x0 > ax.get_window_extent().x1  # outside the axes


def test_report_starts_with_what_the_run_was(tmp_path: Path) -> None:
    raw = {
        "name": "tiny",
        "seed": 7,
        "rounds": 3,
        "data": {"num_clients": 6, "partition": "dirichlet", "alpha": 0.3},
        "model": {"name": "mlp"},
        "strategy": {"name": "secprobe", "clients_per_round": 4, "k": 2},
        "dp": {
            "epsilon": 2.0,
            "max_epsilon": 3.0,
            "delta": 1e-4,
            "neighbouring": "add_remove",
            "size_bound": 200,
        },
    }
    run = _with_config(make_run(tmp_path / "run"), raw)
    text = write_report(run).read_text()
    head = text[: text.index("Run directory")]
    assert head.startswith("# Run report: tiny\n")
    assert (
        "| pneumoniamnist | 6 | dirichlet (α = 0.3) | mlp | secprobe (4 clients per round, "
        "k = 2) | 3 | 7 |"
    ) in head
    assert "| sample-level DP-SGD | 2 | 3 | 0.0001 | add/remove-one |" in head
    off = {**raw, "dp": {"enabled": False}, "strategy": {"name": "fedavg"}}
    head = write_report(_with_config(make_run(tmp_path / "off"), off)).read_text()
    assert "| fedavg (all clients every round) |" in head and "DP: off" in head
    assert "target ε" not in head


def test_the_report_warm_up_draws_a_figure_and_never_raises(monkeypatch) -> None:
    """``warm_up`` (run while the driver waits for its workers) leaves matplotlib imported
    on Agg; a failure inside it is logged, not raised (it only saves time)."""
    import sys

    import fedsim.report as report

    report.warm_up()
    import matplotlib

    assert "matplotlib.pyplot" in sys.modules and matplotlib.get_backend().lower() == "agg"

    def broken() -> None:
        raise RuntimeError("no fonts")

    monkeypatch.setattr(report, "warm_up_figures", broken)
    assert report.warm_up() is None
