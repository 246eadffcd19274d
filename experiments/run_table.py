"""Run a results table: every cell (a config stack) for every seed, then mean ± standard error beside published rows.

    python experiments/run_table.py table2 --dry-run            # print every launch command
    python experiments/run_table.py cpu_table2_beauty --jobs 2  # run what is missing, then write the table
    python experiments/run_table.py table1 --launcher accelerate --cells "TIGER (Beauty)" --seeds 0
    python experiments/run_table.py table2 --report-only        # rebuild results/tables/table2.md from records
    python experiments/run_table.py table1 --smoke              # every cell for 20 steps + 100 users, under smoke/

A table is data (``configs/tables/<name>.yaml``)::

    name: table2
    title: TIGER Table 2, item-ID ablation (Beauty)
    protocol: leave-one-out, history 20, full ranking over all items
    seeds: [0, 1, 2]
    metrics: [recall@5, ndcg@5, recall@10, ndcg@10]
    launcher: accelerate                        # python | accelerate
    accelerate_config: configs/accelerate/single_gpu.yaml
    overrides: [train.progress=false]           # applied to every cell, before the cell's own
    cells:
      Random ID: {configs: [tiger/beauty.yaml, ablations/random_ids.yaml], published: Random ID}
      RQ-VAE: [tiger/beauty.yaml]               # shorthand: just the config stack
    published:
      source: TIGER (Rajput et al., NeurIPS 2023), Table 2
      rows: {Random ID: {recall@5: 0.0296, ...}, RQ-VAE: {...}}

Config paths are relative to the repository or to ``configs/``. Each (cell, seed) is one subprocess
(``python -m genrec train --config ... seed=S`` or ``accelerate launch ... -m genrec train ...``) with its own log
under ``<output_dir>/tables/<table>/``. A cell whose result record already exists (found by
``genrec.training.run_name`` of the resolved config, as the training run names it) is skipped, so an interrupted
table resumes by running the same command. SIGTERM, SIGUSR1, SIGHUP or Ctrl-C to the runner reach every process of
its running cells (each checkpoints and exits) and start no more. A crashed cell is reported as failed and the others go on.
Published numbers live only in the table file and are shown beside ours, labelled as published.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from omegaconf import OmegaConf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout, uninstalled

from genrec.config import ExperimentConfig, load_config

TABLE_KEYS = {"name", "title", "protocol", "seeds", "metrics", "launcher", "accelerate_config", "overrides", "cells",
              "published", "notes"}
CELL_KEYS = {"configs", "overrides", "published"}
LAUNCHERS = ("python", "accelerate")
DEFAULT_METRICS = ["recall@5", "ndcg@5", "recall@10", "ndcg@10"]
SMOKE_STEPS, SMOKE_USERS = 20, 100
SMOKE_OVERRIDES = [f"train.max_steps={SMOKE_STEPS}", "train.epochs=1", f"eval.max_users={SMOKE_USERS}",
                   f"eval.valid_max_users={SMOKE_USERS}", "train.progress=false"]


# ------------------------------------------------------------------------------------------ table file
@dataclass
class Cell:
    label: str
    configs: list[str]
    overrides: list[str] = field(default_factory=list)
    published: str | None = None  # row label under ``published.rows``; defaults to the cell's own label


@dataclass
class Table:
    name: str
    path: str
    title: str = ""
    protocol: str = ""
    notes: str = ""
    seeds: list[int] = field(default_factory=lambda: [0])
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    launcher: str = "python"
    accelerate_config: str = ""
    overrides: list[str] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    source: str = ""  # where the published rows come from
    published: dict[str, dict] = field(default_factory=dict)  # row label -> {metric: value, optional source}


def config_path(path: str, root: str = ".") -> str:
    """``path`` as given if it exists, else under ``<root>/configs/``; raises FileNotFoundError naming both."""
    for candidate in (path, os.path.join(root, path), os.path.join(root, "configs", path)):
        if os.path.isfile(candidate):
            return os.path.relpath(candidate) if not os.path.isabs(path) else candidate
    raise FileNotFoundError(f"config file {path!r} not found (looked in . and configs/)")


def table_path(name: str, root: str = ".") -> str:
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        if os.path.isfile(name):
            return name
        raise FileNotFoundError(f"table file {name!r} does not exist")
    path = os.path.join(root, "configs", "tables", f"{name}.yaml")
    if not os.path.isfile(path):
        have = sorted(f[:-5] for f in os.listdir(os.path.dirname(path))) if os.path.isdir(os.path.dirname(path)) else []
        raise FileNotFoundError(f"no table {name!r}: {path} does not exist; tables here: {have}")
    return path


def load_table(name: str, root: str = ".") -> Table:
    """Read and check a table file: known keys, a launcher we know, and every cell's config files present.

    Raises:
        ValueError: unknown keys, a bad launcher, a cell without configs, a published row that names no metric.
        FileNotFoundError: the table file or one of a cell's config files does not exist (naming the cell).
    """
    path = table_path(name, root)
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a table file is a mapping with keys {sorted(TABLE_KEYS)}")
    unknown = set(raw) - TABLE_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; valid keys: {sorted(TABLE_KEYS)}")
    stem = os.path.splitext(os.path.basename(path))[0]
    published = raw.get("published") or {}
    t = Table(name=raw.get("name", stem), path=path, title=raw.get("title", ""), protocol=raw.get("protocol", ""),
              notes=raw.get("notes", ""), seeds=[int(s) for s in raw.get("seeds", [0])],
              metrics=list(raw.get("metrics", DEFAULT_METRICS)), launcher=raw.get("launcher", "python"),
              accelerate_config=raw.get("accelerate_config", ""), overrides=list(raw.get("overrides", [])),
              source=published.get("source", ""), published=dict(published.get("rows") or {}))
    if t.launcher not in LAUNCHERS:
        raise ValueError(f"{path}: launcher={t.launcher!r} is not one of {list(LAUNCHERS)}")
    if not raw.get("cells"):
        raise ValueError(f"{path}: 'cells' is empty; give at least one label: {{configs: [...]}}")
    for label, spec in raw["cells"].items():
        spec = {"configs": spec} if isinstance(spec, list) else dict(spec or {})
        bad = set(spec) - CELL_KEYS
        if bad or not spec.get("configs"):
            raise ValueError(f"{path}: cell {label!r} needs 'configs' and may have {sorted(CELL_KEYS)}; got {sorted(spec)}")
        try:
            configs = [config_path(c, root) for c in spec["configs"]]
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{path}: cell {label!r}: {e}") from None
        t.cells.append(Cell(str(label), configs, list(spec.get("overrides") or []), spec.get("published")))
    for row, values in t.published.items():
        if not any(m in values for m in t.metrics):
            raise ValueError(f"{path}: published row {row!r} gives none of the table's metrics {t.metrics}")
    return t


# ----------------------------------------------------------------------------------------------- plan
@dataclass
class Job:
    cell: Cell
    seed: int
    cfg: ExperimentConfig
    name: str  # run name, as genrec.training.run_name derives it
    record: str  # where the training run writes its result record
    argv: list[str]
    log: str
    status: str = "pending"  # pending (not run, or stopped by a signal) | done | ran | failed
    returncode: int | None = None
    seconds: float = 0.0


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "cell"


def launch_prefix(launcher: str, accelerate_config: str = "") -> list[str]:
    if launcher == "accelerate":
        return ["accelerate", "launch", *(["--config_file", accelerate_config] if accelerate_config else []),
                "-m", "genrec", "train"]
    return ["python", "-m", "genrec", "train"]


def plan(table: Table, launcher: str | None = None, accelerate_config: str | None = None, seeds: list[int] | None = None,
         cells: list[str] | None = None, extra: list[str] = (), results_dir: str | None = None,
         output_dir: str | None = None) -> list[Job]:
    """One Job per (cell, seed), with its resolved config, run name, record path and launch command.

    Raises:
        ValueError: ``cells`` names a label the table does not have.
        ConfigError: a cell's stack or overrides do not fit the config schema (before anything is launched).
    """
    from genrec.training import run_name  # torch-heavy import, deferred past argument parsing

    launcher = launcher or table.launcher
    prefix = launch_prefix(launcher, accelerate_config if accelerate_config is not None else table.accelerate_config)
    if cells:
        unknown = [c for c in cells if c not in {x.label for x in table.cells}]
        if unknown:
            raise ValueError(f"--cells {unknown} not in {table.name}; cells: {[c.label for c in table.cells]}")
    where = [f"results_dir={results_dir}"] * bool(results_dir) + [f"output_dir={output_dir}"] * bool(output_dir)
    jobs = []
    for cell in table.cells:
        if cells and cell.label not in cells:
            continue
        for seed in seeds if seeds is not None else table.seeds:
            overrides = [*table.overrides, *cell.overrides, *extra, *where, f"seed={seed}"]
            cfg = load_config(cell.configs, overrides)
            name = run_name(cfg)
            argv = [*prefix, *[a for c in cell.configs for a in ("--config", c)], *overrides]
            log = os.path.join(cfg.output_dir, "tables", table.name, f"{slug(cell.label)}__s{seed}.log")
            jobs.append(Job(cell, seed, cfg, name, os.path.join(cfg.results_dir, "runs", cfg.data.name, f"{name}.json"),
                            argv, log))
    return jobs


def missing_data(jobs: list[Job]) -> dict[str, str]:
    """{dataset: path tried} for every dataset the jobs need that is not on this machine."""
    from genrec.data import DATASETS, data_root

    out = {}
    for job in jobs:
        d = job.cfg.data
        reader, folder = DATASETS.get(d.name, ("", ""))
        if (d.reader or reader) == "tiny":
            continue
        rel = d.path or folder
        path = rel if os.path.isabs(rel) else os.path.join(data_root(d), rel)
        if not rel or not os.path.exists(path):
            out[d.name] = path
    return out


# ------------------------------------------------------------------------------------------------ run
# SIGTERM / SIGUSR1 to the runner (a scheduler's preemption, `timeout`) go on to the cells it launched: each saves a
# checkpoint at the step in progress and exits, no further cell starts, and the same command resumes the table.
# Without this the cells would outlive their runner and be killed later without a checkpoint. Each cell runs in a
# process group of its own and the signal goes to the whole group, so it reaches the training processes behind a
# launcher (`accelerate launch` dies on SIGTERM without passing it on); the runner then waits for the whole group,
# not only the launcher, to be gone. Ctrl-C and a closed terminal (SIGINT, SIGHUP) reach the cells as SIGTERM: they
# checkpoint too. A second Ctrl-C kills the cells outright.
PASSED_SIGNALS = {getattr(signal, name): getattr(signal, to) for name, to in
                  (("SIGTERM", "SIGTERM"), ("SIGUSR1", "SIGUSR1"), ("SIGINT", "SIGTERM"), ("SIGHUP", "SIGTERM"))
                  if hasattr(signal, name)}  # Windows has neither SIGUSR1 nor SIGHUP
GROUP_GRACE_SECONDS = 300  # after a stop, how long a cell's processes get to write their checkpoint before SIGKILL
_cells: set[subprocess.Popen] = set()
_cells_lock = threading.RLock()  # re-entrant: the handler may run while the main thread holds it
_stopped_by: list[int] = []  # the signal that stopped the runner, once one has


def stop_signal() -> int | None:
    """The signal that stopped this runner (no cell is launched after it), or None."""
    return _stopped_by[0] if _stopped_by else None


def _signal_cell(proc: subprocess.Popen, signum: int) -> None:
    """``signum`` to every process of the cell (its group), never raising: this runs inside a signal handler."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signum)
        else:  # no process groups (Windows): the launched process alone
            proc.send_signal(signum)
    except OSError:  # the group has exited (ProcessLookupError), or is not ours to signal
        pass


