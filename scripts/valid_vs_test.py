"""How far a dataset's test metric sits from its validation metric, read from the result records alone.

Leave-one-out validation scores each user's second-to-last item, the test the last one. A checkpoint is chosen on
validation, so a reader who wants to know what a validation figure promises for the test needs the ratio
test / validation at the selected epoch. This script collects it from every finished record of a dataset
(results/runs/<dataset>/*.json) whose test and selected validation both exist, and writes

    results/analysis/valid_vs_test_<dataset>.json

with one row per record (model, users in each split, both metrics, the ratio) and the ratio's spread over the
records whose validation used every user (no subset noise) and over all records.

    python scripts/valid_vs_test.py beauty [--metric ndcg@10]
"""
from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def selected_validation(record: dict) -> dict | None:
    """The validation entry of the record's best epoch (the checkpoint that was tested), or None."""
    best = record.get("best_epoch")
    for entry in record.get("validation_history") or []:
        if entry.get("epoch") == best:
            return entry
    return None


def rows(dataset: str, metric: str, root: str = ROOT) -> list[dict]:
    """One row per finished test record of ``dataset`` under ``root``/results/runs with a selected validation."""
    out = []
    for path in sorted(glob.glob(os.path.join(root, "results", "runs", dataset, "*.json"))):
        with open(path) as f:
            record = json.load(f)
        if record.get("split") != "test" or not record.get("training_finished", True):
            continue
        valid, test = selected_validation(record), record.get("metrics", {})
        if not valid or not valid.get(metric) or test.get(metric) is None:
            continue
        out.append({"record": os.path.relpath(path, root), "model": record.get("model"),
                    "valid_users": valid.get("users"), "test_users": test.get("users"),
                    f"valid_{metric}": round(valid[metric], 4), f"test_{metric}": round(test[metric], 4),
                    "ratio": round(test[metric] / valid[metric], 3)})
    return out


def spread(ratios: list[float]) -> dict:
    if not ratios:
        return {"records": 0}
    return {"records": len(ratios), "median": round(statistics.median(ratios), 3),
            "min": min(ratios), "max": max(ratios)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset")
    p.add_argument("--metric", default="ndcg@10")
    args = p.parse_args(argv)
    found = rows(args.dataset, args.metric)
    if not found:
        raise SystemExit(f"results/runs/{args.dataset}/: no finished test record with a selected validation "
                         f"{args.metric}")
    from genrec.training.records import git_commit  # HEAD, -dirty, or $GENREC_COMMIT outside a checkout

    commit = git_commit()
    all_users = max(r["test_users"] or 0 for r in found)  # the dataset's users: its largest test
    everyone = [r["ratio"] for r in found if r["valid_users"] == all_users]
    report = {
        "command": "python scripts/valid_vs_test.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "git_commit": commit, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": "none (reads result records)", "dataset": args.dataset, "metric": args.metric,
        "what": "test / validation at the tested (best) epoch; validation on a user subset adds its own noise and "
                "the selection bias of picking the best of several validations",
        "users": all_users, "ratio_validation_on_all_users": spread(everyone),
        "ratio_all_records": spread([r["ratio"] for r in found]),
        "rows": found,
    }
    out = os.path.join(ROOT, "results", "analysis", f"valid_vs_test_{args.dataset}.json")
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print(json.dumps({k: report[k] for k in ("ratio_validation_on_all_users", "ratio_all_records")}))
    print(f"wrote {os.path.relpath(out, ROOT)}")


if __name__ == "__main__":
    main()
