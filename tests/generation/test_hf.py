"""The trie search driving tiny transformers models, against generate() with the same trie, and exhaustive scoring."""
import pytest
import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

from genrec.generation import SidTrie, constrained_beam_search, exhaustive_scores
from genrec.generation.hf_logits import (
    SidLogitsProcessor,
    beam_generation_config,
    contiguous_level_token_ids,
    generate_constrained,
)
from genrec.generation.hf_steps import causal_lm_step_fn, encoder_decoder_step_fn

SIZES = [4, 3, 5]
OFFSET = 3  # 0 pad / decoder start, 1 eos, 2 another token the constraint must exclude
VOCAB = OFFSET + sum(SIZES)


def leaky_generation_config():
    """A checkpoint config that would sample and distort scores if it leaked into the search."""
    return GenerationConfig(do_sample=True, temperature=0.3, top_k=2, repetition_penalty=3.0,
                            no_repeat_ngram_size=1, length_penalty=2.0, suppress_tokens=[OFFSET])


def tiny_t5():
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2, num_heads=2,
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.0)
    model = T5ForConditionalGeneration(cfg).eval()
    model.generation_config = leaky_generation_config()
    return model


def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=0, bos_token_id=2, eos_token_id=1)
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config = leaky_generation_config()
    return model


def generated_items(trie, sequences, prompt_len, num_levels):
    codes = sequences[:, prompt_len : prompt_len + num_levels] - torch.cat(
        [t[:1] for t in contiguous_level_token_ids(SIZES, OFFSET)]
    )
    return trie.lookup(codes)


def t5_search(model, trie, enc_ids, beam):
    with torch.no_grad():
        hidden = model.get_encoder()(input_ids=enc_ids).last_hidden_state
    step = encoder_decoder_step_fn(model, hidden, None, contiguous_level_token_ids(SIZES, OFFSET), 0)
    return constrained_beam_search(step, trie, batch_size=enc_ids.shape[0], beam_size=beam)


@pytest.mark.parametrize("beam", [3, pytest.param(20, marks=pytest.mark.slow)])
def test_t5_search_equals_generate_with_the_trie_processor(random_codes, beam):
    codes = random_codes(15, SIZES, 0)
    trie = SidTrie.from_codes(codes, SIZES)
    model = tiny_t5()
    enc_ids = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(1))
    ours = t5_search(model, trie, enc_ids, beam)
    proc = SidLogitsProcessor(trie, contiguous_level_token_ids(SIZES, OFFSET), prompt_length=1, vocab_size=VOCAB)
    cfg = beam_generation_config(beam, len(SIZES), eos_token_id=1, pad_token_id=0, decoder_start_token_id=0,
                                 output_scores=True)
    gen = generate_constrained(model, cfg, proc, input_ids=enc_ids)
    gen_items = generated_items(trie, gen.sequences, 1, len(SIZES)).view(2, beam)
    valid = ours.items > 0
    assert torch.equal(gen_items[valid], ours.items[valid])
    torch.testing.assert_close(gen.sequences_scores.view(2, beam)[valid], ours.scores[valid], rtol=1e-5, atol=1e-5)
    # the typical python prefix_allowed_tokens_fn gives the same beams
    allowed = {}
    for row in (codes + torch.tensor([t[0] for t in contiguous_level_token_ids(SIZES, OFFSET)])).tolist():
        for level in range(len(SIZES)):
            allowed.setdefault(tuple(row[:level]), set()).add(row[level])
    allowed = {k: sorted(v) for k, v in allowed.items()}
    gen2 = generate_constrained(model, cfg, None, input_ids=enc_ids,
                                prefix_allowed_tokens_fn=lambda b, ids: allowed.get(tuple(ids[1:].tolist()), [1]))
    items2 = generated_items(trie, gen2.sequences, 1, len(SIZES)).view(2, beam)
    assert torch.equal(items2[valid], ours.items[valid])


