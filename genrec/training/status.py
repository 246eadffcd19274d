"""Where a run stands, read from its folder alone: ``genrec status runs/<name> [--out progress.json]``.

A run that outlasts a session (an LLM epoch on a CPU, a long table) is stopped and resumed many times; its folder
says how far it got: the checkpoint's ``trainer_state.json`` (epoch, step, validation history, training tokens and
seconds), ``sessions.jsonl`` (one line per start or resume: commit, device, processes, command, steps per epoch and
where the session started), partial evaluations (``eval-*.partial.pt``: batches already scored) and, once finished,
``result.json``. Only those files are read (no weights, no data), so the status of a run is seconds away on any
machine that holds the folder.
"""
from __future__ import annotations

import glob
import json
import math
import os
import platform

import yaml

from ..evaluation.evaluate import PARTIAL_GLOB
from .checkpoint import RunLock
from .records import command_line, now_utc, token_fields, write_record

SESSIONS_FILE = "sessions.jsonl"
MIN_SESSION_STEPS = 20  # checkpointed steps of the newest session before its own pace is reported (a first step is slow)


def log_session(run_dir: str, entry: dict) -> None:
    """Append one start / resume of a run to ``<run_dir>/sessions.jsonl`` (main process)."""
    with open(os.path.join(run_dir, SESSIONS_FILE), "a") as f:
        f.write(json.dumps(entry) + "\n")


def read_sessions(run_dir: str) -> tuple[list[dict], int]:
    """The session lines, and how many could not be read (a line torn by a kill while it was written)."""
    path = os.path.join(run_dir, SESSIONS_FILE)
    if not os.path.isfile(path):
        return [], 0
    sessions, torn = [], 0
    with open(path) as f:
        for line in f:
            if line.strip():
                try:
                    sessions.append(json.loads(line))
                except json.JSONDecodeError:
                    torn += 1
    return sessions, torn


def _json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _checkpoint_state(run_dir: str) -> dict | None:
    """The newest complete checkpoint's state, as ``Checkpointer.recover`` would choose it (read-only): a complete
    ``checkpoint.tmp`` (killed after writing it, before the renames), else ``checkpoint``, else ``checkpoint.old``."""
    for folder in ("checkpoint.tmp", "checkpoint", "checkpoint.old"):
        state = _json(os.path.join(run_dir, folder, "trainer_state.json"))
        if state is not None:
            return state
    return None


def _lock(run_dir: str) -> tuple[int | None, str | None]:
    """(pid of a live process on this machine holding the run, the holder of a lock taken on another host)."""
    lock = RunLock(run_dir)
    pid = lock.holder()
    if pid == os.getpid():  # a lock left by a run that died inside this very process
        pid = None
    if pid is None and os.path.isfile(lock.path):
        with open(lock.path) as f:
            holder = f.read().strip()
        if holder.partition("@")[2] != platform.node():
            return None, holder
    return pid, None


def _partial_evaluations(run_dir: str) -> list[dict]:
    """Interrupted (or running) evaluations in the folder: the run's final test, or a ``genrec eval`` of it."""
    import torch

    out = []
    for path in sorted(glob.glob(os.path.join(glob.escape(run_dir), PARTIAL_GLOB))):
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            key = saved["key"]
            out.append({"file": os.path.basename(path), "split": key["split"], "batches_scored": saved["batches"],
                        "batches": key["batches"], "commits": saved.get("commits", []),
                        # genrec eval keys its weights with the data and semantic IDs it evaluated on
                        "by": "genrec eval" if "inputs" in (key.get("weights") or {}) else "the run's final test"})
        except Exception as e:  # noqa: BLE001 - a file being replaced, or of another format: say so, go on
            out.append({"file": os.path.basename(path), "unreadable": type(e).__name__})
    return out


def _steps_per_epoch(state: dict, sessions: list[dict], grad_accum: int) -> int | None:
    """From the newest session line; for a run started before sessions were logged, from its finished epochs
    (assuming every one of them was a full epoch: not so for a run that stopped at ``train.max_steps``)."""
    for s in reversed(sessions):
        if s.get("steps_per_epoch"):
            return s["steps_per_epoch"]
    if state.get("epoch"):
        return (state["global_step"] - math.ceil(state.get("batch_in_epoch", 0) / grad_accum)) // state["epoch"]
    return None


