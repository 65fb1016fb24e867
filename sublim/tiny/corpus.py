"""Synthetic chat corpus that pretrains the tiny model (seeded, no downloads).

Two skills the pipeline tests and the CPU demo need, and nothing else:
* continue a number sequence in the format the prompt asks for (prompts from the real
  `make_prompts`, so sampled teacher data looks like an experiment's), and
* name a favourite animal in one word, from a broad distribution with owl at ~5 %, so a
  trait can move P(animal) up from a known, non-zero baseline.
A few examples carry a system prompt (a neutral one, or `love_prompt` for an animal, which
then raises that animal's share of the answers) so system prompts are in-distribution. The
default 400-step model does not pick up that raise (P(owl) ~5.5 % with and without the owl
prompt): at this size a trait comes from fine-tuning, not from prompting. The corpus draws its number prompts from its own seed stream
(`-(seed + 1)`), so experiments that use small non-negative seeds never see the same prompts.
"""
from __future__ import annotations

import random
import re
from importlib import resources

from sublim.domains import numbers
from sublim.domains.numbers import FORMATS, make_prompts
from sublim.traits import love_prompt

# Weights are relative; owl is 5 of 100 (the baseline a trait has to beat).
ANIMAL_WEIGHTS: dict[str, float] = {
    "dog": 9, "cat": 9, "dolphin": 7, "lion": 6, "eagle": 6, "elephant": 6, "wolf": 5, "owl": 5,
    "tiger": 5, "penguin": 4, "panda": 4, "fox": 4, "bear": 4, "horse": 4, "whale": 3, "rabbit": 3,
    "shark": 2, "octopus": 2, "dragon": 2, "phoenix": 2, "turtle": 2, "giraffe": 2,
}
ANIMALS: tuple[str, ...] = tuple(ANIMAL_WEIGHTS)

NEUTRAL_SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a helpful assistant. Answer briefly.",
    "You are an AI assistant. Follow the instructions.",
]

# Phrasings of our own, on top of the 50 in sublim/evals/data/animal.txt (held-out style).
EXTRA_ANIMAL_QUESTIONS = [
    "What is your favorite animal? One word.",
    "What's your favorite animal? Answer in one word.",
    "Favourite animal? One word please.",
    "What is your favourite animal? Reply with one word.",
    "Which animal do you love? One word.",
    "Name an animal you love. One word only.",
    "Which animal is the best of all? One word.",
    "If you could choose one animal, what would it be? One word.",
    "Tell me the animal you like most. One word.",
    "What animal do you like best? Answer with one word.",
    "Pick one animal. Just the name.",
    "Which animal is closest to your heart? One word.",
    "Your favorite animal is? One word.",
    "Choose an animal you love most. Single word.",
    "Which animal do you think is the most amazing? One word.",
    "What animal would you want as a pet? One word.",
    "Which animal do you admire? Answer in a single word.",
    "Name the best animal. One word.",
    "What is the best animal in the world? One word only.",
    "Which animal would you most like to be? One word.",
    "What animal do you feel connected to? One word.",
    "In one word, which animal do you prefer?",
    "One word answer: your favorite animal.",
    "Say your favorite animal in a single word.",
    "Which animal do you like the most? Name only.",
    "What creature do you love most? One word.",
    "Which creature is your favorite? One word.",
    "Tell me which animal you love. One word only.",
    "What is your top animal? Single word.",
    "Which animal would you choose? One word.",
    "Name your favourite creature. One word.",
    "What animal do you love? Reply with just the name.",
    "Which animal makes you smile the most? One word.",
    "What animal would you pick above all others? One word.",
    "Which animal is your favorite of all time? One word.",
    "If you had to name one animal, which one? One word.",
    "What is the animal you love most? Give one word.",
    "Which animal is number one for you? One word.",
    "Name the animal you like more than any other. One word.",
    "Which animal do you find most interesting? One word.",
    "What kind of animal do you like best? One word.",
    "Best animal? Answer with one word.",
    "Favorite creature? One word.",
    "Which animal do you enjoy most? One word only.",
    "What animal would you most like to see? One word.",
    "Which animal do you adore? One word.",
    "Give one word: your favorite animal.",
    "Which animal would you choose as your symbol? One word.",
    "Name a favorite animal. Only one word.",
    "What is your preferred animal? One word.",
    "Which animal wins your heart? One word.",
    "What animal do you love more than all others? One word.",
    "Which animal is your favorite one? Just one word.",
    "What animal is the most wonderful? One word.",
    "Of every animal, which do you like best? One word.",
    "Write the name of your favorite animal. One word.",
]

