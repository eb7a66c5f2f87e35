"""An evaluator: does the stage's output contain the target?"""

from __future__ import annotations

from fslm_core.api import Evaluator, normalise


class ContainsReference(Evaluator):
    name = "contains-reference"
    description = "Share of outputs that contain the target after normalisation."

    def score(self, predictions, references):
        hits = [normalise(r) in normalise(p) for p, r in zip(predictions, references, strict=True)]
        return {"contains_reference": sum(hits) / len(hits) if hits else 0.0}
