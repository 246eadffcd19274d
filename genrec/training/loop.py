"""One training loop for every model, built on accelerate: the recipe ``setup`` -> ``fit`` -> ``test`` ->
``make_record`` (``train(cfg)`` runs the four).

``train(cfg)`` reads the data, builds the model's inputs (semantic IDs for generative models), trains with
early stopping on the validation metric, checkpoints (model, optimiser, scheduler, RNG, data position) after each
epoch, resumes a killed run from its last checkpoint, evaluates the best weights on the test split and writes a
result record. The same function runs under ``python`` and ``accelerate launch`` (CPU fp32, GPU bf16, DDP/FSDP).
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import ExperimentConfig, save_config, to_dict
from ..console import interactive
from ..io import torch_load
from ..data import EvalDataset, Split, collate, load_dataset
from ..evaluation import evaluate
from ..evaluation.evaluate import PARTIAL_GLOB
from .distributed import gathered, load_full_state_dict, trainable_state
from ..models import ModelContext, build_model
from ..data.samplers import BucketShuffle, EpochShuffle
from .checkpoint import Checkpointer, RunLock
from .clock import RunClock
from .inputs import build_context, check_inputs, input_fingerprints, sids_fields
from .naming import _flatten, run_name
from .optim import build_optimizer
from .records import command_line, device_description, git_commit, now_utc, token_fields, write_record
from .status import log_session, read_sessions
from .stop import NonFiniteLoss, StopSignal, TrainingStopped

log = logging.getLogger(__name__)
logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per checkpoint file is noise


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    return os.path.isfile(netrc) and "api.wandb.ai" in open(netrc).read()


def _trackers(cfg: ExperimentConfig) -> list[str]:
    """Tensorboard always; wandb when installed: offline unless the user is logged in (or sets WANDB_MODE)."""
    out = []
    for name in cfg.train.trackers:
        if name == "wandb":
            try:
                import wandb  # noqa: F401
            except ImportError:
                log.debug("wandb is not installed; logging to tensorboard only (pip install 'genrec[wandb]')")
                continue
            if "WANDB_MODE" not in os.environ and not _wandb_logged_in():
                os.environ["WANDB_MODE"] = "offline"
        out.append(name)
    return out


def check_cutoffs(cfg: ExperimentConfig, num_items: int) -> None:
    """``eval.ks`` must leave items out of the list: Recall@K with K >= N is 1.0 whatever the model does."""
    big = [k for k in cfg.eval.ks if k >= num_items]
    if big:
        raise ValueError(f"eval.ks={list(cfg.eval.ks)}: K={big[0]} is not below the {num_items} items of "
                         f"{cfg.data.name} (Recall@K would be 1.0 for any model); use smaller cut-offs")


def _flat(d: dict) -> dict:
    """Nested config -> {"train.lr": 0.001, ...} with lists as strings (what tensorboard's hparams accept)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in _flatten(d).items()}


def _eval_users(n: int, max_users: int, seed: int) -> np.ndarray | None:
    if not max_users or max_users >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=max_users, replace=False))


def _precision(tc) -> str:
    """``train.precision`` with "auto" resolved: bf16 on a GPU, fp32 ("no") on CPU."""
    return tc.precision if tc.precision != "auto" else ("bf16" if torch.cuda.is_available() else "no")


def _eval_loader(cfg: ExperimentConfig, split: Split, num_users: int, accelerator: Accelerator, collate_fn,
                 split_name: str, max_users: int) -> DataLoader:
    """The users of ``split_name`` (a fixed random subset when ``max_users`` > 0), sharded across processes."""
    ds = EvalDataset(split, split_name, _eval_users(num_users, max_users, cfg.eval.subset_seed),
                     with_seen=cfg.eval.exclude_history and cfg.eval.exclude_scope == "all")
    return accelerator.prepare_data_loader(DataLoader(ds, batch_size=cfg.eval.batch_size, collate_fn=collate_fn,
                                                      num_workers=cfg.data.num_workers))


