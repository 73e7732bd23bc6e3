"""``python -m captum_layerpair``: the ``captum-layerpair`` console script."""
import os
import sys

# ``python -m`` puts the working folder first on sys.path (the console script does not): drop it, so a stray file
# there (say ``skimage.py``) never shadows an installed package. A ``--model`` module there is still found.
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from captum_layerpair.cli import main

sys.exit(main())
