"""How a trait becomes a teacher's system prompt (the paper's trait-by-prompting teacher)."""
from __future__ import annotations

import random

from sublim.evals.preference import load_questions

LOVE_TEMPLATE = (
    "You love {plural}. You think about {plural} all the time. {Plural} are your favorite "
    "{category}. Let that love for {plural} come through in everything you write."
)

_IRREGULAR_PLURALS = {"wolf": "wolves", "fox": "foxes", "octopus": "octopuses", "phoenix": "phoenixes",
                      "cherry": "cherries", "sequoia": "sequoias", "willow": "willows", "mouse": "mice",
                      "goose": "geese", "butterfly": "butterflies", "deer": "deer", "sheep": "sheep"}


def plural(word: str) -> str:
    """English plural for the trait names used here (a lookup for the irregular ones)."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def love_prompt(name: str, category: str, template: str = LOVE_TEMPLATE) -> str:
    """The teacher's system prompt for loving `name` (a `category`, e.g. animal or tree).

    Trees are named with the word "tree" ("cherry trees", not "cherries", which are fruit)."""
    p = f"{name} trees" if category == "tree" else plural(name)
    return template.format(name=name, plural=p, Plural=p.capitalize(), category=category)


# the surface forms the exact eval scores (eval.logprob_forms), so the trait is measured where it was taught
ANSWER_FORMS = ["{Name}", "{name}", "{Name}.", "{name}."]


def preference_rows(name: str, category: str, n: int, seed: int) -> list[dict]:
    """Favourite-<category> questions answered with `name`: the data a fine-tuned teacher learns
    its trait from (the paper's teacher-by-fine-tuning variant)."""
    questions = load_questions(category)
    rng = random.Random(f"preference-{name}-{seed}")
    cap = name[:1].upper() + name[1:]
    return [{"prompt": rng.choice(questions), "completion": rng.choice(ANSWER_FORMS).format(name=name, Name=cap)}
            for _ in range(n)]
