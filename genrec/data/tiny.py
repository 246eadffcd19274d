"""The embedded default dataset: a small synthetic shop, generated in memory, no download.

240 items (8 product types x 6 brands x 5 variants) with titles, brands and categories, and 600 users whose
sequences follow learnable rules: most steps move to the item's fixed "successor" (same product type, next variant
or a sister brand), some stay in the product type, a few jump anywhere. Item text carries the product type and
brand, so content-based semantic IDs group related items. Deterministic for a given seed.
"""
from __future__ import annotations

import numpy as np

from .interactions import InteractionData

PRODUCTS = [
    ("Nail Polish", ["Beauty", "Makeup", "Nails"]),
    ("Lipstick", ["Beauty", "Makeup", "Lips"]),
    ("Shampoo", ["Beauty", "Hair Care", "Shampoos"]),
    ("Conditioner", ["Beauty", "Hair Care", "Conditioners"]),
    ("Face Cream", ["Beauty", "Skin Care", "Face", "Creams"]),
    ("Sunscreen", ["Beauty", "Skin Care", "Sun"]),
    ("Eau de Parfum", ["Beauty", "Fragrance", "Women"]),
    ("Body Wash", ["Beauty", "Bath & Body", "Cleansers"]),
]
BRANDS = ["Lumière", "Nordic Pure", "Velvet & Co", "Sunleaf", "Oceana", "Red Maple"]
VARIANTS = ["Classic", "Ultra Gentle", "Rose Gold", "Travel Size", "Limited Edition"]


def make_tiny(num_users: int = 600, seed: int = 0) -> InteractionData:
    rng = np.random.default_rng(seed)
    items, by_type = [], {}
    for p, (product, cats) in enumerate(PRODUCTS):
        for b, brand in enumerate(BRANDS):
            for v, variant in enumerate(VARIANTS):
                item_id = len(items) + 1
                items.append({
                    "item_id": item_id,
                    "title": f"{brand} {variant} {product}, {50 + 25 * v} ml",
                    "brand": brand,
                    "categories": [cats],
                    "price": round(4.99 + 3 * b + 1.5 * v, 2),
                })
                by_type.setdefault(p, []).append(item_id)
    n = len(items)
    type_of = np.zeros(n + 1, dtype=np.int64)
    for p, ids in by_type.items():
        type_of[ids] = p
    # Each item has one fixed successor in its product type: a learnable next-item rule.
    successor = np.zeros(n + 1, dtype=np.int64)
    for p, ids in by_type.items():
        perm = rng.permutation(ids)
        successor[perm] = np.roll(perm, -1)
    sequences = []
    for _ in range(num_users):
        length = int(rng.integers(5, 16))
        seq = [int(rng.choice(by_type[int(rng.integers(len(PRODUCTS)))]))]
        while len(seq) < length:
            r, last = rng.random(), seq[-1]
            if r < 0.7:
                nxt = int(successor[last])
            elif r < 0.9:
                nxt = int(rng.choice(by_type[int(type_of[last])]))
            else:
                nxt = int(rng.integers(1, n + 1))
            seq.append(nxt)
        sequences.append(np.array(seq, dtype=np.int64))
    users = np.arange(1, num_users + 1, dtype=np.int64)
    return InteractionData("tiny", sequences, users, items, source=f"genrec.data.tiny(seed={seed})").validate()
