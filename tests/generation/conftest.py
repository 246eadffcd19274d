"""Fixtures for the generation tests: tiny random catalogs of unique semantic IDs."""
import pytest
import torch


def random_codes(n, sizes, seed):
    """n distinct random codes; the last level is a collision digit so every row is unique."""
    g = torch.Generator().manual_seed(seed)
    head = torch.stack([torch.randint(0, k, (n,), generator=g) for k in sizes[:-1]], dim=1)
    # collision digit: rank of each row among rows with the same head
    digit = torch.zeros(n, dtype=torch.long)
    seen = {}
    for i, row in enumerate(map(tuple, head.tolist())):
        digit[i] = seen.get(row, 0)
        seen[row] = digit[i].item() + 1
    if int(digit.max()) >= sizes[-1]:
        raise AssertionError("test catalog needs a larger collision codebook")
    return torch.cat([head, digit[:, None]], dim=1)


@pytest.fixture(name="random_codes")
def random_codes_fixture():
    return random_codes
