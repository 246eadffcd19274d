"""Result records: one small JSON per evaluation run under ``results/``, with everything needed to reproduce it."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys

import torch


def git_commit() -> str:
    """``HEAD`` (``-dirty`` with uncommitted tracked changes); in a tree copied without ``.git`` (a cluster job's
    rsync, a container), ``$GENREC_COMMIT`` as the launcher set it; else "unknown"."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("GENREC_COMMIT", "unknown")


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")  # x86 flags for native bf16 matrix instructions


def cpu_bf16_flags() -> list[str]:
    """The CPU's native-bf16 flags (``BF16_CPU_FLAGS`` in /proc/cpuinfo); [] where it has none or is not Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return [f for f in BF16_CPU_FLAGS if f in flags]


def device_description(device: torch.device | str | None = None) -> str:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"GPU: {name} x{torch.cuda.device_count()}, torch {torch.__version__}"
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    bf16 = ",".join(cpu_bf16_flags()) or "no native bf16"
    malloc = ", heap malloc" if "mmap_max=0" in os.environ.get("GLIBC_TUNABLES", "") else ""  # genrec.cli
    return (f"CPU: {cpu} ({bf16}), {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}{malloc}")


def command_line() -> str:
    prog = os.path.basename(sys.argv[0])
    if prog == "__main__.py":  # python -m genrec
        prog = "python -m genrec"
    elif prog.endswith(".py"):
        prog = f"python {os.path.relpath(sys.argv[0])}"
    return " ".join([prog, *sys.argv[1:]])


def token_fields(state: dict) -> dict:
    """A run's training-throughput fields from its state (real tokens exclude padding; seconds are training steps
    only): the record's, and ``genrec status``'s."""
    real, computed, secs = state.get("real_tokens", 0), state.get("computed_tokens", 0), state.get("step_seconds", 0)
    return {"real_tokens": real or None, "computed_tokens": computed or None,
            "padding_ratio": round(computed / real, 3) if real else None, "step_seconds": round(secs, 1),
            "real_tokens_per_s": round(real / secs, 1) if real and secs else None}


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def write_record(path: str, record: dict) -> str:
    """Write ``record`` (plus command, commit, device, date unless given) as pretty JSON; return the path."""
    base = {"command": command_line(), "git_commit": git_commit(), "device": device_description(), "date": now_utc()}
    record = {**base, **record}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)
    return path
