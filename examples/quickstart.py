"""Run the four-stage fslm-paper stack on the embedded SmolLM2 model and print every hand-off.

    python examples/quickstart.py [questions.txt]
"""

import sys
from pathlib import Path

import fslm_core

questions_file = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("questions.txt")
questions = [line.strip() for line in questions_file.read_text().splitlines() if line.strip()]

# A ready stack from the registered decomposition: interpret -> recall -> reason -> answer,
# every stage on one shared SmolLM2-135M-Instruct base (no adapters yet: zero-shot).
stack = fslm_core.decomposition("fslm-paper").build("smollm2-135m-instruct")

for trace in stack.run(questions, batch_size=8):
    print(trace.render())
    print()
