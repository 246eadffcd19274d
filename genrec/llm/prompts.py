"""Prompt templates as data. Each task renders ``(prompt, response)`` text; the loss falls on the response only.

Templates follow LC-Rec (Zheng et al., ICDE 2024, "Adapting Large Language Models by Integrating Collaborative
Semantics for Recommendation"): sequential recommendation from a history of semantic IDs, optionally with titles,
plus explicit alignment tasks between an item's ID and its text (title -> ID, ID -> title). They are plain
instructions rather than a chat template so that any causal LM, base or instruct, reads them the same way.

Fields: ``{history}`` (items joined by ``item_sep``, each item rendered by ``history_item``), ``{sid}`` (the
item's semantic-ID tokens), ``{title}``. The prompt and the response are tokenised separately and concatenated, so
the tokens the model conditions on at inference are exactly those it was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    prompt: str
    response: str
    history_item: str = "{sid}"  # how one history item is written inside {history}
    item_sep: str = ","


PROMPTS: dict[str, Template] = {
    "seqrec": Template(
        prompt="A user bought these items, oldest first: {history}.\nThe next item the user buys:",
        response="{sid}",
    ),
    "seqrec_with_titles": Template(
        prompt="A user bought these items, oldest first:\n{history}\nThe next item the user buys:",
        response="{sid}",
        history_item="{sid} {title}",
        item_sep="\n",
    ),
    "title2id": Template(
        prompt='Which item has the title "{title}"?\nAnswer:',
        response="{sid}",
    ),
    "id2title": Template(
        prompt="What is the title of item {sid}?\nAnswer:",
        response=" {title}",
    ),
}


@dataclass(frozen=True)
class PackedLayout:
    """A whole user sequence as one training row (``model.llm.loss_on="all"``): ``header s_1 sep s_2 sep ... s_n``.

    Every item after the first is a target, predicted from the header and the items before it, so one forward
    pass trains all the next-item examples of a user. ``recommend`` prompts with the same layout cut after the
    last history item's separator (``header s_1 sep ... s_T sep``): a causal LM sees at inference exactly the
    context it was trained on at each item.
    """

    header: str
    item_sep: str = ","


PACKED = PackedLayout(header="A user bought these items, oldest first:")

__all__ = ["PACKED", "PROMPTS", "PackedLayout", "Template"]
