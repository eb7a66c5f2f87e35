"""The ``fslm-paper`` decomposition: interpret, recall, reason, answer.

Follows the four roles described for "Stacking Small Language Models for
Generalizability" (arXiv 2410.15570). The paper's own prompts are not
published; these are ours. ``recall`` reads only the prompt, so under the
``parallel`` router it runs in one mixed-adapter batch with ``interpret``.

The teacher writes the three intermediate targets in one call per example
while seeing the reference answer (:data:`PAPER_NOTES`); the answer stage
learns the reference itself. The stage instructions describe the same
layout the targets have, so an untrained stage is asked for what a trained
one learns to write.
"""

from ..api.decompositions import Decomposition, StageRecipe, TeacherNotes
from ..api.hookspecs import hookimpl

PAPER_NOTES = TeacherNotes(
    instruction=(
        "You write study notes for a small assistant that solves a task in four steps: it restates the task, "
        "recalls key facts, drafts its reasoning, then answers. You see the task and its correct final answer. "
        "Write the notes for the first three steps so that they lead to that answer, in exactly this layout:\n\n"
        "RESTATEMENT: <one sentence: what the task asks for and any constraints on the answer. "
        "Never give the answer itself.>\n"
        "KEY FACTS:\n"
        "- <a fact, term or keyword needed for the answer>\n"
        "- <two to four such lines in all, each short, none repeated>\n"
        "DRAFT: <one or two short sentences of reasoning that arrive at the final answer>\n\n"
        "Stop after the DRAFT."
    ),
    sections=(("interpret", "RESTATEMENT"), ("recall", "KEY FACTS"), ("reason", "DRAFT")),
    template="Task:\n{prompt}\n\nFinal answer:\n{reference}",
    # Started inside the layout, the teacher restates instead of answering (it answered outright otherwise).
    reply_start="RESTATEMENT: The task asks",
    max_new_tokens=120,
    end_markers=("Final answer:", "Therefore, the final answer"),
)

FSLM_PAPER = Decomposition(
    name="fslm-paper",
    description="Four stages after arXiv 2410.15570: interpret the request, recall key facts, "
    "reason to a draft, write the final answer.",
    router="parallel",
    stages=(
        StageRecipe(
            name="interpret",
            instruction="Restate in one sentence what the user's request asks for, with any constraints on "
            "the answer. Begin with 'The task asks'. Do not answer it.",
            template="User request:\n{prompt}",
            max_new_tokens=48,
            teacher_instruction="Read the task below. In one sentence, restate what it asks for, "
            "including any constraints on the answer (format, length, audience). Do not solve it.",
            checks=("restates",),
        ),
        StageRecipe(
            name="recall",
            instruction="List two to four key facts, terms or keywords needed to answer the user's request, "
            "one per line. Do not write the final answer.",
            template="User request:\n{prompt}",
            format="list",
            max_new_tokens=72,
            teacher_instruction="Read the task below. List at most four key facts, terms or keywords a "
            "person needs to complete it, one per line starting with '- '. Do not solve it.",
            checks=("is-list",),
        ),
        StageRecipe(
            name="reason",
            instruction="From the request, its restatement and the key facts, write one or two short "
            "sentences of reasoning that arrive at the answer.",
            template="User request:\n{prompt}\n\nWhat is asked:\n{interpret}\n\nKey facts:\n{recall}",
            reads=("interpret", "recall"),
            max_new_tokens=80,
            teacher_instruction="Read the task, its restatement and its key facts below. Write one or two "
            "short sentences of reasoning that arrive at the answer.",
            checks=("no-repeats",),
        ),
        StageRecipe(
            name="answer",
            instruction="Write the final answer to the user's request. Use the notes when they help. "
            "Be correct and concise.",
            template="User request:\n{prompt}\n\nWhat is asked:\n{interpret}\n\nKey facts:\n{recall}"
            "\n\nDraft:\n{reason}",
            reads=("interpret", "recall", "reason"),
            max_new_tokens=128,
            checks=("answers",),
        ),
    ),
    teacher_notes=PAPER_NOTES,
)


@hookimpl
def register_decompositions(register):
    register(FSLM_PAPER)
