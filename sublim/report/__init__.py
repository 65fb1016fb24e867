"""`sublim-report`: turn a sweep's job folders into the paper's comparisons.

A sweep writes one `metrics.json` per job (one cell: condition x trait x models x seed). The
report reads them all (collect), compares conditions across seeds with the intervals of
`sublim.stats` (summarise), draws the paper-style figures (figures), writes CSV/Markdown
(markdown) and mirrors everything to one W&B run (wandb_log). A grid of defence arms also gets
the share of the effect each defence leaves, with its cost (defences). The CLI (cli) only wires these.
Each step tolerates missing or failed cells: a sweep with holes still gets a report that names
the holes.
"""
