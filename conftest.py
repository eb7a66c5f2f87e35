"""Settings for every test in the repository, core and plugins alike."""

import os

# Nothing may come from a model or dataset hub: an accidental download fails fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