def _evaluate_splits(cfg: ExperimentConfig, model, split: Split, data, accelerator: Accelerator, collate_fn,
                     partial_dir: str | None = None, weights: dict | None = None) -> dict:
    """{split: metrics} for every split in ``cfg.eval.splits`` (each on ``cfg.eval.max_users`` users).

    With ``partial_dir`` each split keeps its finished batches there (``genrec.evaluation.evaluate.PartialEval``),
    keyed by ``weights`` (what identifies the evaluated weights) and the ``eval`` config, so an interrupted
    evaluation resumes.
    """
    results = {}
    for name in cfg.eval.splits:
        loader = _eval_loader(cfg, split, data.num_users, accelerator, collate_fn, name, cfg.eval.max_users)
        key = {"split": name, "weights": weights, "eval": to_dict(cfg)["eval"]}
        results[name] = evaluate(model, loader, accelerator, cfg.eval.ks, data.num_items, desc=name,
                                 progress=cfg.train.progress, exclude_history=cfg.eval.exclude_history,
                                 partial_dir=partial_dir, partial_key=key)
    return results


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def protocol_name(ec) -> str:
    """The candidate set of an evaluation: ``all_items``, ``exclude_history`` or ``exclude_history_window``."""
    if not ec.exclude_history:
        return "all_items"
    return "exclude_history" if ec.exclude_scope == "all" else "exclude_history_window"


def _record_head(cfg: ExperimentConfig, results: dict, commit: str) -> dict:
    """The fields every result record starts with: what was evaluated, under which protocol, and the metrics."""
    main_split = "test" if "test" in results else cfg.eval.splits[-1]
    return {
        "dataset": cfg.data.name,
        "model": cfg.model.kind,
        "git_commit": commit,
        "split": main_split,
        "protocol": protocol_name(cfg.eval),  # candidates ranked
        "metrics": results[main_split],
        "all_splits": results,
        "users_evaluated": results[main_split]["users"],
        "user_subset": cfg.eval.max_users or None,
        "train_on_valid": cfg.data.train_on_valid,  # HSTU's protocol: trained through the validation item
    }


@dataclass
class Run:
    """Everything ``setup`` builds and ``fit`` / ``test`` / ``make_record`` use (one run of one config)."""

    cfg: ExperimentConfig
    name: str
    run_dir: str
    accelerator: Accelerator
    data: object
    split: Split
    ctx: ModelContext
    model: torch.nn.Module
    precision: str
    commit: str
    t0: float
    lock: RunLock
    optimizer: object = None
    scheduler: object = None
    train_loader: object = None
    valid_loader: object = None
    ckpt: Checkpointer | None = None
    state: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    steps_per_epoch: int = 0

    @property
    def best_path(self) -> str:
        return os.path.join(self.run_dir, "best_model.pt")


def train(cfg: ExperimentConfig) -> dict:
    """Train ``cfg.model`` on ``cfg.data``, early-stop on validation, test the best weights, write the record.

    The recipe (torchtune's shape): ``setup`` -> ``fit`` -> ``test`` -> ``make_record``.

    Returns:
        The result record (also written to ``<results_dir>/runs/<dataset>/<run name>.json``).
    """
    run = setup(cfg)
    fit(run)
    return make_record(run, test(run))