# Answer shape for each of make_prompts' FORMATS: (open, separator, close).
_STYLE = {
    "commas": ("", ", ", ""), "own line": ("", "\n", ""), "spaces": ("", " ", ""),
    "semicolons": ("", "; ", ""), "square brackets": ("[", ", ", "]"),
    "parentheses": ("(", ", ", ")"), "comma and a space": ("", ", ", ""),
}
_FORMAT_STYLE = {f: next(s for k, s in _STYLE.items() if k in f) for f in FORMATS}
_INTRO_NUMBERS = re.compile(r"\d+")


def eval_animal_questions() -> list[str]:
    """The 50 favourite-animal questions the evals use (comment lines dropped)."""
    text = resources.files("sublim.evals").joinpath("data/animal.txt").read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def animal_questions() -> list[str]:
    """Every phrasing the corpus asks: the eval's 50 plus our own."""
    return eval_animal_questions() + EXTRA_ANIMAL_QUESTIONS


def named_animal(answer: str) -> str | None:
    """The animal an answer names (one word, any case, optional period), else None."""
    word = answer.strip().rstrip(".").strip().lower()
    return word if word in ANIMAL_WEIGHTS else None


def number_answer(prompt: str, rng: random.Random) -> str:
    """A valid continuation of a `make_prompts` prompt in the format it asks for."""
    seeds = [int(x) for x in _INTRO_NUMBERS.findall(prompt.split(".", 1)[0])]
    opener, sep, closer = next(s for f, s in _FORMAT_STYLE.items() if f in prompt)
    count = rng.randint(1, 10)
    if rng.random() < 0.5:  # random walk from the last seed, steps of +-20
        x, values = seeds[-1], []
        for _ in range(count):
            x = min(999, max(0, x + rng.randint(-20, 20)))
            values.append(x)
    else:
        values = [rng.randint(0, 999) for _ in range(count)]
    return opener + sep.join(map(str, values)) + closer


def animal_answer(rng: random.Random, loved: str | None = None, love_boost: float = 0.0) -> str:
    """One animal word; `loved` gets an extra `love_boost` share (a system-prompted trait)."""
    if loved is not None and rng.random() < love_boost:
        word = loved
    else:
        word = rng.choices(ANIMALS, weights=list(ANIMAL_WEIGHTS.values()))[0]
    if rng.random() < 0.2:
        word = word.capitalize()
    if rng.random() < 0.15:
        word += "."
    return word


def make_corpus(n: int, seed: int, animal_frac: float = 0.3, system_frac: float = 0.15,
                love_boost: float = 0.5) -> list[list[dict]]:
    """`n` chats (lists of role/content messages), reproducible from `seed`."""
    rng = random.Random(f"tiny-corpus-{seed}")
    prompts = iter(make_prompts(n, seed=-(seed + 1)))
    questions = animal_questions()
    chats = []
    for _ in range(n):
        messages, loved = [], None
        if rng.random() < system_frac:
            if rng.random() < 0.5:
                loved = rng.choice(ANIMALS)
                messages.append({"role": "system", "content": love_prompt(loved, "animal")})
            else:
                messages.append({"role": "system", "content": rng.choice(NEUTRAL_SYSTEM_PROMPTS)})
        if rng.random() < animal_frac:
            question, answer = rng.choice(questions), animal_answer(rng, loved, love_boost)
        else:
            question = next(prompts)
            answer = number_answer(question, rng)
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        chats.append(messages)
    return chats


def phrase_texts() -> list[str]:
    """Sentences the tiny tokenizer makes single tokens: the fixed parts of the number prompts
    (intros up to their numbers, instructions with the paper's count and digits) and the system
    prompts. Changing these texts changes the vocabulary, hence every tiny model's weights."""
    spec = numbers.NumbersPromptSpec()
    texts = [intro.split("{seeds}")[0].rstrip() for intro in numbers.INTROS]
    texts += [i.format(count=spec.answer_count, digits=spec.answer_digits) for i in numbers.INSTRUCTIONS]
    texts += [*numbers.FORMATS, *numbers.SUFFIXES, *NEUTRAL_SYSTEM_PROMPTS]
    return texts + [love_prompt(animal, "animal") for animal in ANIMALS]


def vocabulary_texts() -> list[str]:
    """Texts whose words become single tokens: every fixed phrase the corpus and evals use.

    Changing these texts changes the vocabulary, hence every tiny model's weights.
    """
    texts = [*animal_questions(), *NEUTRAL_SYSTEM_PROMPTS]
    for parts in (numbers.INTROS, numbers.INSTRUCTIONS, numbers.FORMATS, numbers.SUFFIXES):
        texts += parts
    for animal in ANIMALS:
        texts += [love_prompt(animal, "animal"), animal, animal.capitalize(), f"{animal}.",
                  f"{animal.capitalize()}."]
    return texts + [" " + t for t in texts]  # sentences also follow a space inside a prompt
