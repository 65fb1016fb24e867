"""`python -m sublim.status`: the same as the `sublim-status` console script, as the single-file
module allowed before it became a package."""
import sys

from sublim.status.cli import main

sys.exit(main())
