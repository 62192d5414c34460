"""A long-response task for the exposure-bias analysis (paper Sec. 5, Fig. 3).

The analysis needs held-out prompt / response pairs whose response is long (48
denoising steps need at least 48 response tokens) and fully determined by the prompt.
Here the prompt hides facts "The value of {key} is {value}." in the haystack, in order,
and asks for all the values in the order they appear::

    Some keys and their values are hidden in the following text. Memorize them.
    {filler with facts}
    Question: List the values of all the keys, in the order they appear in the text. Answer:

Response: " v1, v2, ..., vn", where n is the smallest number of facts whose response
has at least ``min_response_tokens`` tokens (counted with the model's tokenizer). The
``length`` argument is the total length (prompt + response); filler makes up the rest.
Keys ("adjective-noun") and values (``digits``-digit numbers) come from split-disjoint
pools. Metric: ``string_match_all`` over the values. With the shipped tokenizer (one token
per digit) the default needs 8 values (71 response tokens) and at least ~245 tokens in all.
"""

from __future__ import annotations

from memdlm.tasks.base import Sample, Task, fit_haystack, random_number, register_task
from memdlm.tasks.ruler import join_answers, magic_keys

PROMPT = ("Some keys and their values are hidden in the following text. Memorize them.\n"
          "{context}\nQuestion: List the values of all the keys, in the order they appear in "
          "the text. Answer:")


class LongResponseTask(Task):
    name = "longresp"
    metric = "string_match_all"

    def __init__(self, min_response_tokens: int = 64, digits: int = 7):
        if min_response_tokens < 1:
            raise ValueError("min_response_tokens must be at least 1")
        self.min_response_tokens, self.digits = min_response_tokens, digits

    def facts(self, rng, split, count) -> tuple[list[str], list[str]]:
        """Distinct keys and values, added until the response is long enough."""
        keys: list[str] = []
        values: list[str] = []
        while not values or count(join_answers(values)) < self.min_response_tokens:
            (key,) = magic_keys(rng, split, 1)
            value = random_number(rng, self.digits, split)
            if key not in keys and value not in values:
                keys.append(key)
                values.append(value)
        return keys, values

    def build(self, rng, split, length, count, haystack):
        keys, values = self.facts(rng, split, count)
        needles = [f"The value of {k} is {v}." for k, v in zip(keys, values)]

        def render(context: str) -> Sample:
            return Sample(self.name, PROMPT.format(context=context), join_answers(values),
                          tuple(values), {"keys": keys})

        return fit_haystack(rng, haystack, needles, render, length, count, keep_order=True)


register_task(LongResponseTask())