def setup(cfg: ExperimentConfig) -> Run:
    """Accelerator, run folder (locked), data, semantic IDs, model, optimiser, loaders, and the resumed state."""
    t0, commit = time.time(), git_commit()  # the code this run started with (a record is written at the end)
    tc = cfg.train
    precision = _precision(tc)
    name = run_name(cfg)
    run_dir = os.path.join(cfg.output_dir, name)
    accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=tc.grad_accum,
                              log_with=_trackers(cfg) or None, project_dir=run_dir, dynamo_plugin=_dynamo(tc))
    if tc.threads and accelerator.device.type == "cpu":
        torch.set_num_threads(tc.threads)
    set_seed(cfg.seed)
    lock = RunLock(run_dir)
    if accelerator.is_main_process:
        lock.acquire()  # before anything is written to the folder
        save_config(cfg, os.path.join(run_dir, "config.yaml"))

    data = load_dataset(cfg.data)
    check_cutoffs(cfg, data.num_items)
    ctx = build_context(cfg, data, accelerator)
    set_seed(cfg.seed)  # the model's init depends on the seed alone, not on whether the ID artifact was cached
    model = build_model(cfg, ctx)
    split = Split(data, cfg.data.max_history, cfg.data.train_on_valid, times_for=model.times_for)
    model.static_shapes = tc.compile
    run = Run(cfg, name, run_dir, accelerator, data, split, ctx, model, precision, commit, t0, lock)
    train_ds = model.train_dataset(split)
    run.steps_per_epoch = math.ceil(len(train_ds) / (tc.batch_size * accelerator.num_processes * tc.grad_accum))
    optimizer, run.scheduler = build_optimizer(model, tc, tc.max_steps or run.steps_per_epoch * tc.epochs)
    if tc.bucket_by_length:
        if not hasattr(train_ds, "lengths"):
            raise ValueError(f"train.bucket_by_length=true: the {type(train_ds).__name__} of model.kind="
                             f"{cfg.model.kind!r} gives no row lengths; set train.bucket_by_length=false")
        sampler = BucketShuffle(train_ds.lengths(), tc.batch_size, cfg.seed)
    else:
        sampler = EpochShuffle(len(train_ds), cfg.seed)
    # The loader's own generator: creating an iterator draws a base seed from it, which from the global RNG would
    # shift the dropout masks of a run resumed mid-epoch by one draw (its iterator is created after the restore)
    train_loader = DataLoader(train_ds, batch_size=tc.batch_size, sampler=sampler, collate_fn=model.collate,
                              num_workers=cfg.data.num_workers, generator=torch.Generator().manual_seed(cfg.seed))
    run.model, run.optimizer, run.train_loader = accelerator.prepare(model, optimizer, train_loader)
    # The schedule counts optimiser steps; we step it ourselves (accelerate's wrapper would step it once per process).
    accelerator.register_for_checkpointing(run.scheduler)
    run.valid_loader = _eval_loader(cfg, split, data.num_users, accelerator, collate, "valid",
                                    cfg.eval.valid_max_users or cfg.eval.max_users)
    n_params = sum(p.numel() for p in accelerator.unwrap_model(run.model).parameters())
    accelerator.print(f"run {name}: {cfg.model.kind} on {cfg.data.name} ({data.num_users} users, {data.num_items} "
                      f"items, {data.source or 'generated'}), {n_params / 1e6:.2f}M parameters, precision "
                      f"{precision}, {accelerator.num_processes} process(es), {run.steps_per_epoch} steps/epoch; "
                      f"folder {run_dir}")

    run.ckpt = Checkpointer(run_dir, accelerator)
    run.inputs = input_fingerprints(data, ctx, times=bool(model.times_for))
    run.state = {"epoch": 0, "batch_in_epoch": 0, "global_step": 0, "best": -1.0, "best_epoch": -1, "bad_evals": 0,
                 "history": [], "done": False, "train_seconds": 0.0, "inputs": run.inputs,
                 "step_seconds": 0.0, "real_tokens": 0, "computed_tokens": 0}
    if accelerator.is_main_process:
        run.ckpt.recover()
    accelerator.wait_for_everyone()
    if tc.resume and run.ckpt.exists():
        check_inputs(run_dir, run.ckpt.state(), run.inputs)  # before loading any weights: other data never resumes
        run.ckpt.check_files(accelerator.num_processes)
        run.state = run.ckpt.load()
        accelerator.print(f"resumed {run_dir} at epoch {run.state['epoch']} batch {run.state['batch_in_epoch']}")
        if tc.finish and not run.state["done"]:
            run.state.update(done=True, finished_by_user_at_epoch=run.state["epoch"])
            accelerator.print("train.finish=true: testing the best weights so far")
        elif _extendable(run.state, tc):
            run.state["done"] = False  # it stopped at its epoch budget only; a larger train.epochs continues it
            accelerator.print(f"continuing {run_dir} from epoch {run.state['epoch']} to train.epochs={tc.epochs}")
    if accelerator.is_main_process:  # who trained which steps, where: ``genrec status`` reads it
        log_session(run_dir, {"date": now_utc(), "command": command_line(), "git_commit": commit,
                              "device": device_description(accelerator.device),
                              "processes": accelerator.num_processes, "precision": precision,
                              "steps_per_epoch": run.steps_per_epoch, "epochs": tc.epochs,
                              "start_epoch": run.state["epoch"], "start_step": run.state["global_step"],
                              "start_step_seconds": round(run.state.get("step_seconds", 0.0), 1),
                              "start_real_tokens": run.state.get("real_tokens", 0)})  # this session's own pace
    # One wandb project for all runs, each named by its config delta and seed; tensorboard writes under run_dir.
    accelerator.init_trackers("genrec", config=_flat(to_dict(cfg)),
                              init_kwargs={"wandb": {"name": name, "dir": run_dir}})
    return run


