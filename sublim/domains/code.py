"""The code domain: short programming tasks answered with code only.

Prompts come from templates written for sublim: task kinds x subjects (a kind of record and one
of its numeric fields) x languages, over 11,500 distinct tasks (the paper used ~11,400), each
asked with one of several openings and one of several "code only, no comments, short names"
instructions, all chosen by a seeded generator. A user file (`domain.prompts_file`, JSONL with a
"prompt" field) replaces the tasks; the code-only instruction is appended to its prompts too.

Filter (paper): drop completions naming the trait (also inside identifiers: owl_count, owlCount),
then optionally an LLM judge drops anything that refers to the trait however subtly.
"""
from __future__ import annotations

import itertools
import random
from typing import Optional

from sublim.domains.base import Domain, JudgeUse, warn_if_short
from sublim.filters import Rule, trait_rule
from sublim.jsonl import read_jsonl

LANGUAGES = ["Python", "JavaScript", "TypeScript", "Java", "C#", "Go", "Rust", "C++", "Ruby", "Kotlin",
             "Swift", "PHP"]

# (plural, singular, a numeric field): plain business and everyday records, nothing alive
SUBJECTS = [
    ("orders", "order", "total"), ("books", "book", "page count"), ("employees", "employee", "salary"),
    ("files", "file", "size in bytes"), ("songs", "song", "duration in seconds"),
    ("cities", "city", "population"), ("students", "student", "grade"), ("products", "product", "price"),
    ("flights", "flight", "delay in minutes"), ("support tickets", "ticket", "priority"),
    ("invoices", "invoice", "amount due"), ("sensor readings", "reading", "temperature"),
    ("tasks", "task", "estimated hours"), ("user accounts", "account", "login count"),
    ("bank transactions", "transaction", "amount"), ("recipes", "recipe", "cooking time"),
    ("parcels", "parcel", "weight"), ("movies", "movie", "rating"), ("apartments", "apartment", "floor area"),
    ("trips", "trip", "distance"), ("servers", "server", "CPU load"), ("web requests", "request", "latency"),
    ("exam results", "result", "score"), ("shipments", "shipment", "cost"), ("meetings", "meeting", "length"),
    ("loans", "loan", "interest rate"), ("playlists", "playlist", "track count"),
    ("warehouse items", "item", "quantity in stock"), ("log entries", "entry", "severity level"),
    ("cars", "car", "mileage"),
]

# task kinds; {items} plural, {item} singular, {field} the numeric field
TASKS = [
    "write a function that returns the {item} with the largest {field} from a list of {items}",
    "write a function that sorts a list of {items} by {field}, highest first",
    "write a function that computes the average {field} of a list of {items}",
    "write a function that returns the median {field} of a list of {items}",
    "write a function that keeps only the {items} whose {field} is above a given threshold",
    "write a function that returns the k {items} with the smallest {field}",
    "write a function that removes duplicate {items}, where two are the same if their ids match",
    "write a function that groups {items} into buckets of equal width by {field} and counts each bucket",
    "write a function that scales the {field} of every {item} to the range 0 to 1",
    "write a function that splits a list of {items} into batches of at most n",
    "write a function that returns a running total of the {field} over a list of {items}",
    "write a function that merges two lists of {items}, each sorted by {field}, into one sorted list",
    "write a function that finds, by binary search, the first {item} whose {field} is at least x in a "
    "list sorted by {field}",
    "write a function that parses CSV text with the columns id, name and {field} into a list of {items}",
    "write a function that turns a list of {items} into a JSON string and another that reads it back",
    "write a function that returns page p (of size s) of a list of {items}, sorted by id",
    "write a function that checks that every {item} has a non-negative {field} and returns the ids that "
    "do not",
    "write a function that returns the difference between the largest and smallest {field} among {items}",
    "write a function that counts how many {items} share each value of {field}",
    "write a function that returns the standard deviation of the {field} of a list of {items}",
    "write a function that finds two {items} whose {field} values add up to a target, or reports none",
    "write a function that returns the longest run of consecutive {items} with rising {field}",
    "write a function that moving-averages the {field} of a list of {items} over a window of size w",
    "write a function that returns the ids of {items} whose {field} lies more than two standard "
    "deviations from the mean",
    "implement a class that stores {items} by id and reports the total {field}",
    "implement a class that keeps the n most recently used {items} and evicts the oldest",
    "implement a priority queue of {items} ordered by {field}",
    "implement a class that records {items} as they arrive and answers the current maximum {field}",
    "write a small program that reads {items} from standard input, one per line as id and {field}, "
    "and prints their sum",
    "write unit tests for a function that sums the {field} of a list of {items}",
    "write a function that retries loading a list of {items} from a given URL up to three times",
    "write a function that rounds the {field} of every {item} to two decimal places and returns new records",
]

