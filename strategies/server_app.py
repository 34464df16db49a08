"""The Flower ServerApp of fedsim.

It loads the server's splits, discovers the clients, runs the configured strategy with
central evaluation on the test split every round, and writes the run directory
(``metrics.jsonl`` one line per round, then ``summary.json``, ``model.pt``,
``report.md``; the tracker of ``cfg.tracking`` gets the same stream and files).

``make_server_app(cfg, out_dir)`` is used by ``fedsim run``; the module-level ``app``
serves ``flwr run .`` and reads ``config-path``/``overrides``/``out-dir`` from the run config
(see :func:`deployment_out_dir`).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, Context
from flwr.common import log as flwr_log
from flwr.serverapp import Grid, ServerApp

from fedsim import keys
from fedsim.audit.canaries import federation_size
from fedsim.checkpoint import STATE_DIR, ResumePoint
from fedsim.config import Config
from fedsim.data import DatasetBundle
from fedsim.deploy.bindings import BINDINGS_FILE
from fedsim.deploy.confine import run_dir
from fedsim.devices import pick_device
from fedsim.errors import RunError, RunInterruptedError
from fedsim.evaluation import evaluate
from fedsim.models import build_model
from fedsim.progress import RoundProgress
from fedsim.records import EvalResult, RoundRecord
from fedsim.round_log import RoundEntry, RoundLog
from fedsim.rundir import RunWriter
from fedsim.summary import build_summary
from fedsim.tracking import RunStatus
from fedsim.workload import dataset_for, training_sizes
from strategies import flwr_native
from strategies.audit import Auditor, SampleLevelAuditor, UserLevelAuditor, finish_audit
from strategies.background import RoundPipeline
from strategies.base import FedsimStrategy, StrategyContext
from strategies.calibrate import released_state
from strategies.central_dp import CentralDP, fedsim_core
from strategies.directory import ClientDirectory, discover_clients, pooled_directory
from strategies.registry import build_strategy
from strategies.rounds import run_rounds
from strategies.site_eval import SiteEvaluator, released_arrays, site_evaluation_hook

logger = logging.getLogger(__name__)

RoundCallback = Callable[[RoundRecord], None]

#: The app's root (the repository, or the installed FAB under ``flwr run``): relative
#: ``config-path`` entries of the run config are read from here.
APP_DIR = Path(__file__).resolve().parents[1]


def deployment_out_dir(context: Context, cfg: Config) -> Path:
    """Where ``flwr run`` writes the run directory.

    The run config's ``out-dir`` when set, else ``<name>-<flower run id>``, inside the
    runs folder the coordinator declared (``fedsim superlink --runs-dir``, in
    ``FEDSIM_RUNS_DIR``); without one (a local simulation SuperLink) relative to the
    working directory, under ``runs/``. Never an existing folder with files in it
    (:func:`fedsim.deploy.confine.run_dir`).
    """
    given = str(context.run_config.get("out-dir") or "")
    return run_dir(given, f"{cfg.name}-{context.run_id}", _runs_root())


def _runs_root() -> Path | None:
    """The coordinator's declared runs folder (``fedsim superlink --runs-dir``), if any."""
    root = os.environ.get(keys.RUNS_DIR_ENV, "").strip()
    return Path(root) if root else None


def _bindings_path() -> Path | None:
    """Where the coordinator remembers which node holds which client id."""
    root = _runs_root()
    return None if root is None else root / BINDINGS_FILE


