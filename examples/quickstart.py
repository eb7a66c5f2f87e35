"""Run the default four-stage stack on the embedded SmolLM2 model and print every hand-off.

    python examples/quickstart.py [questions.txt]

The default is the trained `smollm2-paper` stack when fslm-plugin-smollm2-paper is
installed (`make install` installs it): fslm-paper's four stages, each with the LoRA
adapter `fslm experiment` trained for its role. Without it, the same four stages run
untrained, on the base model's zero-shot behaviour.
"""

import sys
from pathlib import Path

from fslm_core import resolve_stack

questions_file = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("questions.txt")
questions = [line.strip() for line in questions_file.read_text().splitlines() if line.strip()]

# interpret -> recall -> reason -> answer, every stage on one shared SmolLM2-135M-Instruct base.
stack = resolve_stack()
print(f"stack: {stack.name} ({stack.description or 'fslm-paper, untrained'})\n")

for trace in stack.run(questions, batch_size=8):
    print(trace.render())
    print()
