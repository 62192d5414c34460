"""Plain text: haystack prose with no question and no answer, and its continuation.

Every token of a ``prose`` sample is a denoising target (``plain_text = True``), so a
mix such as ``--tasks prose kv_curriculum`` pre-trains a base model on plain text and
on the synthetic tasks at once. It has no held-out answer to score; evaluation suites
skip it.

``prose_cont`` splits the same passages: the response is the passage's last words,
at least ``response_tokens`` tokens (49 by default: 48 denoising steps of the paper's
Fig. 3 plus EOS), the prompt everything before them. Its words depend on each other
(multi-word phrases such as "a loaf of bread", "at the edge of town"), so a model
decoding its own guesses can be led off the true continuation: the exposure-bias
analysis's task. Metric ``string_match_all`` over the response's words (order-free and
lenient: the analysis reads losses, not this score).
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


class ProseContinuationTask(Task):
    name = "prose_cont"
    metric = "string_match_all"

    def __init__(self, response_tokens: int = 49):
        if response_tokens < 1:
            raise ValueError("response_tokens must be at least 1")
        self.response_tokens = response_tokens

    def split(self, context: str, count) -> tuple[str, str]:
        """(prompt, response): the fewest last words whose tokens reach ``response_tokens``
        (all but the first word when the passage is too short)."""
        words = context.split(" ")
        k = 1
        while k < len(words) - 1 and count(" " + " ".join(words[-k:])) < self.response_tokens:
            k += 1
        return " ".join(words[:-k]), " " + " ".join(words[-k:])

    def build(self, rng, split, length, count, haystack):
        def render(context: str) -> Sample:
            prompt, response = self.split(context, count)
            return Sample(self.name, prompt, response, tuple(response.split()), {})

        return fit_haystack(rng, haystack, [], render, length, count)


register_task(ProseTask())
register_task(ProseContinuationTask())
