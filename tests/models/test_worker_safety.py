"""Collate functions run in forked DataLoader workers: they must read no device buffer (a CUDA tensor there crashes).

Stand-in for a GPU: the model's parameters and buffers are moved to the ``meta`` device, where any read fails;
collate must still build the same batch from its CPU copies.
"""
import itertools

import torch

from genrec.config import DecoderConfig
from genrec.models.decoder import DecoderRecommender

K = [4, 3, 2]


def _model():
    paths = list(itertools.product(*(range(k) for k in K)))[:15]
    codes = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.tensor(paths)])
    torch.manual_seed(0)
    return DecoderRecommender(DecoderConfig(dim=16, layers=1, heads=2, num_user_tokens=5), "sdpa", codes, K,
                              max_history=4)


def test_decoder_collate_reads_only_cpu_copies():
    examples = [{"user": 3, "history": torch.tensor([0, 0, 3, 7]), "target": 5},
                {"user": 9, "history": torch.tensor([1, 2, 3, 4]), "target": 6}]
    m = _model()
    before = m.collate(examples)
    m.to("meta")  # as if every buffer lived on a GPU the worker cannot touch
    assert m.vocab.codes.device.type == "meta"
    after = m.collate(examples)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
