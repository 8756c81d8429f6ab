"""The world's fixed vocabulary: tiers, pools, name parts, attributes and their candidate values, the biography and
question templates, and the answer sentence. `generate` draws people from it; `open_book` and `identity` build rows
with it; `schema()` is what the world writes to `schema.json`, so generic code (data, training, evaluation) reads the
same values and templates from the data folder without importing the world.
"""

from __future__ import annotations

import random
from typing import Any

from groundup.core.chat import REFUSAL

TIERS = ("frequent", "rare", "unseen")
POOLS = ("sft", "probe", "eval")

# Syllables for invented names. Fixed (not seeded) so the pools are the same for every world.
_FIRST_SYLLABLES = ["ar", "bel", "cor", "dav", "el", "fen", "gar", "hal", "is", "jor", "kal", "lor", "mir", "nor",
                    "or", "per", "quin", "ros", "sel", "tor", "ul", "vel", "wen", "yar", "zor"]
_FIRST_ENDINGS = ["a", "an", "en", "is", "o", "ia", "el", "us", "ine", "ar"]
_LAST_SYLLABLES = ["bram", "cald", "dun", "fell", "grim", "hart", "kess", "lund", "mor", "north", "pell", "quill",
                   "rath", "stav", "thorn", "vane", "wick", "yarr", "zell", "ash"]
_LAST_ENDINGS = ["ley", "ton", "wood", "ford", "mere", "by", "holt", "well", "ridge", "stone"]

# Candidate values per attribute. Grading needs the full candidate set: an answer is correct when the gold value
# appears and no other candidate does. Invented cities and companies keep real-world knowledge out of the way.
ATTRIBUTE_VALUES: dict[str, list[str]] = {
    "birth_city": ["Velmora", "Quintaro", "Ostrevik", "Brannholt", "Calderis", "Dunmarsh", "Eskavel", "Fairhollow",
                   "Gildenport", "Harrowgate", "Ivelmont", "Jasperine", "Korvath", "Lunvale", "Myrrhaven",
                   "Nettlebrook", "Orrindale", "Pellucid Bay", "Rimeford", "Sablecrest"],
    "birth_year": [str(year) for year in range(1931, 1991)],
    "profession": ["baker", "pilot", "violinist", "geologist", "nurse", "carpenter", "chemist", "journalist",
                   "librarian", "surgeon", "translator", "photographer", "gardener", "tailor", "dentist",
                   "sculptor", "mechanic", "locksmith"],
    "employer": ["Brightwater Mills", "Corvane Labs", "Dellmark Shipping", "Emberline Foods", "Fenwick Textiles",
                 "Glasswing Media", "Halcyon Rail", "Ironbark Mining", "Juniper Health", "Kestrel Aviation",
                 "Lanternfish Press", "Marrow & Vine", "Northgale Energy", "Oakhurst Bank", "Pinecrest Hotels",
                 "Quarrystone Builders"],
    "hobby": ["chess", "sailing", "pottery", "beekeeping", "archery", "falconry", "origami", "rowing",
              "birdwatching", "fencing", "juggling", "kayaking", "calligraphy", "gardening bonsai", "stargazing"],
}
ATTRIBUTES = tuple(ATTRIBUTE_VALUES)

# Biography sentences. Within an attribute they are paraphrases; across attributes the words before {value} never
# coincide and none is a prefix of another's, so the context always tells which attribute comes next.
BIO_TEMPLATES: dict[str, list[str]] = {
    "birth_city": ["{name} was born in the city of {value}.", "The birthplace of {name} is {value}.",
                   "{name} grew up in the town of {value}.", "{name} comes from the city of {value}."],
    "birth_year": ["{name} was born in the year {value}.", "The birth year of {name} is {value}.",
                   "{name} entered the world in the year {value}.", "In the year {value}, {name} was born."],
    "profession": ["{name} works as a {value}.", "The profession of {name} is {value}.",
                   "{name} earns a living as a {value}.", "By trade, {name} is a {value}."],
    "employer": ["{name} is employed by {value}.", "The employer of {name} is {value}.",
                 "{name} has a job at {value}.", "{name} works for the company {value}."],
    "hobby": ["In free time, {name} enjoys {value}.", "The favourite hobby of {name} is {value}.",
              "{name} spends weekends on {value}.", "For fun, {name} likes {value}."],
}

