"""Plain text for pre-training: haystack prose with no question and no answer.

Every token of a ``prose`` sample is a denoising target (``plain_text = True``), so a
mix such as ``--tasks prose kv_curriculum`` pre-trains a base model on plain text and
on the synthetic tasks at once (the mini reproduction's base model does this). It has
no held-out answer to score; evaluation suites skip it.
"""

from __future__ import annotations

from memdlm.tasks.base import Sample, Task, fit_haystack, register_task


class ProseTask(Task):
    name = "prose"
    metric = "string_match_all"
    plain_text = True  # the whole sample is the target, not a response to a prompt

    def build(self, rng, split, length, count, haystack):
        def render(context: str) -> Sample:
            return Sample(self.name, "", context, (), {})

        return fit_haystack(rng, haystack, [], render, length, count)


register_task(ProseTask())