def _group_alive(proc: subprocess.Popen) -> bool:
    if not hasattr(os, "killpg"):
        return False
    try:
        os.killpg(proc.pid, 0)
        return True
    except OSError:
        return False


def _pass_on(signum, frame) -> None:
    again = bool(_stopped_by)
    if not again:
        _stopped_by.append(signum)
    kill = again and signum == getattr(signal, "SIGINT", None)  # a second Ctrl-C: no more waiting
    with _cells_lock:
        for proc in _cells:
            _signal_cell(proc, signal.SIGKILL if kill and hasattr(signal, "SIGKILL") else PASSED_SIGNALS[signum])


@contextmanager
def passing_signals_to_cells():
    """Within: PASSED_SIGNALS reach every running cell and stop new launches (main thread only)."""
    old = {s: signal.signal(s, _pass_on) for s in PASSED_SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def subprocess_launch(argv: list[str], log_path: str) -> int:
    """Run one cell, stdout and stderr into ``log_path``; returns the exit status."""
    argv = [sys.executable, *argv[1:]] if argv[0] == "python" else argv
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1",
           "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        with _cells_lock:
            if stop_signal() is not None:  # stopped between the job's start and here
                return -stop_signal()
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                _cells.add(proc)
                if stop_signal() is not None:  # the signal came while this thread held the lock, before the add
                    _signal_cell(proc, PASSED_SIGNALS[stop_signal()])
            except BaseException:
                _cells.discard(proc)
                raise
        try:
            code = proc.wait()
            if stop_signal() is not None:  # the launcher may be gone while its workers still write the checkpoint
                deadline = time.time() + GROUP_GRACE_SECONDS
                while _group_alive(proc) and time.time() < deadline:
                    time.sleep(0.2)
                if _group_alive(proc):
                    _signal_cell(proc, signal.SIGKILL)
            return code
        finally:
            with _cells_lock:
                _cells.discard(proc)


def execute(jobs: list[Job], launch: Callable[[list[str], str], int] = subprocess_launch, parallel: int = 1,
            echo: Callable[[str], None] = print) -> list[Job]:
    """Launch every job without a record; a job that fails (or writes no record) is marked failed, the rest go on."""
    todo = []
    # Seed-major order: every cell gets its first seed before any cell gets its second, so a table cut short
    # still has one result per cell.
    for _, _, job in sorted((j.seed, i, j) for i, j in enumerate(jobs)):
        if os.path.isfile(job.record):
            job.status = "done"
        else:
            todo.append(job)
    echo(f"{len(jobs) - len(todo)} of {len(jobs)} runs already have records; launching {len(todo)}")

    def one(job: Job) -> Job:
        if os.path.isfile(job.record):  # finished meanwhile (another runner)
            job.status = "done"
            return job
        if stop_signal() is not None:
            return job  # pending: the runner was stopped before this cell started
        lock = os.path.join(job.cfg.output_dir, job.name + ".table-lock")
        if _locked(lock):
            echo(f"[busy] {job.cell.label} seed {job.seed}: another runner is training it ({lock}); not launched")
            job.status = "pending"
            return job
        echo(f"[start] {job.cell.label} seed {job.seed}: {job.name} (log: {job.log})")
        os.makedirs(os.path.dirname(lock) or ".", exist_ok=True)
        with open(lock, "w") as f:
            f.write(str(os.getpid()))
        t0 = time.time()
        try:
            job.returncode = launch(job.argv, job.log)
        except Exception as e:  # a launcher that cannot start (e.g. accelerate not installed) fails this cell only
            job.returncode = -1
            with open(job.log, "a") as f:
                f.write(f"launch failed: {e!r}\n")
        finally:
            os.remove(lock)
        job.seconds = time.time() - t0
        if os.path.isfile(job.record) and job.returncode == 0:
            job.status = "ran"
        elif stop_signal() is not None:  # stopped by the runner's signal: checkpointed, resumable
            job.status = "pending"
            echo(f"[stopped] {job.cell.label} seed {job.seed} after {job.seconds:.0f}s by signal {stop_signal()} "
                 f"(exit {job.returncode}); the same command resumes it")
            return job
        else:
            job.status = "failed"
        echo(f"[{job.status}] {job.cell.label} seed {job.seed} in {job.seconds:.0f}s (exit {job.returncode})")
        return job

    if parallel > 1:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(one, todo))
    else:
        for job in todo:
            one(job)
    return jobs