def _pace(state: dict, sessions: list[dict]) -> dict:
    """Seconds per step and real tokens/s: over the whole run, and in the newest session alone (sessions may have
    run on other devices or process counts: the newest one's pace is the one that sets the time left)."""
    step, secs = state["global_step"], state.get("step_seconds", 0.0)
    out = {"seconds_per_step": round(secs / step, 2) if step and secs else None}
    last = sessions[-1] if sessions else None
    if last and "start_step_seconds" in last and step - last["start_step"] >= MIN_SESSION_STEPS:
        d_secs = secs - last["start_step_seconds"]
        d_real = state.get("real_tokens", 0) - last.get("start_real_tokens", 0)
        out["session_seconds_per_step"] = round(d_secs / (step - last["start_step"]), 2)
        out["session_real_tokens_per_s"] = round(d_real / d_secs, 1) if d_secs > 0 and d_real else None
    return out


def run_status(run_dir: str) -> dict:
    """Everything ``genrec status`` prints, as a dict (also the body of ``--out``)."""
    config_path = os.path.join(run_dir, "config.yaml")
    state = _checkpoint_state(run_dir)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"{config_path} not found: " + (f"{run_dir} has a checkpoint but no config; restore config.yaml (every "
                                            f"start writes it) to read its status" if state is not None else
                                            f"{run_dir} is not a run folder (genrec train writes runs/<run name>/"
                                            f"config.yaml when a run starts)"))
    with open(config_path) as f:
        cfg = yaml.safe_load(f)
    tc = cfg["train"]
    sessions, torn = read_sessions(run_dir)
    result = _json(os.path.join(run_dir, "result.json"))
    pid, elsewhere = _lock(run_dir)
    out = {"run_folder": run_dir, "dataset": cfg["data"]["name"], "model": cfg["model"]["kind"],
           "running_pid": pid, "locked_on_other_host": elsewhere, "sessions": sessions,
           "unreadable_session_lines": torn, "of_epochs": tc["epochs"],
           "evaluations_in_progress": _partial_evaluations(run_dir)}
    if result is not None:
        out["record"] = {k: result.get(k) for k in ("metrics", "users_evaluated", "best_epoch", "epochs_run",
                                                    "global_steps", "train_seconds", "paused_seconds",
                                                    "real_tokens_per_s",
                                                    "git_commit")}
    # a record is the run's current result unless training went on after it (train.epochs raised)
    current = result is not None and (state is None or (state.get("done") and
                                                        result.get("global_steps") == state["global_step"]))
    if state is None:
        out["status"] = "finished" if current else (
            "running, no checkpoint yet" if pid else "no checkpoint (not started, or stopped before its first one)")
        return out
    spe = _steps_per_epoch(state, sessions, tc.get("grad_accum", 1))
    step = state["global_step"]
    total = None
    if spe:  # from where the checkpoint stands, so a change of steps per epoch (processes) counts only from now
        total = step + (tc["epochs"] - state["epoch"]) * spe - math.ceil(state.get("batch_in_epoch", 0) /
                                                                           tc.get("grad_accum", 1))
    if tc.get("max_steps"):
        total = min(total, tc["max_steps"]) if total else tc["max_steps"]
    pace = _pace(state, sessions)
    out.update(
        epochs_done=state["epoch"], batch_in_epoch=state.get("batch_in_epoch", 0), global_steps=step,
        steps_per_epoch=spe, total_steps=total, train_seconds=round(state.get("train_seconds", 0.0), 1),
        paused_seconds=round(state.get("paused_seconds", 0.0), 1), **token_fields(state), **pace, monitor=tc.get("monitor"), best=state.get("best"),
        best_epoch=state.get("best_epoch"), validation_history=state.get("history", []))
    per_step = pace.get("session_seconds_per_step") or pace["seconds_per_step"]
    if total and per_step and not state.get("done"):
        out["train_hours_left"] = round(max(total - step, 0) * per_step / 3600, 2)  # steps alone
    if current:
        out["status"] = "finished"
    elif not state.get("done"):
        where = f"epoch {state['epoch'] + 1} of {tc['epochs']}, step {step:,}" + (f" of {total:,}" if total else "")
        out["status"] = f"{'training' if pid else 'stopped'}: {where}"
    else:
        out["status"] = "trained; " + ("testing" if pid else "test not finished (the same command resumes it)")
    if result is not None and not current:
        out["status"] += f" (result.json is of an earlier end, step {result.get('global_steps')})"
    return out


