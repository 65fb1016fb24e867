"""mnist.png: accuracy per arm (bars, 95 % t-interval over seeds) and accuracy vs distillation steps."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: jobs run without a display
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"teacher": "0.3", "reference": "0.7", "same_init": "tab:blue", "different_init": "tab:orange",
          "reference_student": "tab:green", "all_logits": "tab:purple"}


def plot(metrics: dict, curves: dict, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    bars = {"teacher": metrics["teacher"], "reference": metrics["reference"], **metrics["arms"]}
    names = list(bars)
    means = [bars[n]["mean"] for n in names]
    err = [[max(bars[n]["mean"] - bars[n]["low"], 0) for n in names],
           [max(bars[n]["high"] - bars[n]["mean"], 0) for n in names]]
    err = [[0 if e != e else e for e in row] for row in err]  # NaN bounds (one seed): no bar
    left.bar(range(len(names)), means, yerr=err, capsize=4, color=[COLORS.get(n, "0.5") for n in names])
    left.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
    left.axhline(0.1, ls=":", c="k", lw=1, label="chance")
    left.set_ylim(0, 1.05)
    left.set_ylabel("test accuracy")
    left.set_title(f"{metrics['n_seeds']} seeds, mean and 95 % CI")
    left.legend(loc="upper right", fontsize=8)
    steps = curves["steps"]
    for arm, c in curves["arms"].items():
        col = COLORS.get(arm, None)
        right.plot(steps, c["mean"], label=arm, color=col)
        low = [m if lo != lo else lo for m, lo in zip(c["mean"], c["low"])]
        high = [m if hi != hi else hi for m, hi in zip(c["mean"], c["high"])]
        right.fill_between(steps, low, high, alpha=0.25, color=col)
    right.axhline(0.1, ls=":", c="k", lw=1)
    right.set_ylim(0, 1.05)
    right.set_xlabel("distillation steps (noise batches)")
    right.set_ylabel("student test accuracy")
    right.set_title("students learn from auxiliary logits on noise")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
