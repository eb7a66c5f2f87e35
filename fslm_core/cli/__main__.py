"""``python -m fslm_core.cli``: the ``fslm`` command."""

from .app import main

main()
