"""A small sentence-pair data set the project generates itself, for the offline quickstart.

Each example pairs a news-style sentence with either a paraphrase of it (label 1: the same
event told with synonyms, reordered) or a sentence about a different event (label 0: two of
its four facts changed, told in the same style). It has the columns of GLUE MRPC
(sentence1, sentence2, label), it is deterministic for a seed, and a pretrained encoder
learns it well above chance within one epoch.
"""

from __future__ import annotations

import random

# Each slot: entries of (canonical wording, paraphrases with the same meaning).
SUBJECTS = [
    ("the company", ["the firm", "the business"]),
    ("the city council", ["the council", "local lawmakers"]),
    ("the research team", ["the scientists", "the researchers"]),
    ("the football club", ["the team", "the club"]),
    ("the hospital", ["the medical center", "the clinic"]),
    ("the school board", ["the board of education", "school officials"]),
    ("the airline", ["the carrier", "the air carrier"]),
    ("the bank", ["the lender", "the financial group"]),
    ("the police", ["officers", "the police force"]),
    ("the museum", ["the gallery", "the exhibition hall"]),
    ("the government", ["officials", "the administration"]),
    ("the union", ["the workers' union", "union leaders"]),
]
VERBS = [
    ("announced", ["revealed", "made public"]),
    ("approved", ["signed off on", "gave the green light to"]),
    ("rejected", ["turned down", "refused"]),
    ("delayed", ["postponed", "put off"]),
    ("cancelled", ["called off", "scrapped"]),
    ("launched", ["started", "rolled out"]),
    ("criticized", ["condemned", "spoke out against"]),
    ("expanded", ["enlarged", "extended"]),
]
OBJECTS = [
    ("a new budget plan", ["a fresh spending plan", "a revised budget"]),
    ("the merger", ["the planned combination", "the deal to merge"]),
    ("a vaccine trial", ["a study of the vaccine", "a clinical vaccine test"]),
    ("the stadium project", ["plans for the stadium", "the arena project"]),
    ("a tax increase", ["higher taxes", "a rise in taxes"]),
    ("the summer festival", ["the festival this summer", "the annual summer fair"]),
    ("its hiring program", ["its recruitment drive", "its plan to hire staff"]),
    ("the bridge repairs", ["work to fix the bridge", "the repair of the bridge"]),
    ("a climate study", ["research on the climate", "a study of climate change"]),
    ("the ticket prices", ["the cost of tickets", "what tickets cost"]),
]
TIMES = [
    ("on Monday", ["Monday", "early this week"]),
    ("on Friday", ["Friday", "at the end of the week"]),
    ("last month", ["a month ago", "in the previous month"]),
    ("this morning", ["earlier today", "on this morning"]),
    ("in March", ["during March", "in the month of March"]),
    ("after the election", ["once the election was over", "following the vote"]),
]
SLOTS = (SUBJECTS, VERBS, OBJECTS, TIMES)


def _sentence_case(text: str) -> str:
    return text[0].upper() + text[1:]


def _plain(facts: tuple[int, ...]) -> str:
    subject, verb, obj, time = (slot[i][0] for slot, i in zip(SLOTS, facts))
    return f"{_sentence_case(subject)} {verb} {obj} {time}."


def _retold(facts: tuple[int, ...], rng: random.Random) -> str:
    """The same facts in other words: synonyms for every slot, sometimes the time first."""
    subject, verb, obj, time = (rng.choice(slot[i][1]) for slot, i in zip(SLOTS, facts))
    if rng.random() < 0.5:
        return f"{_sentence_case(time)}, {subject} {verb} {obj}."
    return f"{_sentence_case(subject)} {verb} {obj} {time}."


def paraphrase_split(num_examples: int, seed: int) -> dict[str, list]:
    """`num_examples` balanced pairs as columns: sentence1, sentence2, label."""
    rng = random.Random(seed)
    rows: dict[str, list] = {"sentence1": [], "sentence2": [], "label": []}
    for index in range(num_examples):
        facts = tuple(rng.randrange(len(slot)) for slot in SLOTS)
        label = index % 2
        other = facts
        if label == 0:
            # A different event: change two of the four facts.
            changed = list(facts)
            for slot_index in rng.sample(range(len(SLOTS)), 2):
                choices = [i for i in range(len(SLOTS[slot_index])) if i != facts[slot_index]]
                changed[slot_index] = rng.choice(choices)
            other = tuple(changed)
        rows["sentence1"].append(_plain(facts))
        rows["sentence2"].append(_retold(other, rng))
        rows["label"].append(label)
    return rows


BUILTIN_DATASETS = {
    # name -> split sizes and seeds (train and validation are drawn independently)
    "paraphrase": {"train": (1000, 1), "validation": (200, 2)},
}


def builtin_dataset(name: str) -> dict[str, dict[str, list]]:
    if name not in BUILTIN_DATASETS:
        raise KeyError(name)
    return {split: paraphrase_split(n, seed) for split, (n, seed) in BUILTIN_DATASETS[name].items()}
