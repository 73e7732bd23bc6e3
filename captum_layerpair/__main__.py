"""``python -m captum_layerpair``: the ``captum-layerpair`` console script."""
import sys

from captum_layerpair.cli import main

sys.exit(main())