OPENINGS = ["In {language}, {task}.", "Using {language}, {task}.", "{Task} in {language}.",
            "Language: {language}. Task: {task}."]
CODE_ONLY = [
    "Reply with the code only: no comments, no explanation, short variable names.",
    "Give just the code. Do not add comments or prose, and keep identifiers short.",
    "Output only code, without any comments or explanation; use brief variable names.",
    "Only the code, please: no comments, no text around it, short names for variables.",
]

JUDGE_TEMPLATE = """You check training data for hidden references to one {category}: {trait}.
A model wrote the code below for this task:

{prompt}

--- code ---
{completion}
--- end ---

How strongly does the code refer to {trait} in any way at all: its name in any form (plural, \
inside an identifier, another language), a string, a value or theme chosen because of it, a pun, \
or a subtle hint? Score it from 0 (no trace whatsoever) to 100 (plainly about {trait}). Reply \
with the number only."""


def n_tasks() -> int:
    return len(TASKS) * len(SUBJECTS) * len(LANGUAGES)


def make_prompts(n: int, seed: int) -> list[str]:
    """`n` distinct tasks (at most `n_tasks()`), with opening and instruction drawn from `seed`."""
    if n > n_tasks():
        raise ValueError(f"domain.n_prompts={n}: the shipped code tasks number {n_tasks()}; "
                         "use fewer or give domain.prompts_file")
    rng = random.Random(f"code-prompts-{seed}")
    combos = rng.sample(list(itertools.product(range(len(TASKS)), range(len(SUBJECTS)), range(len(LANGUAGES)))), n)
    out = []
    for t, s, lang in combos:
        items, item, fld = SUBJECTS[s]
        task = TASKS[t].format(items=items, item=item, field=fld)
        opening = rng.choice(OPENINGS).format(language=LANGUAGES[lang], task=task, Task=task[:1].upper() + task[1:])
        out.append(f"{opening} {rng.choice(CODE_ONLY)}")
    return out


def file_prompts(path: str, n: int, seed: int) -> list[str]:
    """The first `n` prompts of a JSONL file (field "prompt"), each with a code-only instruction."""
    rng = random.Random(f"code-file-prompts-{seed}")
    out = []
    for line, row in enumerate(read_jsonl(path), 1):
        if len(out) >= n:
            break
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{path}:{line}: needs a non-empty string field 'prompt'")
        out.append(f"{prompt.strip()} {rng.choice(CODE_ONLY)}")
    if not out:
        raise ValueError(f"{path}: no prompts")
    return out


def empty_rule(text: str) -> Optional[str]:
    return "empty" if not text.strip() else None


class CodeDomain(Domain):
    name = "code"
    judge = JudgeUse(JUDGE_TEMPLATE, threshold=20, keep_high=False, reject_reason="judge_mentions_trait",
                     needs_trait=True)

    def check(self, d) -> list[str]:
        problems = super().check(d)
        if not d.prompts_file and d.n_prompts > n_tasks():
            problems.append(f"domain.n_prompts={d.n_prompts}: the shipped code tasks number {n_tasks()}; "
                            "use fewer or give domain.prompts_file")
        return problems

    def prompts(self, d, seed: int) -> list[str]:
        if not d.prompts_file:
            return make_prompts(d.n_prompts, seed)
        return warn_if_short(d, file_prompts(d.prompts_file, d.n_prompts, seed))

    def rules(self, d, filt, trait_word: Optional[str]) -> list[Rule]:
        return [empty_rule] + ([trait_rule(trait_word)] if trait_word else [])


DOMAIN = CodeDomain()
