"""A decomposition: find the keywords, then answer with them."""

from fslm_core import Decomposition, StageRecipe

KEYWORDS_ANSWER = Decomposition(
    name="keywords-answer",
    description="Two stages: list the request's keywords, then answer using them.",
    router="sequential",
    stages=(
        StageRecipe(
            name="keywords",
            instruction="Find the keywords of the user's request. Do not answer it.",
            template="User request:\n{prompt}",
            format="keywords",
            max_new_tokens=24,
            teacher_instruction="List at most five keywords of the task below on one line starting "
            "with 'Keywords:', comma-separated. Do not solve it.",
        ),
        StageRecipe(
            name="answer",
            instruction="Answer the user's request; the keywords show what matters.",
            template="{keywords}\n\nUser request:\n{prompt}",
            reads=("keywords",),
            max_new_tokens=64,
        ),
    ),
)
