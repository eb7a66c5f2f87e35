"""Declare a stack stage by stage in Python, save it, load it back and run it.

    python examples/declare_stack.py
"""

import tempfile

from fslm_core import GenerationSettings, Stack, Stage, load_stack

MODEL = "smollm2-135m-instruct"

stack = Stack(
    name="keywords-then-answer",
    router="sequential",
    stages=[
        Stage(
            name="keywords",
            model=MODEL,
            instruction="List the key terms of the user's question. Do not answer it.",
            format="list",
            generation=GenerationSettings(max_new_tokens=40),
        ),
        Stage(
            name="answer",
            model=MODEL,  # same model id: the base is loaded once and shared
            instruction="Answer the user's question in one sentence.",
            template="Question: {prompt}\nKey terms:\n{keywords}",
            reads=["keywords"],
            generation=GenerationSettings(max_new_tokens=48),
        ),
    ],
)

with tempfile.TemporaryDirectory() as folder:
    path = stack.save(folder)  # a stack folder: stack.yaml (+ adapters/ once trained)
    assert load_stack(folder) == stack
    print(f"saved and reloaded {path}\n")

for trace in stack.run(["What is the largest planet in the solar system?"]):
    print(trace.render())
    print("\nas JSON:", trace.to_json()[:200], "...")
