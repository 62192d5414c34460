"""Training/evaluation examples from user files and plain text.

Each source yields tokenised examples (see :mod:`memdlm.data.collate`) and a
``DataReport`` of what was read, kept and dropped (with row indices), so nothing
is lost silently. Generated tasks are :class:`memdlm.tasks.dataset.SyntheticTaskDataset`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from memdlm.data.collate import encode_pair, pack_texts
from memdlm.data.formats import (
    DataError,
    PromptResponse,
    check_data_path,
    read_rows,
    read_utf8,
    row_to_example,
)

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
