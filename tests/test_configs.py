"""Every YAML under configs/ (recursively) loads through the schema and names only registered kinds.

Experiment files (frozen bases and ablation deltas) load alone over the schema defaults: a delta holds only valid
keys. Table files (configs/tables/) load with ``experiments/run_table.load_table``, which checks that every cell's
config files exist, and every cell's full stack is checked like a single file. Accelerate launch configs
(configs/accelerate/) are checked as accelerate configs.
"""
import glob
import importlib.util
import os
import re
import sys

import pytest

from genrec.config import ExperimentConfig, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
ALL = sorted(glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True)
             + glob.glob(os.path.join(CONFIGS, "**", "*.yml"), recursive=True))


def _under(sub: str) -> list[str]:
    return [p for p in ALL if os.path.relpath(p, CONFIGS).split(os.sep)[0] == sub]


TABLES, ACCELERATE, RECORD_TABLES = _under("tables"), _under("accelerate"), _under("record_tables")
EXPERIMENTS = [p for p in ALL if p not in TABLES and p not in ACCELERATE and p not in RECORD_TABLES]
FROZEN = [p for p in EXPERIMENTS if os.path.relpath(p, CONFIGS).split(os.sep)[0] in
          ("sasrec", "tiger", "gr", "llm", "parallel", "hstu") and not os.path.basename(p).startswith("cpu_")]


def _ids(paths):
    return [os.path.relpath(p, CONFIGS) for p in paths]


def check_registries(cfg: ExperimentConfig, where: str) -> None:
    """Every registry key the config names exists, plus cheap cross-field checks."""
    from genrec.attention import ATTENTION
    from genrec.data import DATASETS, READERS
    from genrec.embeddings import SOURCES
    from genrec.models import GENERATIVE, MODELS
    from genrec.models.sasrec import LOSSES
    from genrec.tokenizers import TOKENIZERS
    from genrec.training.optim import OPTIMIZERS, SCHEDULERS

    checks = [("model.kind", cfg.model.kind, MODELS), ("model.attention", cfg.model.attention, ATTENTION),
              ("tokenizer.kind", cfg.tokenizer.kind, TOKENIZERS), ("embedding.source", cfg.embedding.source, SOURCES),
              ("train.scheduler", cfg.train.scheduler, SCHEDULERS), ("train.optimizer", cfg.train.optimizer, OPTIMIZERS),
              ("model.sasrec.loss", cfg.model.sasrec.loss, LOSSES), ("data.name", cfg.data.name, DATASETS)]
    if cfg.data.reader:
        checks.append(("data.reader", cfg.data.reader, READERS))
    for field, key, table in checks:
        assert key in table, f"{where}: {field}={key!r} is not one of {sorted(table)}"
    m = re.fullmatch(r"(recall|ndcg|hr|mrr)@(\d+)", cfg.train.monitor)
    assert m and int(m.group(2)) in cfg.eval.ks, f"{where}: train.monitor={cfg.train.monitor!r} not among eval.ks"
    if cfg.model.kind in GENERATIVE:
        assert cfg.eval.beam_size >= max(cfg.eval.ks), f"{where}: eval.beam_size < max(eval.ks)"


def test_configs_found():
    assert len(EXPERIMENTS) >= 10 and os.path.join(CONFIGS, "tiny.yaml") in EXPERIMENTS


@pytest.mark.parametrize("path", EXPERIMENTS, ids=_ids(EXPERIMENTS))
def test_config_loads_with_registered_names(path):
    cfg = load_config([path])
    check_registries(cfg, os.path.relpath(path, REPO))


@pytest.mark.parametrize("path", FROZEN, ids=_ids(FROZEN))
def test_frozen_config_header_gives_the_command(path):
    header = []
    for line in open(path):
        if not line.startswith("#"):
            break
        header.append(line)
    text = "".join(header)
    assert re.search(r"(genrec train|experiments/\w+\.py|accelerate launch)", text), \
        f"{path}: a frozen config's header comment must give the exact command that runs it"


def _run_table():
    spec = importlib.util.spec_from_file_location("run_table", os.path.join(REPO, "experiments", "run_table.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["run_table"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("path", TABLES, ids=_ids(TABLES))
def test_table_cells_exist_and_load(path, monkeypatch):
    monkeypatch.chdir(REPO)
    run_table = _run_table()
    table = run_table.load_table(path)  # raises naming the cell when a config file is missing
    assert table.cells and table.seeds
    for cell in table.cells:
        cfg = load_config(cell.configs, [*table.overrides, *cell.overrides])
        check_registries(cfg, f"{os.path.relpath(path, REPO)} cell {cell.label!r}")
        if cell.published:
            assert cell.published in table.published, f"{path}: cell {cell.label!r} names no published row"
    if table.launcher == "accelerate" and table.accelerate_config:
        assert os.path.isfile(table.accelerate_config), f"{path}: {table.accelerate_config} does not exist"


@pytest.mark.parametrize("path", ACCELERATE, ids=_ids(ACCELERATE))
def test_accelerate_config_loads(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(path)
    assert cfg.num_processes is None or cfg.num_processes >= 1


@pytest.mark.parametrize("path", RECORD_TABLES, ids=_ids(RECORD_TABLES))
def test_record_table_names_existing_finished_records(path):
    spec = importlib.util.spec_from_file_location("record_table", os.path.join(REPO, "experiments", "record_table.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from omegaconf import OmegaConf

    rows = mod.load_rows(OmegaConf.to_container(OmegaConf.load(path)))  # raises naming a missing or unfinished record
    assert any(r["source"] == "ours" for r in rows)
