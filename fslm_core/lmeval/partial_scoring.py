"""One upstream run per document for partial-scoring tasks (WinoGrande).

A partial-scoring task gives each option its own context and scores the same
continuation after each ("Sarah was a better surgeon than Maria so Sarah" /
"... so Maria", then "always got the easier cases."). Run per context, a
stack's upstream stages would write different notes before each option, and the
options would be compared after different notes. Instead the upstream stages
read the document once, as a sentence with a blank and its options; the final
stage then scores each option's own context after those same notes.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence


def blank_prompt(contexts: Sequence[str], continuation: str) -> str:
    """The document as one prompt: the shared text, a blank where the options differ, the continuation,
    and the options that may fill the blank."""
    shared = os.path.commonprefix(list(contexts))
    # Cut back to a word boundary so an option that shares its first letters with another stays whole.
    if shared and not shared[-1].isspace():
        shared = shared[: max(shared.rfind(" "), shared.rfind("\n")) + 1]
    options = [context[len(shared) :].strip() for context in contexts]
    return f"{shared}_{continuation}\nFill the blank (_) with one of: {'; '.join(options)}"


def upstream_prompts(requests: Sequence) -> list[str]:
    """The prompt the upstream stages read for each loglikelihood request: its context, or, for a
    document whose requests differ in context and share their continuation, that document's
    :func:`blank_prompt`."""
    prompts = [request.args[0] for request in requests]
    documents: dict[tuple, list[int]] = defaultdict(list)
    for index, request in enumerate(requests):
        if request.doc_id is not None:
            documents[(request.task_name, request.doc_id)].append(index)
    for indices in documents.values():
        contexts = [requests[index].args[0] for index in indices]
        continuations = {requests[index].args[1] for index in indices}
        if len(set(contexts)) > 1 and len(continuations) == 1:
            shared = blank_prompt(contexts, continuations.pop())
            for index in indices:
                prompts[index] = shared
    return prompts


def final_prompts(traces: Sequence, contexts: Sequence[str], render: Callable) -> list[str]:
    """The final stage's prompt for each request: ``render`` of its upstream trace, read in the request's own
    context (a partial-scoring option after its document's notes); each distinct pair rendered once."""
    rendered: dict[tuple[str, str], str] = {}
    prompts = []
    for trace, context in zip(traces, contexts):
        key = (trace.prompt, context)
        if key not in rendered:
            rendered[key] = render(trace if trace.prompt == context else trace.model_copy(update={"prompt": context}))
        prompts.append(rendered[key])
    return prompts