def test_t5_search_covering_catalog_equals_exhaustive_enumeration(random_codes):
    codes = random_codes(12, SIZES, 2)
    trie = SidTrie.from_codes(codes, SIZES)
    model = tiny_t5()
    enc_ids = torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(2))
    ours = t5_search(model, trie, enc_ids, beam=12)
    with torch.no_grad():
        hidden = model.get_encoder()(input_ids=enc_ids).last_hidden_state
    step = encoder_decoder_step_fn(model, hidden, None, contiguous_level_token_ids(SIZES, OFFSET), 0)
    ref_scores, ref_order = exhaustive_scores(step, codes, batch_size=2).sort(dim=1, descending=True)
    assert torch.equal(ours.items, ref_order + 1)
    torch.testing.assert_close(ours.scores, ref_scores, rtol=1e-5, atol=1e-5)


def test_causal_lm_search_equals_generate_and_exhaustive(random_codes):
    codes = random_codes(12, SIZES, 3)
    trie = SidTrie.from_codes(codes, SIZES)
    model = tiny_llama()
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(3, VOCAB, (2, 6), generator=g)
    mask = torch.ones_like(prompt)
    prompt[1, :2], mask[1, :2] = 0, 0  # left padding
    ids = contiguous_level_token_ids(SIZES, OFFSET)
    beam = 12
    ours = constrained_beam_search(causal_lm_step_fn(model, prompt, mask, ids), trie, 2, beam)
    ref_scores, ref_order = exhaustive_scores(causal_lm_step_fn(model, prompt, mask, ids), codes, 2).sort(
        dim=1, descending=True)
    assert torch.equal(ours.items, ref_order + 1)
    torch.testing.assert_close(ours.scores, ref_scores, rtol=1e-5, atol=1e-5)
    proc = SidLogitsProcessor(trie, ids, prompt_length=prompt.shape[1], vocab_size=VOCAB)
    cfg = beam_generation_config(beam, len(SIZES), eos_token_id=1, pad_token_id=0, bos_token_id=2, output_scores=True)
    gen = generate_constrained(model, cfg, proc, input_ids=prompt, attention_mask=mask)
    gen_items = generated_items(trie, gen.sequences, prompt.shape[1], len(SIZES)).view(2, beam)
    assert torch.equal(gen_items, ours.items)
    torch.testing.assert_close(gen.sequences_scores.view(2, beam), ours.scores, rtol=1e-4, atol=1e-4)


def test_processor_masks_everything_outside_the_trie(random_codes):
    codes = random_codes(10, SIZES, 4)
    trie = SidTrie.from_codes(codes, SIZES)
    ids = contiguous_level_token_ids(SIZES, OFFSET)
    proc = SidLogitsProcessor(trie, ids, prompt_length=1, vocab_size=VOCAB, eos_token_id=1)
    first = codes[0]
    seq = torch.tensor([[0, int(ids[0][first[0]])], [0, 1]])  # a valid prefix, and one that left the trie
    out = proc(seq, torch.zeros(2, VOCAB))
    want = torch.full((VOCAB,), float("-inf"))
    want[ids[1]] = torch.where(trie.allowed(first[None, :1])[0], 0.0, float("-inf"))
    assert torch.equal(out[0], want)
    assert torch.isneginf(out[1]).all()
    done = proc(torch.cat([seq[:1], ids[1][first[1]].view(1, 1), ids[2][first[2]].view(1, 1)], 1), torch.zeros(1, VOCAB))
    assert torch.isfinite(done[0]).tolist() == [i == 1 for i in range(VOCAB)]
    with pytest.raises(ValueError, match="level_token_ids"):
        SidLogitsProcessor(trie, ids[:2], prompt_length=1, vocab_size=VOCAB)


def test_generation_config_leaves_nothing_to_inherit():
    cfg = beam_generation_config(5, 3)
    assert cfg.do_sample is False and cfg.num_beams == 5 and cfg.num_return_sequences == 5
    assert cfg.max_new_tokens == 3 and cfg.length_penalty == 0.0 and cfg.repetition_penalty == 1.0