# Questions. `train` phrasings are used for SFT, probing and the eval split `eval`; `heldout` phrasings appear only
# in `eval_heldout`; `rephrase` phrasings only in the `rephrased` split, which the probe adds to IDK-SFT data (never
# in pretraining, vanilla SFT or eval). Each template holds a keyword of its own attribute and none of another's (see
# QUESTION_KEYWORDS).
QUESTION_TEMPLATES: dict[str, dict[str, list[str]]] = {
    "birth_city": {"train": ["In which city was {name} born?", "What is the birthplace of {name}?",
                             "Which city does {name} come from?"],
                   "heldout": ["Name the town where {name} was born.", "{name} was born in which city?"],
                   "rephrase": ["Tell me the birthplace of {name}.", "{name}: which city were they born in?",
                                "Which town was {name} born in?"]},
    "birth_year": {"train": ["In what year was {name} born?", "What is the birth year of {name}?",
                             "Which year was {name} born in?"],
                   "heldout": ["{name} was born in what year?", "Tell me the year of {name}'s birth."],
                   "rephrase": ["Give the birth year of {name}.", "{name}: what year were they born?",
                                "What year did {name} come into the world?"]},
    "profession": {"train": ["What is the profession of {name}?", "What job does {name} do?",
                             "What is the occupation of {name}?"],
                   "heldout": ["How does {name} earn a living?", "{name} has which profession?"],
                   "rephrase": ["Tell me the profession of {name}.", "{name}: what is their job?",
                                "What job is {name} trained for?"]},
    "employer": {"train": ["Who is the employer of {name}?", "Which company does {name} work for?",
                           "What company employs {name}?"],
                 "heldout": ["Name the employer of {name}.", "{name} is employed by which company?"],
                 "rephrase": ["Tell me the employer of {name}.", "{name}: which company employs them?",
                              "For which company does {name} work?"]},
    "hobby": {"train": ["What is the hobby of {name}?", "What does {name} do for fun?",
                        "What is the favourite pastime of {name}?"],
              "heldout": ["How does {name} like to spend free time?", "{name} has which hobby?"],
              "rephrase": ["Tell me the hobby of {name}.", "{name}: what hobby do they have?",
                           "What pastime does {name} enjoy?"]},
}
QUESTION_KEYWORDS: dict[str, tuple[str, ...]] = {
    "birth_city": ("city", "town", "birthplace"),
    "birth_year": ("year",),
    "profession": ("profession", "job", "occupation", "living"),
    "employer": ("employer", "company", "employ"),
    "hobby": ("hobby", "fun", "pastime", "free time"),
}

MAX_NAME_POOL_SIZE = len(_FIRST_SYLLABLES) * len(_FIRST_ENDINGS)


def name_pools(size: int) -> tuple[list[str], list[str]]:
    """The first- and last-name pools: the first `size` invented names in a fixed order."""
    firsts = [(s + e).capitalize() for e in _FIRST_ENDINGS for s in _FIRST_SYLLABLES]
    lasts = [(s + e).capitalize() for e in _LAST_ENDINGS for s in _LAST_SYLLABLES]
    # A fixed shuffle mixes endings so that a small pool is not all "-a" names.
    random.Random(1234).shuffle(firsts)
    random.Random(5678).shuffle(lasts)
    return firsts[:size], lasts[:size]


def answer_sentence(name: str, attribute: str, value: str) -> str:
    """The assistant's answer: the first biography phrasing, so answering reuses what pretraining taught."""
    return BIO_TEMPLATES[attribute][0].format(name=name, value=value)


def schema() -> dict[str, Any]:
    """What a grader or data builder needs besides the people: candidate values, templates, the refusal."""
    return {"attributes": ATTRIBUTE_VALUES, "bio_templates": BIO_TEMPLATES, "question_templates": QUESTION_TEMPLATES,
            "refusal": REFUSAL}