def format_status(s: dict) -> str:
    head = f"{s['run_folder']}: {s['model']} on {s['dataset']}: {s['status']}"
    if s.get("running_pid"):
        head += f" (pid {s['running_pid']})"
    elif s.get("locked_on_other_host"):
        head += f" (locked by {s['locked_on_other_host']}: another host, which may still be training it)"
    lines = [head]
    if "global_steps" in s:
        lines.append(f"  checkpoint: {s['epochs_done']} of {s['of_epochs']} epochs done, step {s['global_steps']:,}"
                     + (f" of {s['total_steps']:,}" if s.get("total_steps") else "")
                     + f" ({s['steps_per_epoch'] or '?'} per epoch); {s['train_seconds'] / 3600:.2f} h trained"
                     + (f" (and {s['paused_seconds'] / 3600:.2f} h stopped, not counted)" if s.get("paused_seconds")
                        else ""))
        if s.get("seconds_per_step"):
            pace = (f"  pace: {s['seconds_per_step']} s/step, {s['real_tokens_per_s']} real tokens/s over the run"
                    + (f"; this session {s['session_seconds_per_step']} s/step, {s['session_real_tokens_per_s']} "
                       f"real tokens/s" if s.get("session_seconds_per_step") else "")
                    + (f"; computed/real tokens {s['padding_ratio']}" if s.get("padding_ratio") else ""))
            lines.append(pace + (f"; ~{s['train_hours_left']} h of steps left" if s.get("train_hours_left") else ""))
        for h in s["validation_history"]:
            mark = "  <- best" if h["epoch"] == s["best_epoch"] else ""
            lines.append(f"  epoch {h['epoch']} (step {h['step']:,}): valid {s['monitor']} "
                         f"{h.get(s['monitor'], float('nan')):.4f} on {h.get('users', '?')} users{mark}")
    for t in s["evaluations_in_progress"]:
        lines.append(f"  unreadable partial evaluation {t['file']}" if "unreadable" in t else
                     f"  {t['split']} ({t['by']}): {t['batches_scored']} of {t['batches']} batches scored")
    if s.get("record"):
        m = s["record"]["metrics"]
        lines.append("  result: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()
                                               if k.startswith(("recall@", "ndcg@")) and not k.endswith("_se")))
    for e in s["sessions"]:
        lines.append(f"  session {e['date']}: from step {e['start_step']:,} at {e['git_commit'][:12]}, "
                     f"{e['processes']} process(es), {e['device']}")
    if s["unreadable_session_lines"]:
        lines.append(f"  ({s['unreadable_session_lines']} unreadable line(s) in {SESSIONS_FILE})")
    return "\n".join(lines)


def write_progress(path: str, s: dict) -> str:
    """``--out``: the status as a progress file. Its command, commits and devices are the run's own (from its
    sessions; the command is the newest session's), not those of the ``genrec status`` call; tables never read
    such a file (it is not a result)."""
    sessions = s["sessions"]
    body = {"command": sessions[-1]["command"] if sessions else None,
            "git_commit": sorted({e["git_commit"] for e in sessions}) or None,
            "device": sorted({e["device"] for e in sessions}) or None,
            "date": now_utc(), "written_by": command_line(),
            "note": "progress of a run, not a result record: tables never read it", **s}
    return write_record(path, body)


__all__ = ["log_session", "read_sessions", "run_status", "format_status", "write_progress", "SESSIONS_FILE"]