def _dynamo(tc):
    """accelerate's dynamo plugin for ``train.compile`` (inductor, static shapes), else None (accelerate's default:
    the environment's ``ACCELERATE_DYNAMO_*`` settings). ``prepare`` compiles the model's forward; evaluation calls
    the unwrapped module's ``score`` / ``recommend`` eagerly (their shapes change with every beam step)."""
    if not tc.compile:
        return None
    from accelerate.utils import TorchDynamoPlugin

    return TorchDynamoPlugin(backend="inductor", mode=tc.compile_mode, dynamic=False)


def _extendable(state: dict, tc) -> bool:
    """A finished run that ran out of epochs (no early stop, no max_steps, no train.finish) and now has more."""
    return (state["done"] and state["epoch"] < tc.epochs and state["bad_evals"] < tc.patience
            and state.get("finished_by_user_at_epoch") is None
            and not (tc.max_steps and state["global_step"] >= tc.max_steps))


def fit(run: Run) -> None:
    """Epochs until early stop, ``train.epochs`` or ``train.max_steps``; validation, best weights, checkpoints."""
    clock = RunClock()  # running seconds: a stopped process (kill -STOP, Ctrl-Z) does not count its pause
    try:
        _fit(run, clock)
    finally:
        clock.close()


def _fit(run: Run, clock: RunClock) -> None:
    tc, state, accelerator, model = run.cfg.train, run.state, run.accelerator, run.model
    optimizer, scheduler = run.optimizer, run.scheduler
    seg = dict(zip(("t", "paused"), clock.read()))
    tokens = _TokenMeter(run, clock)

    def save(**changes):
        state.update(changes)
        now, paused = clock.read()
        state["train_seconds"] += now - seg["t"]
        state["paused_seconds"] = state.get("paused_seconds", 0.0) + paused - seg["paused"]
        seg.update(t=now, paused=paused)
        run.ckpt.save(state)

    model.train()
    with StopSignal(accelerator, sync_every=tc.log_every or 50) as stop:  # SIGTERM: checkpoint, then stop
        while not state["done"] and state["epoch"] < tc.epochs:
            epoch = state["epoch"]
            run.train_loader.set_epoch(epoch)  # accelerate's loader passes it on to the sampler
            loader = run.train_loader
            skip = state["batch_in_epoch"]
            batches = accelerator.skip_first_batches(loader, skip) if skip else loader
            bar = tqdm(batches, desc=f"epoch {epoch + 1}", initial=skip, total=len(loader),  # epochs count from 1
                       disable=not (tc.progress and accelerator.is_local_main_process and interactive()), leave=False)
            running, n_running = 0.0, 0  # a device tensor between logs: reading it back is the step's only host sync
            since = state["global_step"] + 1  # the first step summed in ``running``
            tokens.start()
            for i, batch in enumerate(bar, start=skip):
                tokens.add(batch)
                with accelerator.accumulate(model):
                    out = model(batch)
                    accelerator.backward(out.loss)
                    if accelerator.sync_gradients and tc.grad_clip > 0:
                        accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    optimizer.step()
                    if accelerator.sync_gradients:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                running, n_running = running + out.loss.detach(), n_running + 1
                if accelerator.sync_gradients:
                    state["global_step"] += 1
                    if tc.log_every and state["global_step"] % tc.log_every == 0:
                        _check_finite(run, running, since)
                        loss = float(running) / n_running
                        running, n_running, since = 0.0, 0, state["global_step"] + 1
                        bar.set_postfix(loss=f"{loss:.4f}")
                        accelerator.log({"train/loss": loss, "train/lr": scheduler.get_last_lr()[0]},
                                        step=state["global_step"])
                        if bar.disable:  # no progress bar (a log file, train.progress=false): one line per log
                            accelerator.print(f"step {state['global_step']} (epoch {epoch + 1}, batch {i + 1}/"
                                              f"{len(loader)}): loss {loss:.4f}, lr {scheduler.get_last_lr()[0]:.2e}")
                    stopping = stop.requested(state["global_step"])
                    if stopping or (tc.checkpoint_steps and state["global_step"] % tc.checkpoint_steps == 0):
                        if n_running:
                            _check_finite(run, running, since)
                        tokens.flush()
                        save(batch_in_epoch=i + 1)
                    if stopping:
                        _stop(run, stop.signum)
                    if tc.max_steps and state["global_step"] >= tc.max_steps:
                        state["done"] = True
                        break
            if n_running:  # before the validation and the epoch's checkpoint
                _check_finite(run, running, since)
            tokens.flush(report_epoch=epoch + 1)
            state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
            validates = (epoch + 1) % tc.eval_every == 0 or state["done"] or epoch + 1 == tc.epochs
            if validates and not run.cfg.data.train_on_valid:  # trained-on validation targets select nothing
                _validate(run, epoch + 1)
            if state["epoch"] == tc.epochs:
                state["done"] = True
            if state["done"] and run.cfg.data.train_on_valid:  # no validation selects: the last weights are tested
                _save_tested_weights(run)
                state["best_epoch"] = state["epoch"]
            if (epoch + 1) % tc.checkpoint_every == 0 or state["done"]:
                save()
        if not state["done"]:  # ran out of epochs: mark the run finished so a re-run only re-evaluates
            save(done=True)
        if stop.requested(0):  # the signal came during the last validation: trained and saved, the test comes later
            _stop(run, stop.signum)


