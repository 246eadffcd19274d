"""Build (or load) the semantic-ID artifact of a config stack before training, e.g. once per table on one GPU:

    python experiments/build_sids.py --config configs/tiger/beauty.yaml [--config configs/ablations/lsh.yaml] [--force] [--record results/sids/NAME.json]

Equivalent to ``genrec sids build``; prints the artifact path and its codebook sizes after dedup.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout, uninstalled
import time

from genrec.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--config", "-c", action="append", default=[], help="YAML file; repeat to stack (later wins)")
    p.add_argument("--force", action="store_true", help="rebuild even if the artifact exists")
    p.add_argument("--record", default="", help="also write a results record (report + provenance), e.g. "
                   "results/sids/beauty_rqvae.json, and its usage plot beside it")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. tokenizer.codebook_size=128")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"build_sids.py: {e}", file=sys.stderr)
        return 2
    from genrec.sids import build_sids

    start = time.time()
    sids = build_sids(cfg, force=args.force)
    if args.record:
        from genrec.sids import record_build

        command = " ".join(["python", "experiments/build_sids.py", *(argv if argv is not None else sys.argv[1:])])
        record_build(sids, args.record, command, time.time() - start, threads=cfg.train.threads)
    print(f"{cfg.data.name}: {tuple(sids.codes.shape)} codes, codebook sizes {list(sids.codebook_sizes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
