"""Human-readable dataset statistics (the figures papers report: users, items, interactions, density, lengths)."""
from __future__ import annotations


def _num(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if v.is_integer() else f"{v:,.2f}"
    return str(v)


def format_stats(stats: dict) -> str:
    """Format ``InteractionData.stats()`` as a small aligned two-column table.

    Example::

        dataset                  beauty
        users                    22,363
        items                    12,101
        items with interactions  12,101
        interactions             198,502
        density                  0.0734%
        sequence length          mean 8.88, median 6, min 5, p90 14, max 204
        item count               min 5, max 431
        timestamps               none
        skipped                  none

    Keys that are absent are left out; keys this function does not know are printed at the end as they are.
    """
    rows: list[tuple[str, str]] = []
    done = set()

    def take(*keys):
        done.update(keys)
        return [stats[k] for k in keys if k in stats]

    for key in ("dataset", "users", "items", "items_with_interactions", "interactions"):
        for v in take(key):
            rows.append((key.replace("_", " "), _num(v)))
    for v in take("density"):
        rows.append(("density", f"{100 * v:.4f}%"))
    seq = [(lbl, stats[k]) for lbl, k in (("mean", "seq_len_mean"), ("median", "seq_len_median"),
                                           ("min", "seq_len_min"), ("p90", "seq_len_p90"), ("max", "seq_len_max"))
           if k in stats]
    done.update({"seq_len_mean", "seq_len_median", "seq_len_min", "seq_len_p90", "seq_len_max"})
    if seq:
        rows.append(("sequence length", ", ".join(f"{lbl} {_num(v)}" for lbl, v in seq)))
    cnt = [(lbl, stats[k]) for lbl, k in (("min", "item_count_min"), ("max", "item_count_max")) if k in stats]
    done.update({"item_count_min", "item_count_max"})
    if cnt:
        rows.append(("item count", ", ".join(f"{lbl} {_num(v)}" for lbl, v in cnt)))
    for v in take("timestamps"):
        rows.append(("timestamps", v))
    if "skipped" in stats:
        done.add("skipped")
        skipped = stats["skipped"] or {}
        if not skipped:
            rows.append(("skipped", "none"))
        for i, (reason, n) in enumerate(sorted(skipped.items())):
            rows.append(("skipped" if i == 0 else "", f"{reason.replace('_', ' ')}: {_num(n)}"))
    for key in stats:
        if key not in done:
            rows.append((key.replace("_", " "), _num(stats[key])))
    width = max(len(k) for k, _ in rows) if rows else 0
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
