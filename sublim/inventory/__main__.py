"""`python -m sublim.inventory`: the same as the `sublim-store` console script, as the single-file
module allowed before it became a package."""
import sys

from sublim.inventory.cli import main

sys.exit(main())
