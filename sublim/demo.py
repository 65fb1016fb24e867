"""`sublim-demo-summary SWEEP_DIR`: the CPU demo's result table and figure, from its job folders.

Arms are read back from each cell (condition and student name), P(owl) is the exact probability
(mean over questions), intervals are 95 % t-intervals across the replicates (seeds), and the
differences are paired by seed. It also prints how well-formed the teacher's numbers are next to
the reference's and the teacher's per-token log-prob shift from the reference on its own samples,
so nobody mistakes broken teacher output for subliminal transfer.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from sublim.stats import RATE, Interval, difference_interval, t_interval
from sublim.backends.base import Chat
from sublim.jsonl import read_jsonl
from sublim.spec import parse_artifact_ref

ARMS = ["base", "teacher", "student", "control", "cross", "cross_base"]
LABELS = {"base": "reference", "teacher": "owl teacher", "student": "student (same init)",
          "control": "control student", "cross": "student (other init)", "cross_base": "other-init reference"}


def arm_of(condition: str, student: str) -> str:
    other = student.endswith("other-init")
    if condition == "base":
        return "cross_base" if other else "base"
    if condition == "treatment":
        return "cross" if other else "student"
    return condition  # teacher, control


def collect(sweep_dir: Path, target: str) -> tuple[dict, dict, dict]:
    """{arm: {seed: P(target) exact}}, the same sampled, and {arm: {seed: metrics}}.

    Cells are read by sublim-report's reader (same de-duplication of re-runs, same values), so
    this table and `sublim-report` on the same folder agree.
    """
    from sublim.report.collect import collect as collect_jobs

    col = collect_jobs([sweep_dir])
    rates = col.rates[col.rates["candidate"] == target].set_index("job")["rate"]
    exact: dict = {a: {} for a in ARMS}
    sampled: dict = {a: {} for a in ARMS}
    cells: dict = {a: {} for a in ARMS}
    for row in col.cells.itertuples():
        if row.job not in rates.index:  # misalignment-only cells have no rates
            continue
        arm, seed = arm_of(row.condition, row.student), int(row.seed)
        m = json.loads((Path(row.path) / "metrics.json").read_text())
        exact[arm][seed] = float(rates[row.job])
        if "sampled" in m:
            sampled[arm][seed] = m["sampled"]["rates"][target]["mean"]
        cells[arm][seed] = m
    return exact, sampled, cells


def paired(a: dict, b: dict) -> Interval:
    seeds = sorted(set(a) & set(b))
    return difference_interval([a[s] for s in seeds], [b[s] for s in seeds], paired=True)


def fmt(iv: Interval, scale: float = 100.0) -> str:
    if iv.n == 0:
        return "n/a"
    if math.isnan(iv.low):
        return f"{iv.mean * scale:6.2f}        (n={iv.n})"
    return f"{iv.mean * scale:6.2f} [{iv.low * scale:6.2f}, {iv.high * scale:6.2f}] (n={iv.n})"


def teacher_shift(cells: dict, cache: Path | None = None, n: int = 200) -> dict:
    """Per-token log-prob shift of the teacher from the reference on the teacher's own samples.

    Values are kept in `cache` (a JSON file) under the teacher data's filter key, so printing
    the table again does not load and score the models again.
    """
    from sublim.backends.hf import HFSampler  # torch: only when the shifts are computed

    known = json.loads(cache.read_text()) if cache is not None and cache.exists() else {}
    out = {}
    for seed, m in cells["student"].items():
        key = f"{m['keys']['filter']}:{n}"
        if key in known:
            out[seed] = known[key]
            continue
        art = m["artifacts"]
        store = Path(art["filter"]).parent.parent
        spec = json.loads((Path(art["filter"]) / "spec.json").read_text())["spec"]
        rows = list(read_jsonl(in_store(store, spec["samples"])))[:n]
        teacher = json.loads((in_store(store, spec["samples"]).parent / "spec.json").read_text())["spec"]["teacher"]
        ref_path, adapter = in_store(store, teacher["weights"]), in_store(store, teacher["adapter"])
        chats = [Chat(r["prompt"], r["system"]) for r in rows]
        answers = [r["completion"] for r in rows]
        ref, tea = HFSampler(str(ref_path), device="cpu"), HFSampler(str(ref_path), adapter=str(adapter), device="cpu")
        n_tokens = sum(len(ref.answer_ids(c, a)[1]) for c, a in zip(chats, answers))
        diff = sum(tea.score(chats, answers, 64, desc="teacher")) - sum(ref.score(chats, answers, 64, desc="reference"))
        out[seed] = known[key] = diff / n_tokens
    if cache is not None:
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=2))
        tmp.replace(cache)
    return out


def in_store(store: Path, ref: str) -> Path:
    """The path of an artifact ref ("stage:key/sub") in the store."""
    stage, key, sub = parse_artifact_ref(ref)
    return store / stage / key / sub


def summarise(sweep_dir: Path, target: str = "owl", shift: bool = True) -> str:
    exact, sampled, cells = collect(sweep_dir, target)
    lines = [f"P({target}) in % (exact log-prob, mean over 50 questions; 95 % t-interval over seeds)", ""]
    lines.append(f"{'arm':<24}{'exact':<34}{'sampled':<34}")
    for arm in ARMS:
        ex = t_interval(list(exact[arm].values()), bounds=RATE)
        sa = t_interval(list(sampled[arm].values()), bounds=RATE)
        lines.append(f"{LABELS[arm]:<24}{fmt(ex):<34}{fmt(sa):<34}")
    lines += ["", "differences in points, paired by seed:"]
    rise_same = {s: exact["student"][s] - exact["base"][s] for s in exact["student"] if s in exact["base"]}
    rise_cross = {s: exact["cross"][s] - exact["cross_base"][s]
                  for s in exact["cross"] if s in exact["cross_base"]}
    rows = [("student - control", paired(exact["student"], exact["control"])),
            ("student - reference (same-init rise)", t_interval(list(rise_same.values()))),
            ("other-init student - its reference", t_interval(list(rise_cross.values()))),
            ("same-init rise - other-init rise", paired(rise_same, rise_cross))]
    for name, iv in rows:
        verdict = "" if iv.n == 0 or math.isnan(iv.low) else ("  (CI excludes 0)" if iv.low > 0 or iv.high < 0
                                                              else "  (CI includes 0)")
        lines.append(f"  {name:<40}{fmt(iv)}{verdict}")
    teacher_rate = {s: m["filter"]["n_passed"] / m["filter"]["n_in"] for s, m in cells["student"].items()}
    ref_rate = {s: m["filter"]["n_passed"] / m["filter"]["n_in"] for s, m in cells["control"].items()}
    lines += ["", "teacher data quality (passed the filter's number rule, filter.format):",
              f"  well-formed, teacher    {fmt(t_interval(list(teacher_rate.values()), bounds=RATE))}",
              f"  well-formed, reference  {fmt(t_interval(list(ref_rate.values()), bounds=RATE))}"]
    if shift and cells["student"]:
        sh = teacher_shift(cells, sweep_dir / "teacher_shift.json")
        lines.append(f"  teacher's log-prob shift from the reference on its own numbers: "
                     f"{fmt(t_interval(list(sh.values())), 1.0)} nats/token")
    return "\n".join(lines)


def figure(sweep_dir: Path, out: Path, target: str = "owl") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exact, sampled, _ = collect(sweep_dir, target)
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, arm in enumerate(ARMS):
        iv = t_interval(list(exact[arm].values()), bounds=RATE)
        if iv.n == 0:
            continue
        err = None if math.isnan(iv.low) else [[100 * (iv.mean - iv.low)], [100 * (iv.high - iv.mean)]]
        ax.bar(i, 100 * iv.mean, yerr=err, capsize=4, color="#c44e52" if arm == "student" else "#8c8c8c")
        ax.scatter([i] * len(exact[arm]), [100 * v for v in exact[arm].values()], color="k", s=8, zorder=3)
        if sampled[arm]:
            sv = t_interval(list(sampled[arm].values()), bounds=RATE)
            ax.scatter([i + 0.3], [100 * sv.mean], marker="D", color="#4c72b0", s=18, zorder=3,
                       label="sampled (mean)" if i == 0 else None)
    ax.set_xticks(range(len(ARMS)), [LABELS[a].replace(" (", "\n(") for a in ARMS], fontsize=8)
    ax.set_ylabel(f"P({target}) %")
    ax.set_title(f"Subliminal learning on a CPU: P({target}), 95 % CI over seeds (dots: seeds)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")  # the table is the output, not the scorer's progress bars
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--target", default="owl")
    ap.add_argument("--no-shift", action="store_true", help="skip the teacher log-prob shift (loads models)")
    args = ap.parse_args()
    if not list(args.sweep_dir.glob("*/metrics.json")):
        sys.exit(f"no job metrics under {args.sweep_dir}: run `sublim --multirun sweep=demo` first")
    text = summarise(args.sweep_dir, args.target, shift=not args.no_shift)
    (args.sweep_dir / "demo.md").write_text(text + "\n")
    figure(args.sweep_dir, args.sweep_dir / "demo.png", args.target)
    print(text)
    print(f"\nfigure: {args.sweep_dir / 'demo.png'}   table: {args.sweep_dir / 'demo.md'}")


if __name__ == "__main__":
    main()
