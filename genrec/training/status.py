"""Where a run stands, read from its folder alone: ``genrec status runs/<name> [--out progress.json]``.

A run that outlasts a session (an LLM epoch on a CPU, a long table) is stopped and resumed many times; its folder
says how far it got: the checkpoint's ``trainer_state.json`` (epoch, step, validation history, training tokens and
seconds), ``sessions.jsonl`` (one line per start or resume: commit, device, processes, command, steps per epoch),
a partial test (``eval-*.partial.pt``: batches already scored) and, once finished, ``result.json``. Nothing is loaded
but those files, so the status of a run is seconds away on any machine that holds the folder.
"""
from __future__ import annotations

import glob
import json
import math
import os

import yaml

from .checkpoint import RunLock
from .records import command_line, now_utc, write_record

SESSIONS_FILE = "sessions.jsonl"


def log_session(run_dir: str, entry: dict) -> None:
    """Append one start / resume of a run to ``<run_dir>/sessions.jsonl`` (main process)."""
    with open(os.path.join(run_dir, SESSIONS_FILE), "a") as f:
        f.write(json.dumps(entry) + "\n")


def read_sessions(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, SESSIONS_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _partial_tests(run_dir: str) -> list[dict]:
    """Interrupted (or running) evaluations of the run's tested weights: split, batches scored, batches in all."""
    import torch

    out = []
    for path in sorted(glob.glob(os.path.join(run_dir, "eval-*.partial.pt"))):
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a file being written or damaged: say so, do not fail the status
            out.append({"file": os.path.basename(path), "unreadable": f"{type(e).__name__}"})
            continue
        key = saved.get("key", {})
        out.append({"file": os.path.basename(path), "split": key.get("split"), "batches_scored": saved["batches"],
                    "batches": key.get("batches"), "commits": saved.get("commits", [])})
    return out


def _steps_per_epoch(state: dict, sessions: list[dict], grad_accum: int) -> int | None:
    """From the newest session line; for a run started before sessions were logged, from a finished epoch."""
    for s in reversed(sessions):
        if s.get("steps_per_epoch"):
            return s["steps_per_epoch"]
    if state.get("epoch"):  # every epoch has the same number of optimiser steps
        return (state["global_step"] - math.ceil(state.get("batch_in_epoch", 0) / grad_accum)) // state["epoch"]
    return None


def run_status(run_dir: str) -> dict:
    """Everything ``genrec status`` prints, as a dict (also the body of ``--out``)."""
    config_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path} not found: {run_dir} is not a run folder (genrec train writes "
                                f"runs/<run name>/config.yaml when a run starts)")
    with open(config_path) as f:
        cfg = yaml.safe_load(f)
    tc = cfg["train"]
    state = _json(os.path.join(run_dir, "checkpoint", "trainer_state.json"))
    sessions = read_sessions(run_dir)
    result = _json(os.path.join(run_dir, "result.json"))
    pid = RunLock(run_dir).holder()  # a live process training it on this machine
    pid = None if pid == os.getpid() else pid  # a lock left by a run that died inside this very process
    out = {"run_folder": run_dir, "dataset": cfg["data"]["name"], "model": cfg["model"]["kind"],
           "running_pid": pid, "sessions": sessions, "of_epochs": tc["epochs"]}
    if result is not None:
        out["status"] = "finished"
        out.update(record={k: result.get(k) for k in ("metrics", "users_evaluated", "best_epoch", "epochs_run",
                                                      "train_seconds", "real_tokens_per_s", "git_commit")})
    if state is None:
        out.setdefault("status", "running, no checkpoint yet" if pid else "no checkpoint (not started, or stopped "
                                                                           "before its first checkpoint)")
        return out
    spe = _steps_per_epoch(state, sessions, tc.get("grad_accum", 1))
    total = tc.get("max_steps") or (spe * tc["epochs"] if spe else None)
    secs, real = state.get("step_seconds", 0.0), state.get("real_tokens", 0)
    step = state["global_step"]
    out.update(
        epochs_done=state["epoch"], batch_in_epoch=state.get("batch_in_epoch", 0), global_steps=step,
        steps_per_epoch=spe, total_steps=total, train_seconds=round(state.get("train_seconds", 0.0), 1),
        step_seconds=round(secs, 1), seconds_per_step=round(secs / step, 2) if step else None,
        real_tokens=real or None,
        padding_ratio=round(state["computed_tokens"] / real, 3) if real and state.get("computed_tokens") else None,
        real_tokens_per_s=round(real / secs, 1) if real and secs else None,
        monitor=tc.get("monitor"), best=state.get("best"), best_epoch=state.get("best_epoch"),
        validation_history=state.get("history", []), tests=_partial_tests(run_dir))
    if total and step and not state.get("done"):
        out["train_hours_left"] = round((total - step) * secs / step / 3600, 2)  # steps alone, at the mean pace
    if "status" not in out:
        if not state.get("done"):
            where = f"epoch {state['epoch'] + 1} of {tc['epochs']}, step {step:,}" + (f" of {total:,}" if total else "")
            out["status"] = f"{'training' if pid else 'stopped'}: {where}"
        else:
            out["status"] = "trained; " + ("testing" if pid else "test not finished (the same command resumes it)")
    return out


