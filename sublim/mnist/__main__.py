"""python -m sublim.mnist [OUT_DIR] [key=value ...]: the default run without Hydra (e.g. n_seeds=3).

The Hydra CLI is the normal entry point; this is for quick checks and timings.
"""
import json
import sys
from dataclasses import fields, replace
from pathlib import Path

from . import MnistSpec, run


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv and "=" not in argv[0] else Path("outputs/mnist")
    types = {f.name: f.type for f in fields(MnistSpec)}
    over = {}
    for kv in (a for a in argv if "=" in a):
        k, v = kv.split("=", 1)
        if k not in types:
            raise SystemExit(f"unknown MnistSpec field {k!r}; fields: {sorted(types)}")
        t = str(types[k])
        over[k] = (v.split(",") if "list" in t else None if v in ("None", "null") and "Optional" in t
                   else v.lower() in ("1", "true", "yes") if t == "bool" else int(v) if t == "int"
                   else float(v) if t == "float" else v)
    m = run(replace(MnistSpec(), **over), out)
    brief = {k: {"mean": v["mean"], "low": v["low"], "high": v["high"]}
             for k, v in {"teacher": m["teacher"], "reference": m["reference"], **m["arms"]}.items()}
    print(json.dumps({"out_dir": str(out), "accuracy": brief, "timings": m["timings"]}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
