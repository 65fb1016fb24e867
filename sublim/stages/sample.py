"""Stage `sample`: the teacher (model + trait system prompt) completes the domain's prompts.

Output: samples.jsonl ({i, system, prompt, completion}) and stats.json. Completions are appended
batch by batch, so a killed job resumes at the last whole batch.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable, Optional

from sublim.backends.base import Chat, SamplingParams
from sublim.jsonl import complete_prefix

VERSION = 1
log = logging.getLogger(__name__)


def sample(work: Path, prompts: list[str], system_prompt: Optional[str], make_sampler: Callable,
           params: SamplingParams, seed: int, batch_size: int) -> None:
    out = work / "samples.jsonl"
    done = complete_prefix(out)
    start = len(done) - len(done) % batch_size  # restart at a batch boundary: same seeds, same text
    if start != len(done):
        with open(out, "w") as f:
            for row in done[:start]:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    if start:
        log.info("teacher sampling: resuming at prompt %d of %d (the completions before it are kept)",
                 start, len(prompts))
    chats = [Chat(user=p, system=system_prompt) for p in prompts]
    sampler = make_sampler()
    t0, n_tokens = time.time(), 0
    try:
        with open(out, "a") as f:
            for batch in sampler.generate(chats, params, seed, batch_size, start=start, desc="teacher sampling"):
                for j, text in enumerate(batch.texts):
                    i = batch.start + j
                    f.write(json.dumps({"i": i, "system": system_prompt, "prompt": prompts[i],
                                        "completion": text}, ensure_ascii=False) + "\n")
                f.flush()
                n_tokens += batch.n_tokens
    finally:
        sampler.close()
    seconds = time.time() - t0
    (work / "stats.json").write_text(json.dumps({
        "n_prompts": len(prompts), "resumed_from": start, "generated_tokens": n_tokens,
        "seconds": round(seconds, 3), "tokens_per_s": round(n_tokens / max(seconds, 1e-9), 1),
    }, indent=2))