def format_status(s: dict) -> str:
    lines = [f"{s['run_folder']}: {s['model']} on {s['dataset']}: {s['status']}"
             + (f" (pid {s['running_pid']})" if s.get("running_pid") else "")]
    if "global_steps" in s:
        pace = (f"{s['seconds_per_step']} s/step, {s['real_tokens_per_s']} real tokens/s, computed/real "
                f"{s['padding_ratio']}" if s.get("seconds_per_step") else "no step timed yet")
        lines.append(f"  checkpoint: {s['epochs_done']} of {s['of_epochs']} epochs done, step {s['global_steps']:,}"
                     + (f" of {s['total_steps']:,}" if s.get("total_steps") else "")
                     + f" ({s['steps_per_epoch'] or '?'} per epoch); {s['train_seconds'] / 3600:.2f} h trained")
        lines.append(f"  pace (mean over its sessions): {pace}"
                     + (f"; ~{s['train_hours_left']} h of steps left" if s.get("train_hours_left") else ""))
        for h in s["validation_history"]:
            mark = "  <- best" if h["epoch"] == s["best_epoch"] else ""
            lines.append(f"  epoch {h['epoch']} (step {h['step']:,}): valid {s['monitor']} "
                         f"{h.get(s['monitor'], float('nan')):.4f} on {h.get('users', '?')} users{mark}")
        for t in s["tests"]:
            lines.append(f"  {t.get('split')}: " + (f"unreadable partial file {t['file']}" if "unreadable" in t else
                                                    f"{t['batches_scored']} of {t['batches']} batches scored"))
    if s.get("record"):
        m = s["record"]["metrics"]
        lines.append("  result: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()
                                               if k.startswith(("recall@", "ndcg@")) and not k.endswith("_se")))
    for e in s["sessions"]:
        lines.append(f"  session {e['date']}: from step {e['start_step']:,} at {e['git_commit'][:12]}, "
                     f"{e['processes']} process(es), {e['device']}")
    return "\n".join(lines)


def write_progress(path: str, s: dict) -> str:
    """``--out``: the status as a progress file. Its command, commits and devices are the run's own (from its
    sessions), not those of the ``genrec status`` call; tables never read such a file (it is not a result)."""
    sessions = s["sessions"]
    body = {"command": sessions[0]["command"] if sessions else None,
            "git_commit": sorted({e["git_commit"] for e in sessions}) or None,
            "device": sorted({e["device"] for e in sessions}) or None,
            "date": now_utc(), "written_by": command_line(),
            "note": "progress of a run, not a result record: tables never read it", **s}
    return write_record(path, body)


__all__ = ["log_session", "read_sessions", "run_status", "format_status", "write_progress", "SESSIONS_FILE"]