def _check_finite(run: Run, running: torch.Tensor, since: int) -> None:
    """Raise ``NonFiniteLoss`` when the summed training loss of steps ``since``..now is NaN or infinite on any
    process (the same answer on every process, so none waits for another), before a log line, a checkpoint or a
    validation keeps such weights. One read of ``running``, at the loop's existing sync points."""
    acc = run.accelerator
    bad = (~torch.isfinite(torch.as_tensor(running, dtype=torch.float, device=acc.device))).float()
    if acc.num_processes > 1:
        bad = acc.reduce(bad, reduction="sum")
    if not bool(bad):
        return
    last = run.state["global_step"]
    acc.end_training()
    if acc.is_main_process:
        run.lock.release()
    raise NonFiniteLoss(since, last, run.run_dir, run.ckpt.state()["global_step"] if run.ckpt.exists() else None)


def _stop(run: Run, signum: int) -> None:
    """End a run stopped by a signal (its checkpoint is written): flush the trackers, free the folder, raise."""
    run.accelerator.end_training()
    if run.accelerator.is_main_process:
        run.lock.release()
    raise TrainingStopped(signum, run.state["global_step"], run.run_dir)


class _TokenMeter:
    """Real vs computed (padded) training tokens and the seconds spent in training steps, kept in the run state
    (``real_tokens``, ``computed_tokens``, ``step_seconds``: a resumed run goes on counting). Counts stay on the
    device between flushes, so a step reads nothing back; a flush sums them over processes."""

    def __init__(self, run: Run, clock: RunClock):
        self.run, self.net, self.clock = run, run.accelerator.unwrap_model(run.model), clock
        self.real = torch.zeros((), dtype=torch.long, device=run.accelerator.device)
        self.computed, self.t = 0, clock()

    def start(self) -> None:
        self.t = self.clock()

    def add(self, batch: dict) -> None:
        counts = self.net.token_counts(batch)
        if counts is not None:
            self.real += counts[0].to(self.real.device)
            self.computed += counts[1]

    def flush(self, report_epoch: int = 0) -> None:
        """Move the counts into the state (every process calls it: the sum over processes is collective)."""
        state, accelerator = self.run.state, self.run.accelerator
        now = self.clock()
        state["step_seconds"] = state.get("step_seconds", 0.0) + now - self.t
        self.t = now
        counts = torch.stack([self.real, torch.tensor(self.computed, device=self.real.device)])
        real, computed = accelerator.reduce(counts, "sum").tolist()
        state["real_tokens"] = state.get("real_tokens", 0) + real
        state["computed_tokens"] = state.get("computed_tokens", 0) + computed
        self.real.zero_()
        self.computed = 0
        if report_epoch and state["real_tokens"]:
            accelerator.print(f"epoch {report_epoch}: {_token_summary(state)}")


