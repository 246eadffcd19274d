"""The ``genrec`` command (also ``python -m genrec``).

    genrec demo                                   # the whole pipeline on the embedded tiny dataset, offline
    genrec train --config configs/sasrec/beauty.yaml [--config delta.yaml ...] [key=value ...]
    genrec eval runs/<run name> eval.exclude_history=true eval.beam_size=50   # re-evaluate trained weights
    genrec status runs/<run name> [--out progress.json]  # where a (stopped or running) run stands
    genrec predict runs/<run name> --k 100 --out recs.parquet [--users FILE] [--split test|valid|next]
    genrec data stats --config configs/sasrec/beauty.yaml       (or: genrec data stats data.name=sports)
    genrec sids build --config configs/tiger/beauty.yaml
    genrec config --config ...                    # print the resolved config
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genrec", description="Generative sequential recommendation.")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an input or config error")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp):
        sp.add_argument("--config", "-c", action="append", default=[], help="YAML file; repeat to stack (later wins)")
        sp.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4 seed=1")
        return sp

    with_config(sub.add_parser("train", help="train, validate, test and write a result record"))
    ev = sub.add_parser("eval", help="re-evaluate a trained run's best weights under other eval.* settings")
    ev.add_argument("run_dir", help="the run's folder, runs/<run name>")
    ev.add_argument("overrides", nargs="*", help="eval.* overrides, e.g. eval.beam_size=50 eval.exclude_history=true")
    pr = sub.add_parser("predict", help="top-K recommendations per user from a trained run, to a parquet/csv file")
    pr.add_argument("run_dir", help="the run's folder, runs/<run name>")
    pr.add_argument("--out", required=True, help="output file: .parquet or .csv")
    pr.add_argument("--k", type=int, default=100, help="items per user (default 100)")
    pr.add_argument("--users", default="", help="file with one user id per line (default: every user)")
    pr.add_argument("--split", default="test", choices=["test", "valid", "next"],
                    help="history to recommend from: test (default; the held-out target is written beside the "
                         "list), valid, or next (the whole sequence)")
    st = sub.add_parser("status", help="where a run stands (epochs, steps, pace, validation, test), from its folder")
    st.add_argument("run_dir", help="the run's folder, runs/<run name>")
    st.add_argument("--out", default="", help="also write the status as a JSON progress file (not a result record)")
    with_config(sub.add_parser("config", help="print the resolved config"))
    demo = with_config(sub.add_parser("demo", help="run the pipeline on the embedded tiny dataset"))
    demo.add_argument("--models", default="", help="comma-separated model kinds (default: all that apply)")
    data = sub.add_parser("data", help="data utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    with_config(data_sub.add_parser("stats", help="users, items, interactions, sequence lengths"))
    sids = sub.add_parser("sids", help="semantic IDs")
    sids_sub = sids.add_subparsers(dest="sids_command", required=True)
    with_config(sids_sub.add_parser("build", help="embed items, fit the tokenizer, write the artifact + report"))
    return p


# Errors of input (files, values, configs, missing optional packages): one line and exit 2, no traceback
# unless --debug. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, ImportError, UnicodeDecodeError)


# glibc malloc settings for the commands that train or score: freed blocks stay in the heap for the next step
HEAP_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
COMPUTE_COMMANDS = ("demo", "train", "eval", "predict", "sids")


def _restart_with_heap_malloc(command: str) -> None:
    """On Linux with glibc, run this command once more in this process with ``GLIBC_TUNABLES=HEAP_MALLOC``.

    By default glibc serves every block above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and unmaps it
    on free, so a CPU training step that allocates hundreds of MB of logits page-faults all of it in again, every step
    (the parallel model on ML-1M spent 40 % of its time in the kernel). Keeping freed memory in the heap made its
    steps 1.75x faster, at a higher resident peak (``benchmarks/bench_cpu_malloc.py``). glibc reads its tunables only
    at start, hence the ``exec`` (same PID, arguments and environment, so torchrun and nohup see one process).
    ``GENREC_MALLOC=system``, or any ``GLIBC_TUNABLES`` of your own, keeps the process as it is.
    """
    if (command not in COMPUTE_COMMANDS or not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ
            or os.environ.get("GENREC_MALLOC", "heap") == "system"):
        return
    import platform

    if platform.libc_ver()[0] != "glibc":
        return
    os.environ["GLIBC_TUNABLES"] = HEAP_MALLOC
    sys.stdout.flush()
    sys.stderr.flush()
    # ``python -m genrec`` again as such (its __main__.py cannot run as a file); the ``genrec`` script as itself
    entry = ["-m", "genrec"] if os.path.basename(sys.argv[0]) == "__main__.py" else [sys.argv[0]]
    os.execv(sys.executable, [sys.executable, *entry, *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the encoders and LLMs are local packages: never reach a hub
    args = _parser().parse_args(argv)
    if argv is None:  # the process's own command line (not a call from Python, which must not be replaced)
        _restart_with_heap_malloc(args.command)
    try:
        code = _run(args)
        sys.stdout.flush()  # a closed pipe (``genrec status ... | head``) shows here, not at interpreter exit
        return code
    except BrokenPipeError:  # the reader went away: stop quietly, as head-fed Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except USER_ERRORS as e:
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"genrec: {msg} (run with --debug for the traceback)", file=sys.stderr)
        return 2


def _run(args) -> int:
    from .config import load_config, to_dict

    if args.command == "predict":
        return _predict(args)
    if args.command == "status":
        from .training.status import format_status, run_status, write_progress

        status = run_status(args.run_dir)
        # the file first: a reader that goes away (``| head``) cuts the printout short, not the file
        out = write_progress(args.out, status) if args.out else ""
        print(format_status(status))
        if out:
            print(f"progress: {out}")
        return 0
    if args.command == "eval":
        from .training.loop import evaluate_run

        evaluate_run(args.run_dir, args.overrides)
        return 0
    cfg = load_config(args.config, args.overrides)
    if args.command == "config":
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(to_dict(cfg)))
    elif args.command == "train":
        from .training import train
        from .training.stop import NonFiniteLoss, TrainingStopped

        try:
            train(cfg)
        except TrainingStopped as e:
            print(f"genrec: {e}", file=sys.stderr)
            return 128 + e.signum  # the shell's code for a process ended by that signal
        except NonFiniteLoss as e:
            if args.debug:
                raise
            print(f"genrec: {e}", file=sys.stderr)
            return 3
    elif args.command == "demo":
        from .demo import run_demo

        run_demo(args.config, args.overrides, [m for m in args.models.split(",") if m])
    elif args.command == "data":
        from .data import load_dataset
        from .data.stats import format_stats

        stats = load_dataset(cfg.data).stats()
        print(format_stats(stats))
        if os.environ.get("GENREC_JSON"):
            print(json.dumps(stats))
    elif args.command == "sids":
        from .sids import build_sids

        if cfg.train.threads:
            import torch

            torch.set_num_threads(cfg.train.threads)
        build_sids(cfg)
    return 0


def _predict(args) -> int:
    from .predict import load_run, metrics_from_file, predict

    users = None
    if args.users:
        with open(args.users) as f:
            users = [line.strip() for line in f if line.strip()]
    run = load_run(args.run_dir)
    frame = predict(run, k=args.k, split=args.split, users=users)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    frame.to_csv(args.out, index=False) if args.out.endswith(".csv") else frame.to_parquet(args.out, index=False)
    msg = f"wrote {len(frame)} rows ({frame['user_row'].nunique()} users x top {args.k}) to {args.out}"
    if args.split != "next":
        ks = [k for k in run.cfg.eval.ks if k <= args.k]
        msg += "; " + ", ".join(f"{k}={v:.4f}" for k, v in metrics_from_file(frame, ks).items())
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
