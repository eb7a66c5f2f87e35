"""A message format: a 'Keywords: a, b, c' line, parsed into a list."""

from __future__ import annotations

import re

from fslm_core.api import MessageFormat


class KeywordsFormat(MessageFormat):
    name = "keywords"
    description = "One 'Keywords: a, b, c' line; parsed into fields['keywords']."
    instructions = "Write one line starting with 'Keywords:' followed by comma-separated keywords."
    _line = re.compile(r"keywords\s*:\s*(.+)", re.IGNORECASE)

    def parse(self, text):
        match = self._line.search(text)
        if not match:
            return None
        keywords = [word.strip() for word in match.group(1).split(",") if word.strip()]
        return {"keywords": keywords} if keywords else None

    def render(self, text, fields):
        # Readers see a clean line whatever else the model wrote around it.
        if fields:
            return "Keywords: " + ", ".join(fields["keywords"])
        return text.strip()