def run_server(
    grid: Grid,
    cfg: Config,
    out_dir: str | Path,
    on_round: RoundCallback | None = None,
    node_timeout: float = 300.0,
    seeded: bool = False,
    resume: ResumePoint | None = None,
    stop: threading.Event | None = None,
    pool_size: int | None = None,
) -> dict[str, Any]:
    """Run the whole federation from the server side; returns the summary.

    ``seeded``: the server's secret randomness (central DP's cohorts and noise) comes from
    the root seed — for ``fedsim run`` simulations only; otherwise from OS entropy.
    ``resume``: continue an interrupted run from its last checkpoint
    (:mod:`fedsim.checkpoint`). ``stop``: set it to end the run within a second, after
    the last completed round's checkpoint (raises :class:`RunInterruptedError`).
    ``pool_size``: the simulation's virtual clients share this many nodes
    (:func:`strategies.directory.pooled_directory`); ``None``: one node per client, asked
    for its id (deployment).
    """
    started = time.perf_counter()
    writer = RunWriter(out_dir, cfg, resume=resume)
    # round r's evaluation, metrics line and checkpoint run while round r + 1 trains
    # (strategies.background)
    pipeline = RoundPipeline()
    status: RunStatus = "FAILED"  # how the tracked run ends (fedsim.tracking)
    try:
        bundle = dataset_for(cfg.data, cfg.seed)
        device = pick_device()
        model = build_model(cfg.model.name, bundle.input_shape, bundle.num_classes, seed=cfg.seed)
        if pool_size is None:
            directory = discover_clients(
                grid, federation_size(cfg), node_timeout, stop, _bindings_path()
            )
        else:
            directory = pooled_directory(
                grid, pool_size, federation_size(cfg), _server_sizes(cfg), node_timeout, stop
            )
        if seeded:  # a simulation: note its Ray processes for a resume after a crash
            from fedsim.procs import record

            record(writer.dir / STATE_DIR)
        log = RoundLog()
        # the strategy Flower runs (maybe a central-DP wrapper), and the fedsim one inside
        outer = build_strategy(StrategyContext(cfg, directory, log, bundle), seeded=seeded)
        strategy = fedsim_core(outer)
        auditor = _auditor(cfg, model, seeded)
        if isinstance(auditor, SampleLevelAuditor):
            strategy.reply_observers.append(auditor.on_accepted)
        evaluations: dict[int, EvalResult] = {}
        earlier_seconds = 0.0
        released = copy.deepcopy(model)  # the model the server evaluates and releases

        def release(state: Mapping[str, Any]) -> torch.nn.Module:
            """``released`` holding ``state`` as released (``strategy.calibrate``)."""
            released.load_state_dict(released_state(cfg, released, state, bundle))
            return released

        if resume is None:
            evaluations[0] = evaluate(release(model.state_dict()), bundle.test, device)
            writer.log_initial(evaluations[0])
            if on_round is not None:  # round 0: the initial model, where the curves start
                on_round(RoundRecord(round=0, test=evaluations[0]))
            first_round = 1
        else:
            import torch

            model.load_state_dict(torch.load(resume.model_path, weights_only=True))
            evaluations = resume.evaluations()
            log.restore(resume.entries())
            state = resume.checkpoint.strategy
            outer.restore_state(state["strategy"])  # type: ignore[attr-defined]
            if auditor is not None:
                numpy_model = {k: v.numpy() for k, v in model.state_dict().items()}
                auditor.restore_state(state["audit"], numpy_model)
            earlier_seconds = resume.checkpoint.wall_seconds
            first_round = resume.round + 1
            logger.warning("resuming %s after round %d", writer.dir, resume.round)
        round_clock = [time.perf_counter()]
        eval_model = copy.deepcopy(model)  # the background's own model

        def finish_round(
            server_round: int,
            weights: dict[str, torch.Tensor],
            entry: RoundEntry,
            seconds: float,
            state: dict[str, Any],
        ) -> None:
            eval_model.load_state_dict(weights)
            if cfg.save_checkpoints:
                writer.save_checkpoint(server_round, eval_model.state_dict())
            result = evaluate(release(eval_model.state_dict()), bundle.test, device)
            evaluations[server_round] = result
            record = RoundRecord(
                round=server_round,
                test=result,
                sampled=entry.sampled,
                selected=entry.selected,
                clients=entry.clients,
                seconds=seconds,
                selection_epsilon=entry.selection_epsilon,
                site_evaluation=entry.site_evaluation,
            )
            writer.append_round(record)
            wall = earlier_seconds + time.perf_counter() - started
            writer.write_state(
                server_round, eval_model.state_dict(), state, wall, evaluations.get(0)
            )
            if on_round is not None:
                on_round(record)

        def after_round(server_round: int, arrays: ArrayRecord) -> None:
            if isinstance(auditor, UserLevelAuditor):
                auditor.on_release(arrays)
            now = time.perf_counter()
            seconds, round_clock[0] = now - round_clock[0], now
            state = {  # the strategy's state now, before the next round changes it
                "strategy": outer.export_state(),  # type: ignore[attr-defined]
                "audit": None if auditor is None else auditor.export_state(),
            }
            weights = arrays.to_torch_state_dict()  # decoded here: see RoundPipeline
            pipeline.submit(
                finish_round, server_round, weights, log.entry(server_round), seconds, state
            )

        final = run_rounds(
            outer,
            grid,
            ArrayRecord(model.state_dict()),
            range(first_round, cfg.rounds + 1),
            cfg.strategy.round_timeout,
            after_round,
            outer.can_continue,  # type: ignore[attr-defined]
            stop,
            _site_hook(cfg, grid, directory, log, bundle, strategy, model, stop),
        )
        pipeline.close()  # the last round's line and checkpoint
        writer.save_model(release(final.to_torch_state_dict()).state_dict())
        valuations, valuation_section = None, None
        if strategy.rewards is not None:
            strategy.rewards.write_csv(writer.dir)
            valuations, valuation_section = strategy.rewards.summaries(_true_sizes(cfg, directory))
        audit = None
        if auditor is not None:
            ledger = (
                outer.ledger
                if isinstance(outer, CentralDP)
                else strategy.client_ledgers.get(cfg.audit.client)
            )
            audit = finish_audit(cfg, auditor, ledger)
            writer.write_audit(audit.to_json())
        robustness = None
        if cfg.robustness.evaluate.enabled:  # on the saved final model, before the summary
            from fedsim.robustness.evaluate import evaluate_run, summary_scalars

            robustness = summary_scalars(evaluate_run(writer.dir))
        summary = build_summary(
            cfg,
            evaluations,
            log.client_records(),
            directory.num_examples,
            directory.client_ids,
            wall_seconds=earlier_seconds + time.perf_counter() - started,
            selection_epsilon=log.selection_epsilons(),
            central_epsilon=outer.epsilon() if isinstance(outer, CentralDP) else None,
            valuations=valuations,
            valuation_section=valuation_section,
            audit=None if audit is None else audit.summary_scalars(),
            robustness=robustness,
            site_evaluations=log.site_evaluations(),
        )
        writer.write_summary(summary)  # the one write of summary.json
        from fedsim.report import write_report_safely

        write_report_safely(writer.dir)  # logs (never raises): the run directory is the result
        status = "FINISHED"
        return summary.to_json()
    except (RunInterruptedError, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        try:  # a pending round's line and checkpoint, even on errors
            pipeline.close()
        except Exception:  # the error in flight is the one to report
            logger.exception("the last round's evaluation or checkpoint failed")
        writer.close(status)  # then the tracker keeps the run's files (report.md too)


def _site_hook(
    cfg: Config,
    grid: Grid,
    directory: ClientDirectory,
    log: RoundLog,
    bundle: DatasetBundle,
    strategy: FedsimStrategy,
    model: torch.nn.Module,
    stop: threading.Event | None,
) -> Callable[[int, ArrayRecord], None] | None:
    """The federated evaluation of the rounds (``evaluation.federated``; else ``None``):
    :mod:`strategies.site_eval`; each release's ledger goes to the strategy's ledgers."""
    if not cfg.evaluation.federated:
        return None
    evaluator = SiteEvaluator(
        cfg, directory, log, bundle.num_classes, strategy.client_ledgers.__setitem__
    )
    release = released_arrays(cfg, copy.deepcopy(model), bundle)
    return site_evaluation_hook(cfg, grid, evaluator, release, stop)


def _auditor(cfg: Config, model: torch.nn.Module, seeded: bool) -> Auditor | None:
    """The run's privacy auditor (``audit.enabled``), watching what the server sees."""
    if not cfg.audit.enabled:
        return None
    if not seeded:
        raise RunError(
            "audit.enabled runs in fedsim run / fedsim audit simulations only (its canaries "
            "are simulated clients or records); disable it for a deployment"
        )
    if cfg.dp.mode == "central":
        initial = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        return UserLevelAuditor(cfg, initial)
    trainable = {
        k: v.detach().cpu().numpy() for k, v in model.named_parameters() if v.requires_grad
    }
    return SampleLevelAuditor(cfg, trainable)


def _partition_sizes(cfg: Config) -> dict[int, int]:
    """The simulated clients' training-set sizes, from the seed (canary clients have
    none): their partitions without the held-out splits of federated evaluation."""
    return training_sizes(cfg)


def _server_sizes(cfg: Config) -> dict[int, int]:
    """The simulated clients' sizes as the server may know them: what a dedicated node
    would have answered (nothing when sizes are private)."""
    return {} if cfg.hides_client_size else _partition_sizes(cfg)


def _true_sizes(cfg: Config, directory: ClientDirectory) -> dict[int, int]:
    """Clients' sizes for the simulation's ground truth (clean fractions): as reported,
    or — where clients keep them private — the simulated partitions' sizes."""
    if len(directory.num_examples) == len(directory.client_ids):
        return dict(directory.num_examples)
    sizes = _partition_sizes(cfg)
    return {cid: sizes[cid] for cid in directory.client_ids if cid in sizes}


def log_progress(cfg: Config) -> RoundCallback:
    """A round callback that logs each round's progress line
    (:class:`fedsim.progress.RoundProgress`, with its ETA) at INFO.

    It logs on Flower's logger: under ``flwr run`` the ServerApp's process has no logging
    configured but Flower's, whose handler is what ``flwr run --stream`` and ``flwr log``
    show, so the deployment's log has the same lines as ``fedsim run``'s stderr.
    """
    lines = RoundProgress(cfg)

    def emit(record: RoundRecord) -> None:
        flwr_log(logging.INFO, lines.line(record))

    return emit


def make_server_app(
    cfg: Config | None = None,
    out_dir: str | Path | None = None,
    on_round: RoundCallback | None = None,
    on_summary: Callable[[dict[str, Any]], None] | None = None,
    *,
    seeded_noise: bool = False,
    resume: ResumePoint | None = None,
    stop: threading.Event | None = None,
    pool_size: int | None = None,
) -> ServerApp:
    """A ServerApp for ``cfg``; with ``None`` the config comes from ``context.run_config``.

    ``on_round`` is called with each round's record (default: :func:`log_progress`, as
    under ``flwr run``), ``on_summary`` with the final summary;
    ``seeded_noise`` only for ``fedsim run`` simulations, and ``pool_size`` (virtual
    clients on that many nodes) with it (see :func:`run_server`).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        # `flwr run .` (no cfg): checks, header, report and final line (strategies.flwr_native)
        run_cfg = cfg if cfg is not None else flwr_native.load_config(context, APP_DIR)
        target = out_dir or deployment_out_dir(context, run_cfg)
        if cfg is None:
            flwr_native.start(grid, run_cfg, target)
        summary = run_server(
            grid,
            run_cfg,
            str(target),
            on_round if on_round is not None else log_progress(run_cfg),
            seeded=seeded_noise,
            resume=resume,
            stop=stop,
            pool_size=pool_size,
        )
        if on_summary is not None:
            on_summary(summary)
        if cfg is None:
            flwr_native.finish(run_cfg, target, summary)

    return app


#: ServerApp for ``flwr run .`` (see ``[tool.flwr.app.components]`` in pyproject.toml).
app = make_server_app()
