"""Prompt templates as data. Each task renders ``(prompt, response)`` text; the loss falls on the response only.

Templates follow LC-Rec (Zheng et al., ICDE 2024, "Adapting Large Language Models by Integrating Collaborative
Semantics for Recommendation"): sequential recommendation from a history of semantic IDs, optionally with titles,
plus explicit alignment tasks between an item's ID and its text (title -> ID, ID -> title). They are plain
instructions rather than a chat template so that any causal LM, base or instruct, reads them the same way.

Fields: ``{history}`` (items joined by ``item_sep``, each item rendered by ``history_item``; ``sequences`` tasks
only), ``{sid}`` (the item's semantic-ID tokens) and the item's text fields ``{title}``, ``{brand}``,
``{categories}``, ``{description}`` (see ``ITEM_FIELDS``). The prompt and the response are tokenised separately and
concatenated, so the tokens the model conditions on at inference are exactly those it was trained on.

A task is data: ``model.llm.prompts`` adds (or replaces) templates by name, e.g.::

    model:
      llm:
        prompts:
          brand2id: {pool: items, prompt: "Which {brand} item is \"{title}\"?\nAnswer:", response: "{sid}"}
        tasks: {seqrec: 1.0, brand2id: 0.5}
"""
from __future__ import annotations

import string
from dataclasses import dataclass, fields

ITEM_FIELDS = ("sid", "title", "brand", "categories", "description")  # what a template may say about an item
RECOMMEND_TASKS = ("seqrec", "seqrec_with_titles")  # the prompts recommend() renders (model.llm.with_titles)
POOLS = ("sequences", "items")


@dataclass(frozen=True)
class Template:
    """One task's text. ``pool``: ``sequences`` = one example per next-item training example (its history fills
    ``{history}``, its target the item fields); ``items`` = one example per catalogue item that has every text field
    the template uses (an item without a description never gets a ``{description}`` prompt)."""

    prompt: str
    response: str
    history_item: str = "{sid}"  # how one history item is written inside {history}
    item_sep: str = ","
    pool: str = "sequences"

    def item_fields(self) -> set[str]:
        """The item fields the prompt and response use (not those of history items)."""
        return (_fields(self.prompt) | _fields(self.response)) - {"history"}


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def template_from_config(name: str, spec: dict) -> Template:
    """A ``model.llm.prompts.<name>`` entry as a checked Template.

    Raises:
        ValueError: one line naming the key and what was expected (unknown keys or fields, a missing prompt or
            response, a pool other than sequences/items, ``{history}`` outside a sequences prompt).
    """
    where = f"model.llm.prompts.{name}"
    keys = [f.name for f in fields(Template)]
    for key in spec:
        if key not in keys:
            raise ValueError(f"{where}: unknown key {key!r}; expected {keys}")
    for key, value in spec.items():
        if not isinstance(value, str):
            raise ValueError(f"{where}.{key} must be a string, got {value!r}; quote it, e.g. \"{{sid}}\" (YAML and "
                             f"overrides read unquoted {{...}} as a mapping)")
    for key in ("prompt", "response"):
        if not str(spec.get(key) or "").strip():
            raise ValueError(f"{where}.{key} is missing or empty (a template needs a prompt and a response)")
    tpl = Template(**{k: str(v) for k, v in spec.items()})
    if tpl.pool not in POOLS:
        raise ValueError(f"{where}.pool={tpl.pool!r} is not one of {list(POOLS)}")
    allowed = {"prompt": set(ITEM_FIELDS) | ({"history"} if tpl.pool == "sequences" else set()),
               "response": set(ITEM_FIELDS), "history_item": set(ITEM_FIELDS), "item_sep": set()}
    for key, ok in allowed.items():
        try:
            bad = sorted(_fields(getattr(tpl, key)) - ok)
        except ValueError as e:  # unbalanced braces
            raise ValueError(f"{where}.{key}={getattr(tpl, key)!r}: {e}") from None
        if bad:
            raise ValueError(f"{where}.{key} uses {{{bad[0]}}}; its fields are {sorted(ok)}"
                             + (" ({history} is for pool: sequences)" if bad[0] == "history" else ""))
    if tpl.pool == "sequences" and "history" not in _fields(tpl.prompt):
        raise ValueError(f"{where}.prompt has no {{history}}: a sequences task conditions on the user's history")
    return tpl


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
        pool="items",
    ),
    "id2title": Template(
        prompt="What is the title of item {sid}?\nAnswer:",
        response=" {title}",
        pool="items",
    ),
    # LC-Rec's item2index from the item's description (items without one are not in its pool)
    "desc2id": Template(
        prompt='Which item is described as "{description}"?\nAnswer:',
        response="{sid}",
        pool="items",
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



def templates(custom: dict | None = None) -> dict[str, Template]:
    """The built-in templates with ``model.llm.prompts`` entries added or replacing them by name.

    The recommendation prompts (``seqrec``, ``seqrec_with_titles``: the ones ``recommend`` renders, with no target)
    must stay ``sequences`` templates whose prompt says nothing about the target item: a ``{sid}`` or ``{title}``
    there would show the answer in training and be empty at inference.
    """
    out = {**PROMPTS, **{name: template_from_config(name, dict(spec)) for name, spec in (custom or {}).items()}}
    for name in RECOMMEND_TASKS:
        tpl = out[name]
        leaked = sorted(_fields(tpl.prompt) - {"history"})
        if tpl.pool != "sequences" or leaked:
            raise ValueError(f"model.llm.prompts.{name}: recommend() prompts with it, so it needs pool: sequences "
                             f"and a prompt without the target's fields; got pool {tpl.pool!r}, prompt fields "
                             f"{leaked} (history items are written by history_item)")
    return out


__all__ = ["ITEM_FIELDS", "PACKED", "POOLS", "PROMPTS", "RECOMMEND_TASKS", "PackedLayout", "Template", "template_from_config",
           "templates"]