def _locked(path: str) -> bool:
    """True if ``path`` names a runner process that is still alive (two runners never train the same run)."""
    try:
        with open(path) as f:
            os.kill(int(f.read().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------- aggregation
def mean_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error ``s / sqrt(n)`` with the sample standard deviation ``s`` (ddof=1); se is None for n < 2."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def summarize(table: Table, jobs: list[Job]) -> list[dict]:
    """One row per cell (ours, from the records that exist) followed by its published row, then published-only rows."""
    rows, used = [], set()
    for cell in table.cells:
        cell_jobs = [j for j in jobs if j.cell is cell]
        if not cell_jobs:
            continue
        records, row_unfinished = [], []
        for j in cell_jobs:
            if os.path.isfile(j.record):
                with open(j.record) as f:
                    rec = json.load(f)
                if rec.get("training_finished") is False:  # a killed or hand-stopped run is not a result
                    row_unfinished.append(j.seed)
                    continue
                records.append(rec)
        row = {"cell": cell.label, "source": "ours", "n": len(records), "seeds": [j.seed for j in cell_jobs
               if os.path.isfile(j.record) and j.seed not in row_unfinished], "failed": [j.seed for j in cell_jobs if j.status == "failed"],
               "missing": [j.seed for j in cell_jobs if not os.path.isfile(j.record) and j.status != "failed"],
               "logs": [j.log for j in cell_jobs if j.status == "failed"], "runs": [j.name for j in cell_jobs],
               "unfinished": row_unfinished}
        for m in table.metrics:
            vals = [r["metrics"][m] for r in records if m in r.get("metrics", {})]
            row[m], row[f"{m}_se"] = mean_se(vals) if vals else (None, None)
            if len(records) == 1 and f"{m}_se" in records[0]["metrics"]:  # one seed: the s.e. over test users
                row[f"{m}_se"] = records[0]["metrics"][f"{m}_se"]
                row["user_se"] = True
        if records:
            row["user_subset"] = sorted({r.get("user_subset") or 0 for r in records})
            row["users_evaluated"] = sorted({r.get("users_evaluated") for r in records})
            row["epochs_run"] = [r.get("epochs_run") for r in records]
            row["train_seconds"] = [r.get("train_seconds") for r in records]
            for key in ("real_tokens_per_s", "adapter_mb"):
                if any(r.get(key) is not None for r in records):
                    row[key] = [r.get(key) for r in records]
            row["devices"] = sorted({r.get("device", "?") for r in records})
        rows.append(row)
        pub = cell.published or cell.label
        if pub in table.published:
            rows.append(_published_row(table, pub, cell.label))
            used.add(pub)
    for label in table.published:
        if label not in used:
            rows.append(_published_row(table, label, ""))
    return rows


def _published_row(table: Table, label: str, cell: str) -> dict:
    values = table.published[label]
    row = {"cell": cell, "published_row": label, "source": values.get("source", table.source) or "published"}
    for m in table.metrics:
        row[m], row[f"{m}_se"] = values.get(m), values.get(f"{m}_se")
    return row


def _fmt(row: dict, m: str) -> str:
    v, se = row.get(m), row.get(f"{m}_se")
    if v is None:
        return "—"
    return f"{v:.4f} ± {se:.4f}" if se is not None else f"{v:.4f}"


def to_markdown(table: Table, rows: list[dict]) -> str:
    seeds = ", ".join(map(str, table.seeds))
    out = [f"# {table.title or table.name}", ""]
    if table.protocol:
        out += [f"Protocol: {table.protocol}", ""]
    legend = (f"Ours: mean ± standard error (sample s.d. / √n) over seeds [{seeds}]; n is the number of seeds with a "
              f"result. Published rows are the authors' own numbers, copied from the paper and labelled by source.")
    if any(r.get("user_se") for r in rows):
        legend += (" With one seed, ± is the standard error over the test users from the record: recall's binomial "
                   "√(r(1-r)/users), NDCG's per-user s.d. / √users (records written before it was added have none).")
    out += [legend, ""]
    out += ["| Row | Source | n | " + " | ".join(table.metrics) + " |", "|---" * (3 + len(table.metrics)) + "|"]
    for r in rows:
        if r["source"] == "ours":
            label, src = r["cell"], "ours"
            if r["failed"]:
                src += f", failed seeds {r['failed']}"
            if r["missing"]:
                src += f", no result yet for seeds {r['missing']}"
            n = str(r["n"])
        else:
            label = r["cell"] or r["published_row"]
            src, n = f"published: {r['source']}" + (f" ({r['published_row']})" if r["cell"] and
                                                    r["published_row"] != r["cell"] else ""), "—"
        out.append(f"| {label} | {src} | {n} | " + " | ".join(_fmt(r, m) for m in table.metrics) + " |")
    ours = [r for r in rows if r["source"] == "ours"]
    subsets = sorted({s for r in ours for s in r.get("user_subset", [])})
    if any(subsets):
        users = sorted({u for r in ours for u in r.get("users_evaluated", []) if u})
        out += ["", f"Evaluated on a fixed random subset of test users (eval.max_users={subsets}; users evaluated "
                    f"{users}); published rows use all users."]
    failed = [(r["cell"], log) for r in ours for log in r["logs"]]
    if failed:
        out += ["", "Failed runs (see their logs): " + "; ".join(f"{c}: `{log}`" for c, log in failed)]
    devices = sorted({d for r in ours for d in r.get("devices", [])})
    if devices:
        out += ["", "Device: " + "; ".join(devices)]
    if table.notes:
        out += ["", table.notes.strip()]
    out += ["", f"Table file: `{table.path}`. Records: `<results_dir>/runs/<dataset>/<run name>.json`; runs "
                f"(epochs run, training seconds per seed):", ""]
    for r in ours:
        stats = f" (epochs {r['epochs_run']}, train s {r['train_seconds']}" if r["n"] else ""
        if r["n"]:
            stats += "".join(f", {name} {r[key]}" for key, name in (("real_tokens_per_s", "real tokens/s"),
                                                                     ("adapter_mb", "adapter MB")) if key in r) + ")"
        out.append(f"- {r['cell']}: " + ", ".join(f"`{n}`" for n in r["runs"]) + stats)
    return "\n".join(out) + "\n"


def write_csv(table: Table, rows: list[dict], path: str) -> None:
    cols = ["cell", "source", "published_row", "n", "seeds", "failed"] + [c for m in table.metrics for c in (m, f"{m}_se")]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()})


