"""Generated task samples as a torch ``Dataset`` of tokenised examples (training and
held-out evaluation).

Kept apart from the generators: it imports torch, which looking tasks up by name
(``memdlm.tasks.get_task``) does not need.
"""

from __future__ import annotations

import torch

from memdlm.data.collate import encode_pair
from memdlm.errors import ConfigError
from memdlm.tasks.base import get_task
from memdlm.tasks.seeds import item_seed
from memdlm.backbones.tokenizer import count_tokens_fn


class SyntheticTaskDataset(torch.utils.data.Dataset):
    """Generated samples, made on demand: item i is (task, length) i mod the mix, item seed
    ``item_seed(seed, i)`` (:mod:`memdlm.tasks.seeds`: which base seed each use takes).

    Lazy generation costs nothing up front, and item i is the same on every
    process and after a resume.
    """

    def __init__(self, tokenizer, tasks: list[str], lengths: list[int], split: str,
                 num_samples: int, seed: int = 0, haystack=None, mask_prompt: bool = False):
        if not tasks or not lengths:
            raise ValueError("need at least one task and one length")
        self.tokenizer = tokenizer
        self.tasks = [get_task(t) for t in tasks]
        self.lengths = list(lengths)
        self.split = split
        self.num_samples = num_samples
        self.seed = seed
        self.haystack = haystack
        self.count = count_tokens_fn(tokenizer)
        self.mask_prompt = mask_prompt
        self._check_lengths()

    def _check_lengths(self) -> None:
        """Fail before training starts if a (task, length) pair cannot be generated."""
        for task in self.tasks:
            for length in self.lengths:
                try:
                    task.sample(self.seed, self.split, length, self.count, self.haystack)
                except ValueError as err:
                    raise ConfigError(f"task {task.name!r} at {length} tokens: {err}") from None

    def __len__(self) -> int:
        return self.num_samples

    def length_of(self, i: int) -> int:
        """Item i's context length in tokens, known without generating it."""
        return self.lengths[(i // len(self.tasks)) % len(self.lengths)]

    def nominal_lengths(self) -> list[int]:
        """Every item's length (for length-grouped batches: ``--train-sampling-strategy group_by_length``)."""
        return [self.length_of(i) for i in range(self.num_samples)]

    def sample(self, i: int):
        task = self.tasks[i % len(self.tasks)]
        length = self.length_of(i)
        return task.sample(item_seed(self.seed, i), self.split, length, self.count, self.haystack)

    def __getitem__(self, i: int) -> dict:
        s = self.sample(i)
        ex = encode_pair(self.tokenizer, s.prompt, s.response)
        if self.mask_prompt or self.tasks[i % len(self.tasks)].plain_text:
            # plain-text view: every token is a target
            ex["labels"] = list(ex["input_ids"])
        ex["sample_seed"] = item_seed(self.seed, i)
        return ex
