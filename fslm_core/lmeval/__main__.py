"""``python -m fslm_core.lmeval``: lm-eval's command line with the ``fslm`` model and the benchmark tasks."""

from .lm_eval_cli import main

main()