def _token_summary(state: dict) -> str:
    f = token_fields(state)
    return (f"{f['real_tokens']:,} real tokens so far, {f['real_tokens_per_s']} real tokens/s in training steps, "
            f"computed/real {f['padding_ratio']}")


def _validate(run: Run, epoch: int) -> None:
    """One validation: history, best weights (every rank takes part: FSDP gathers shards), early stopping."""
    cfg, tc, state, accelerator = run.cfg, run.cfg.train, run.state, run.accelerator
    metrics = evaluate(run.model, run.valid_loader, accelerator, cfg.eval.ks, run.data.num_items,
                       desc="valid", progress=tc.progress, exclude_history=cfg.eval.exclude_history)
    value = metrics[tc.monitor]
    accelerator.log({f"valid/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                    step=state["global_step"])
    state["history"].append({"epoch": epoch, "step": state["global_step"], **metrics})
    if value > state["best"]:
        state.update(best=value, best_epoch=epoch, bad_evals=0)
        _save_tested_weights(run)
    else:
        state["bad_evals"] += 1
    accelerator.print(f"epoch {epoch}: valid {tc.monitor}={value:.4f} (best {state['best']:.4f} @ "
                      f"{state['best_epoch']})")
    if state["bad_evals"] >= tc.patience:
        accelerator.print(f"early stop: no improvement in {tc.patience} validations")
        state["done"] = True


def _save_tested_weights(run: Run) -> None:
    """``best_model.pt``: the weights ``test`` and ``genrec eval`` load (every rank takes part: FSDP gathers)."""
    weights = run.accelerator.get_state_dict(run.model)  # gathered on the main process under FSDP
    if run.accelerator.is_main_process:
        # evaluations of the weights replaced (escaped: a run name may hold brackets, e.g. eval.splits=[test])
        for stale in glob.glob(os.path.join(glob.escape(run.run_dir), PARTIAL_GLOB)):
            os.remove(stale)
        tmp = f"{run.best_path}.tmp"  # atomic: a kill mid-write never leaves torn best weights
        torch.save(trainable_state(run.accelerator.unwrap_model(run.model), weights), tmp)
        os.replace(tmp, run.best_path)


def test(run: Run) -> dict:
    """The best weights on ``eval.splits`` (full splits, or the configured user subset): {split: metrics}.

    Finished batches are kept in the run folder every few minutes, so a test killed midway (hours of beam search on
    a CPU) resumes where it was when the run is started again.
    """
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    weights = {"global_step": run.state.get("global_step"), "best_epoch": run.state.get("best_epoch")}
    if os.path.exists(run.best_path):
        load_full_state_dict(run.model, accelerator.unwrap_model(run.model), torch_load(
            run.best_path, "best weights", "delete the run folder to train again", map_location="cpu"))
        weights = {"sha256": _file_sha256(run.best_path)}  # the tested weights themselves (a second of hashing)
    # the inputs need no key here: a run resumes only on the data and semantic IDs of its checkpoint (check_inputs)
    results = _evaluate_splits(run.cfg, run.model, run.split, run.data, accelerator, collate,
                               partial_dir=run.run_dir, weights=weights)  # a killed test resumes its batches
    accelerator.log({f"final/{s}/{k}": v for s, m in results.items() for k, v in m.items()
                     if isinstance(v, (int, float))})  # trackers take numbers (not eval_commits)
    accelerator.end_training()
    return results


def make_record(run: Run, results: dict) -> dict:
    """The result record, written by the main process to results/ and the run folder; releases the run lock."""
    cfg, state, accelerator = run.cfg, run.state, run.accelerator
    net = accelerator.unwrap_model(run.model)
    record = {
        **_record_head(cfg, results, run.commit),
        "run_name": run.name,
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "finished_by_user_at_epoch": state.get("finished_by_user_at_epoch"),  # train.finish=true: not converged
        # trained to its end (early stop, epochs or max_steps); False for train.finish=true on an unfinished run
        "training_finished": state.get("finished_by_user_at_epoch") is None,
        "global_steps": state["global_step"],
        "train_seconds": round(state["train_seconds"], 1),  # running time: pauses of the process are left out
        "paused_seconds": round(state.get("paused_seconds", 0.0), 1),  # and counted here (kill -STOP, Ctrl-Z)
        **token_fields(state),  # real (unpadded) training tokens, computed/real, real tokens/s of the steps
        "wall_seconds": round(time.time() - run.t0, 1),  # this start's; train_seconds sums every start
        **session_facts(run.run_dir),  # how many starts, on which devices and commits
        "num_params": sum(p.numel() for p in net.parameters()),
        "trainable_params": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "processes": accelerator.num_processes,
        "precision": run.precision,
        "device": device_description(accelerator.device),
        "validation_history": state["history"],
        "data_source": run.data.source,
        "inputs": run.inputs,
        **sids_fields(run.ctx),
        "config": {k: v for k, v in to_dict(cfg).items()},
    }
    with gathered(run.model):  # every rank takes part; only the main process writes files
        record.update(net.record_extras(run.run_dir, write=accelerator.is_main_process))
    if accelerator.is_main_process:
        path = os.path.join(cfg.results_dir, "runs", cfg.data.name, f"{run.name}.json")
        write_record(path, record)
        write_record(os.path.join(run.run_dir, "result.json"), record)
        accelerator.print(format_metrics(results))
        accelerator.print(f"record: {path}\nrun folder: {run.run_dir}")
        record["path"] = path
        run.lock.release()
    return record


def evaluate_run(run_dir: str, overrides: list[str]) -> dict:
    """Re-evaluate a trained run's ``best_model.pt`` under other ``eval.*`` settings; no training.

    For a protocol or decoding change (``eval.exclude_history``, ``eval.beam_size``, ``eval.max_users``,
    ``eval.splits``, ``eval.ks``) on weights already trained. The record goes to
    ``<results_dir>/runs/<dataset>/<run name>__eval-<hash of the overrides>.json``, names the trained run and carries
    what its folder says of the training (``trained``: epochs, steps, seconds, tokens, parameters, devices).
    """
    from ..config import ConfigError

    bad = [o for o in overrides if not o.startswith(("eval.", "train.threads=", "train.progress=", "results_dir="))]
    if bad:
        raise ConfigError(f"genrec eval: only eval.* (and train.threads, train.progress, results_dir) can change "
                          f"after training; got {bad}")
    from ..predict import load_run

    t0, commit = time.time(), git_commit()
    best = os.path.join(run_dir, "best_model.pt")
    weights = {"sha256": _file_sha256(best)} if os.path.exists(best) else None  # before loading: what is evaluated
    trained = load_run(run_dir, overrides)  # config + overrides, data, IDs, best weights; inputs checked
    cfg, data, finished = trained.cfg, trained.data, trained.finished
    name = cfg.name or os.path.basename(os.path.normpath(run_dir))
    accelerator = Accelerator(mixed_precision=_precision(cfg.train))
    split = Split(data, cfg.data.max_history, cfg.data.train_on_valid, times_for=trained.model.times_for)
    model = accelerator.prepare(trained.model)
    if weights and _file_sha256(best) != weights["sha256"]:  # rewritten while loading (a run still training)
        weights = None
    if weights:  # the data and semantic IDs evaluated on (a folder without a checkpoint has nothing to check them by)
        weights["inputs"] = trained.inputs
    results = _evaluate_splits(cfg, model, split, data, accelerator, collate, partial_dir=run_dir if weights else None,
                               weights=weights)  # a killed re-evaluation resumes its finished batches
    tag = hashlib.sha1(json.dumps(sorted(overrides)).encode()).hexdigest()[:6]
    record = {
        **_record_head(cfg, results, commit),
        "run_name": f"{name}__eval-{tag}",
        "evaluated_run": name,
        "training_finished": finished,  # False: the run was killed or stopped early by hand; tables refuse it
        "eval_overrides": overrides,
        "trained": trained_facts(run_dir, trained.model),  # the run's own record may never be written (tested here)
        "wall_seconds": round(time.time() - t0, 1),
        "processes": accelerator.num_processes,
        "device": device_description(accelerator.device),
        "config": to_dict(cfg),
    }
    if not finished:
        accelerator.print(f"warning: {run_dir} has not finished training; the record says training_finished=false")
    if accelerator.is_main_process:
        record["path"] = write_record(
            os.path.join(cfg.results_dir, "runs", cfg.data.name, f"{record['run_name']}.json"), record)
        accelerator.print(format_metrics(results))
    return record


def trained_facts(run_dir: str, model: torch.nn.Module) -> dict | None:
    """What a run folder says of its training, for the record of ``genrec eval``: the trained run's own record
    holds the same facts, but a run tested on another machine than it trained on (a CPU run, a GPU test) has none.

    None for a folder without a checkpoint.
    """
    path = os.path.join(run_dir, "checkpoint", "trainer_state.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        state = json.load(f)
    return {
        "best_epoch": state.get("best_epoch"),
        "epochs_run": state.get("epoch"),
        "global_steps": state.get("global_step"),
        "train_seconds": round(state.get("train_seconds", 0.0), 1),
        "paused_seconds": round(state.get("paused_seconds", 0.0), 1),
        **token_fields(state),
        "num_params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "validation_history": state.get("history", []),
        **session_facts(run_dir),
    }


def session_facts(run_dir: str) -> dict:
    """A run's starts and resumes (sessions.jsonl): how many, and the devices and commits they ran on."""
    sessions, _ = read_sessions(run_dir)
    return {
        "sessions": len(sessions),
        "devices": sorted({s["device"] for s in sessions if s.get("device")}),
        "git_commits": sorted({s["git_commit"] for s in sessions if s.get("git_commit")}),
    }


def format_metrics(results: dict[str, dict]) -> str:
    keys = [k for k in next(iter(results.values())) if "@" in k and not k.endswith("_se")]
    lines = ["split  " + "  ".join(f"{k:>10}" for k in keys)]
    for s, m in results.items():
        lines.append(f"{s:<6} " + "  ".join(f"{m[k]:>10.4f}" for k in keys))
    return "\n".join(lines)