def plot(table: Table, rows: list[dict], path: str) -> None:
    """One panel per metric: our mean with s.e. bars per cell, the published value as a hatched bar beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = [r for r in rows if r["source"] == "ours"]
    pub = {r["cell"]: r for r in rows if r["source"] != "ours" and r["cell"]}
    fig, axes = plt.subplots(1, len(table.metrics), figsize=(3.2 * len(table.metrics) + 1, 3.6), squeeze=False)
    x = list(range(len(ours)))
    for ax, m in zip(axes[0], table.metrics):
        ax.bar([i - 0.2 for i in x], [r.get(m) or 0 for r in ours], 0.4, yerr=[r.get(f"{m}_se") or 0 for r in ours],
               capsize=3, label="ours (mean ± s.e.)", color="tab:blue")
        ax.bar([i + 0.2 for i in x], [(pub.get(r["cell"]) or {}).get(m) or 0 for r in ours], 0.4, label="published",
               color="white", edgecolor="tab:gray", hatch="//")
        ax.set_xticks(x, [r["cell"] for r in ours], rotation=30, ha="right", fontsize=8)
        ax.set_title(m)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(table.title or table.name, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(table: Table, jobs: list[Job], out_dir: str, t0: float) -> dict[str, str]:
    """``<out_dir>/<table>.md``, ``.csv``, ``.png`` and ``.json`` (with command, commit, device, date, wall seconds)."""
    from genrec.training.records import write_record

    rows = summarize(table, jobs)
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, table.name)
    paths = {"md": stem + ".md", "csv": stem + ".csv", "png": stem + ".png", "json": stem + ".json"}
    with open(paths["md"], "w") as f:
        f.write(to_markdown(table, rows))
    write_csv(table, rows, paths["csv"])
    if any(r.get(m) is not None for r in rows if r["source"] == "ours" for m in table.metrics):
        plot(table, rows, paths["png"])
    else:
        paths.pop("png")
    write_record(paths["json"], {"table": table.name, "table_file": table.path, "title": table.title,
                                 "protocol": table.protocol, "seeds": table.seeds, "metrics": table.metrics,
                                 "wall_seconds": round(time.time() - t0, 1), "rows": rows})
    return paths


# ------------------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run the cells of a results table and write it with published rows.",
                                allow_abbrev=False)  # a prefix such as --out must not silently mean --output-dir
    p.add_argument("table", help="name under configs/tables/ (e.g. table2) or a path to a table YAML")
    p.add_argument("--dry-run", action="store_true", help="print every launch command and exit")
    p.add_argument("--report-only", action="store_true", help="launch nothing; write the table from existing records")
    p.add_argument("--launcher", choices=LAUNCHERS, help="override the table's launcher")
    p.add_argument("--accelerate-config", help="accelerate config file (launcher=accelerate)")
    p.add_argument("--cells", nargs="+", help="only these cell labels")
    p.add_argument("--seeds", nargs="+", type=int, help="override the table's seeds")
    p.add_argument("--jobs", type=int, default=1, help="cells run at the same time (default 1)")
    p.add_argument("--results-dir", help="passed to each run as results_dir= (default: the config's, results)")
    p.add_argument("--output-dir", help="passed to each run as output_dir= (default: the config's, runs)")
    p.add_argument("--tables-dir", default=None, help="where the table is written (default <results_dir>/tables)")
    p.add_argument("--override", "-o", action="append", default=[], help="extra dotted override for every cell")
    p.add_argument("--smoke", action="store_true",
                   help="check the whole table in minutes before spending hours: every cell, seed 0, for "
                        f"{SMOKE_STEPS} steps and a {SMOKE_USERS}-user evaluation, under smoke/ (runs and records)")
    args = p.parse_args(argv)
    t0 = time.time()
    if args.smoke:  # separate folders: a smoke record never stands in for a real cell
        args.override = [*args.override, *SMOKE_OVERRIDES]
        args.seeds = [0]
        args.results_dir = args.results_dir or os.path.join("smoke", "results")
        args.output_dir = args.output_dir or os.path.join("smoke", "runs")
    try:
        table = load_table(args.table)
        jobs = plan(table, args.launcher, args.accelerate_config, args.seeds, args.cells, args.override,
                    args.results_dir, args.output_dir)
    except (ValueError, FileNotFoundError) as e:
        print(f"run_table: {e}", file=sys.stderr)
        return 2
    missing = missing_data(jobs)
    missing_msg = (f"table {table.name} needs data that is not on this machine: "
                   + "; ".join(f"{d} (looked for {p})" for d, p in sorted(missing.items()))
                   + ". Set $GENREC_DATA_ROOT (or data.root) to the folder that holds it, or leave those cells out "
                     "with --cells.") if missing else ""
    acc = next((j.argv[j.argv.index("--config_file") + 1] for j in jobs if "--config_file" in j.argv), "")
    if acc and not os.path.isfile(acc):
        missing_msg = (missing_msg + " " if missing else "") + \
            f"The accelerate config {acc} does not exist: write it with `accelerate config --config_file {acc}`."
        missing = missing or {"accelerate config": acc}
    if args.dry_run:
        for job in jobs:
            state = "done, skipped" if os.path.isfile(job.record) else "to run"
            print(f"# {job.cell.label} | seed {job.seed} | {job.name} | {state}")
            print(shlex.join(job.argv))
        if missing:
            print(f"# note: {missing_msg}", file=sys.stderr)
        return 0
    if missing and not args.report_only:
        print(f"run_table: {missing_msg}", file=sys.stderr)
        return 2
    if not args.report_only:
        with passing_signals_to_cells():
            execute(jobs, parallel=args.jobs, echo=lambda s: print(s, flush=True))
    out_dir = args.tables_dir or os.path.join(jobs[0].cfg.results_dir if jobs else "results", "tables")
    paths = write_outputs(table, jobs, out_dir, t0)
    failed = [j for j in jobs if j.status == "failed"]
    print(open(paths["md"]).read())
    print("wrote " + ", ".join(paths.values()))
    if failed:
        print(f"{len(failed)} run(s) failed: " + ", ".join(f"{j.cell.label} seed {j.seed} ({j.log})" for j in failed),
              file=sys.stderr)
    if stop_signal() is not None:
        print(f"run_table: stopped by signal {stop_signal()}; cells still to run: "
              f"{sum(j.status == 'pending' for j in jobs)} (the same command resumes them)", file=sys.stderr)
        return 128 + stop_signal()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
