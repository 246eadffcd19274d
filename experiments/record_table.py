"""A table of recorded runs under two protocols beside published rows (``configs/record_tables/<name>.yaml``).

    python experiments/record_table.py generative_beauty

Unlike ``run_table.py`` (which launches the cells of a table), this one only reads result records that exist,
named in the table file, one per protocol::

    name: generative_beauty
    title: ...
    metrics: [recall@5, ndcg@5, recall@10, ndcg@10]
    protocols: {all_items: every item a candidate (TIGER), exclude_history: history items removed (RecBole)}
    rows:
      SASRec (CE): {all_items: results/runs/beauty/<run>.json, exclude_history: results/runs/beauty/<run>.json}
    published:
      source: ...
      rows: {TIGER: {all_items: {recall@10: ..., ndcg@10: ...}}}

Each of our cells shows the record's metrics, parameters, training seconds and device (for a ``genrec eval``
record, those of the trained run's record, else of its ``trained`` block) and the device that tested it (the
Devices line lists both); a record that says
``training_finished: false`` is refused, unless the user stopped it (``train.finish=true``), which its row says.
Writes ``<name>.md``, ``.csv``, ``.png`` and ``.json``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import textwrap
import time

from omegaconf import OmegaConf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def load_rows(table: dict) -> list[dict]:
    rows = []
    for label, cells in table["rows"].items():
        for protocol, path in cells.items():
            if protocol not in table["protocols"]:
                raise ValueError(f"row {label!r}: protocol {protocol!r} is not one of {list(table['protocols'])}")
            full = os.path.join(REPO, path)
            if not os.path.isfile(full):
                raise FileNotFoundError(f"row {label!r} ({protocol}): record {path} does not exist")
            with open(full) as f:
                rec = json.load(f)
            stopped = rec.get("finished_by_user_at_epoch")  # train.finish=true: the user's choice, shown in the row
            if rec.get("training_finished") is False and stopped is None:
                raise ValueError(f"row {label!r}: {path} is an unfinished run (training_finished=false)")
            if rec.get("protocol", "all_items") != protocol:
                raise ValueError(f"row {label!r}: {path} was evaluated under {rec.get('protocol')!r}, not {protocol!r}")
            trained = rec
            if "evaluated_run" in rec:  # a `genrec eval` record: training facts come from the trained run's record
                base = os.path.join(os.path.dirname(full), rec["evaluated_run"] + ".json")
                if os.path.isfile(base):
                    with open(base) as f:
                        trained = json.load(f)
                elif rec.get("trained"):  # tested elsewhere than trained: the facts its run folder gave
                    facts = rec["trained"]
                    trained = {**facts, "device": "; ".join(facts.get("devices", []))}
            if stopped is not None:
                epochs = rec.get("config", {}).get("train", {}).get("epochs", "?")
                label = f"{label} [stopped by the user at epoch {stopped} of {epochs} (train.finish=true)]"
            rows.append({"row": label, "source": "ours", "protocol": protocol, "record": path,
                         **{m: rec["metrics"].get(m) for m in table["metrics"]},
                         **{f"{m}_se": rec["metrics"][f"{m}_se"] for m in table["metrics"]
                            if f"{m}_se" in rec["metrics"]},  # s.e. over the test users
                         "users": rec.get("users_evaluated"), "params": trained.get("num_params"),
                         "train_seconds": trained.get("train_seconds"), "device": trained.get("device", ""),
                         "test_device": rec.get("device", "")})
    pub = table.get("published", {})
    for label, cells in pub.get("rows", {}).items():
        for protocol, metrics in cells.items():
            rows.append({"row": label, "source": f"published: {pub.get('source', '')}", "protocol": protocol,
                         **{m: metrics.get(m) for m in table["metrics"]}})
    return rows


def write(table: dict, rows: list[dict], out_dir: str, command: str, t0: float) -> None:
    from genrec.training.records import write_record

    name, metrics = table["name"], table["metrics"]
    os.makedirs(out_dir, exist_ok=True)
    fmt = lambda v: "—" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731

    def cell(r: dict, m: str) -> str:
        se = r.get(f"{m}_se")
        return fmt(r.get(m)) + (f" ± {se:.4f}" if se is not None else "")

    lines = [f"# {table['title']}", "", table.get("notes", "").strip(), ""]
    for protocol, desc in table["protocols"].items():
        lines += [f"## {protocol}: {desc}", "",
                  "| row | " + " | ".join(metrics) + " | params | train s | source |",
                  "|---|" + "---|" * (len(metrics) + 3)]
        for r in (r for r in rows if r["protocol"] == protocol):
            params = f"{r['params'] / 1e6:.2f}M" if r.get("params") else "—"
            secs = f"{r['train_seconds']:.0f}" if r.get("train_seconds") is not None else "—"
            src = "ours" if r["source"] == "ours" else "published"
            lines.append(f"| {r['row']} | " + " | ".join(cell(r, m) for m in metrics) +
                         f" | {params} | {secs} | {src} |")
        lines.append("")
    devices = sorted({d for r in rows for d in (r.get("device"), r.get("test_device")) if d})
    if table.get("published"):
        lines += [f"Published rows: {table['published'].get('source', '')}.", ""]
    if any(f"{m}_se" in r for r in rows for m in metrics):
        lines += ["± : the standard error over the test users (recall: binomial; NDCG: per-user s.d. / √users, in "
                  "records written since it was added); one seed, the spread over seeds is not in it.", ""]
    lines += ["Devices: " + "; ".join(devices), "", f"Command: `{command}`. Records: the `record` column of "
              f"`{name}.csv`."]
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    keys = ["row", "source", "protocol", *metrics, *[f"{m}_se" for m in metrics], "users", "params", "train_seconds",
            "device", "test_device", "record"]
    with open(os.path.join(out_dir, f"{name}.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    _plot(table, rows, os.path.join(out_dir, f"{name}.png"))
    write_record(os.path.join(out_dir, f"{name}.json"), {"table": name, "rows": rows,
                                                          "wall_seconds": round(time.time() - t0, 1),
                                                          "command": command})


def _plot(table: dict, rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = "ndcg@10"
    protocols = list(table["protocols"])
    counts = [max(1, sum(r["protocol"] == p for r in rows)) for p in protocols]
    fig, axes = plt.subplots(len(protocols), 1, figsize=(10, 1.2 + 0.7 * sum(counts)), squeeze=False,
                             gridspec_kw={"height_ratios": counts})
    for ax, protocol in zip(axes[:, 0], protocols):
        sel = [r for r in rows if r["protocol"] == protocol and r.get(metric) is not None]
        labels = [textwrap.fill(r["row"] + ("" if r["source"] == "ours" else " (published)"), 60) for r in sel]
        ax.barh(labels, [r[metric] for r in sel],
                color=["tab:blue" if r["source"] == "ours" else "tab:gray" for r in sel])
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"{protocol}: {metric}")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the whole of every (wrapped) row label
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("table", help="name of configs/record_tables/<name>.yaml, or a path")
    p.add_argument("--out-dir", default=os.path.join(REPO, "results", "tables"))
    args = p.parse_args()
    t0 = time.time()
    path = args.table if args.table.endswith(".yaml") else \
        os.path.join(REPO, "configs", "record_tables", f"{args.table}.yaml")
    table = OmegaConf.to_container(OmegaConf.load(path))
    rows = load_rows(table)
    write(table, rows, args.out_dir, "python experiments/record_table.py " + " ".join(sys.argv[1:]), t0)
    print(f"wrote {args.out_dir}/{table['name']}.md (+ .csv .png .json)")


if __name__ == "__main__":
    main()
