"""The ``fslm-paper`` decomposition: interpret, recall, reason, answer.

Follows the four roles described for "Stacking Small Language Models for
Generalizability" (arXiv 2410.15570). The paper's own prompts are not
published; these are ours. ``recall`` reads only the prompt, so under the
``parallel`` router it runs in one mixed-adapter batch with ``interpret``.
"""

from ..api.decompositions import Decomposition, StageRecipe
from ..api.hookspecs import hookimpl

FSLM_PAPER = Decomposition(
    name="fslm-paper",
    description="Four stages after arXiv 2410.15570: interpret the request, recall key facts, "
    "reason to a draft, write the final answer.",
    router="parallel",
    stages=(
        StageRecipe(
            name="interpret",
            instruction="Restate what the user is asking in one or two sentences, including any "
            "constraints on the answer. Do not answer it.",
            template="User request:\n{prompt}",
            max_new_tokens=48,
            teacher_instruction="Read the task below. In one or two sentences, restate what it asks for, "
            "including any constraints on the answer (format, length, audience). Do not solve it.",
        ),
        StageRecipe(
            name="recall",
            instruction="List the key facts, terms or keywords needed to answer the user's request. "
            "Do not write the final answer.",
            template="User request:\n{prompt}",
            format="list",
            max_new_tokens=64,
            teacher_instruction="Read the task below. List at most five key facts, terms or keywords a "
            "person needs to complete it, one per line starting with '- '. Do not solve it.",
        ),
        StageRecipe(
            name="reason",
            instruction="Work out a short draft answer to the request from the restatement and the key "
            "facts. Think step by step, briefly.",
            template="User request:\n{prompt}\n\nWhat is asked:\n{interpret}\n\nKey facts:\n{recall}",
            reads=("interpret", "recall"),
            max_new_tokens=96,
            teacher_instruction="Read the task, its restatement and its key facts below. Write a short "
            "draft solution with brief step-by-step reasoning (at most five sentences).",
        ),
        StageRecipe(
            name="answer",
            instruction="Write the final answer to the user's request. Use the notes when they help. "
            "Be correct and concise.",
            template="User request:\n{prompt}\n\nWhat is asked:\n{interpret}\n\nKey facts:\n{recall}"
            "\n\nDraft:\n{reason}",
            reads=("interpret", "recall", "reason"),
            max_new_tokens=96,
        ),
    ),
)


@hookimpl(tryfirst=True)
def register_decompositions(register):
    register(FSLM_PAPER)
