"""`sublim-tiny-model OUT_DIR`: build the tiny reference model (or reuse a matching one)."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from sublim.tiny.model import TinyModelSpec, build_tiny_model, read_spec_record, spec_record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sublim-tiny-model",
        description="Build a tiny Llama pretrained on sublim's synthetic chat corpus (CPU, ~30 s).")
    parser.add_argument("out_dir", help="directory to write (a transformers model directory)")
    parser.add_argument("--seed", type=int, default=TinyModelSpec.seed, help="init and corpus seed")
    parser.add_argument("--steps", type=int, default=TinyModelSpec.steps, help="pretraining steps")
    parser.add_argument("--force", action="store_true",
                        help="replace OUT_DIR if it holds anything other than this spec's model")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    spec = replace(TinyModelSpec(), seed=args.seed, steps=args.steps)
    if read_spec_record(args.out_dir) == spec_record(spec):
        print(f"{args.out_dir}: already holds the tiny model for this spec; not rebuilding")
        return 0
    start = time.monotonic()
    try:
        path = build_tiny_model(args.out_dir, spec, force=args.force, progress=not args.quiet)
    except FileExistsError as e:
        print(f"sublim-tiny-model: {e}; pass --force to replace it", file=sys.stderr)
        return 1
    print(f"{path}: tiny model built in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
