"""Training/evaluation example sources: generated tasks, user files, plain text.

Each source yields tokenised examples (see :mod:`memdlm.data.collate`) and a
``DataReport`` of what was read, kept and dropped (with row indices), so nothing
is lost silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from memdlm.data.collate import encode_pair, pack_texts
from memdlm.data.formats import (
    DataError,
    PromptResponse,
    check_data_path,
    read_rows,
    read_utf8,
    row_to_example,
)
from memdlm.tasks import get_task
from memdlm.tokenizer import count_tokens_fn

logger = logging.getLogger(__name__)


@dataclass
class DataReport:
    source: str
    rows_read: int = 0
    examples_kept: int = 0
    dropped_too_long: list[int] = field(default_factory=list)
    tokens_dropped_tail: int = 0

    def summary(self) -> str:
        s = f"{self.source}: {self.rows_read} rows read, {self.examples_kept} examples kept"
        if self.dropped_too_long:
            first = ", ".join(map(str, self.dropped_too_long[:10]))
            s += f", {len(self.dropped_too_long)} dropped as longer than max_length (rows {first}"
            s += ", ...)" if len(self.dropped_too_long) > 10 else ")"
        if self.tokens_dropped_tail:
            s += f", {self.tokens_dropped_tail} trailing tokens short of a block dropped"
        return s

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class SyntheticTaskDataset(torch.utils.data.Dataset):
    """Generated samples, made on demand: item i is (task, length) i mod the mix, seed i.

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
        from memdlm.errors import ConfigError

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
        return task.sample(self.seed * 1_000_003 + i, self.split, length, self.count, self.haystack)

    def __getitem__(self, i: int) -> dict:
        s = self.sample(i)
        ex = encode_pair(self.tokenizer, s.prompt, s.response)
        if self.mask_prompt or getattr(self.tasks[i % len(self.tasks)], "plain_text", False):
            # plain-text view: every token is a target
            ex["labels"] = list(ex["input_ids"])
        ex["sample_seed"] = self.seed * 1_000_003 + i
        return ex


def load_file_examples(path: str | Path, tokenizer, max_length: int,
                       block_size: int | None = None) -> tuple[list[dict], DataReport]:
    """Examples from a user's JSON/JSONL/TXT file.

    Prompt/response rows longer than ``max_length`` tokens are dropped and listed
    in the report. ``text`` rows and ``.txt`` files are packed into blocks of
    ``block_size`` (default ``max_length``). A file mixing both kinds is an error.
    """
    path = Path(path)
    report = DataReport(source=str(path))
    if path.suffix == ".txt":
        check_data_path(path)
        texts = [read_utf8(path)]
        report.rows_read = 1
        return _packed(texts, tokenizer, block_size or max_length, report)
    rows = read_rows(path)
    report.rows_read = len(rows)
    parsed = [row_to_example(row, i, tokenizer, source=str(path)) for i, row in enumerate(rows)]
    kinds = {isinstance(p, str) for p in parsed}
    if len(kinds) > 1:
        first_text = next(i for i, p in enumerate(parsed) if isinstance(p, str))
        raise DataError(f"{path}: row {first_text} is plain text but other rows are prompt/response; "
                        "use one kind per file")
    if parsed and isinstance(parsed[0], str):
        return _packed(parsed, tokenizer, block_size or max_length, report)
    examples = []
    for i, pr in enumerate(parsed):
        assert isinstance(pr, PromptResponse)
        ex = encode_pair(tokenizer, pr.prompt, pr.response)
        if len(ex["input_ids"]) > max_length:
            report.dropped_too_long.append(i)
            continue
        ex["sample_seed"] = i
        examples.append(ex)
    report.examples_kept = len(examples)
    if not examples:
        raise DataError(f"{path}: no usable rows ({report.summary()})")
    logger.info(report.summary())
    return examples, report


def _packed(texts, tokenizer, block_size, report):
    blocks = pack_texts(tokenizer, texts, block_size)
    total = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    report.tokens_dropped_tail = total - len(blocks) * block_size
    for i, b in enumerate(blocks):
        b["sample_seed"] = i
    report.examples_kept = len(blocks)
    if not blocks:
        raise DataError(f"{report.source}: shorter than one block of {block_size} tokens")
    return blocks, report
