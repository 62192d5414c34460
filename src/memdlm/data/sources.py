"""Training examples from user data: files and hub datasets, read through ``datasets``.

``--data`` names a local file (``.json`` / ``.jsonl`` / ``.parquet`` / ``.arrow``, read by
``datasets.load_dataset``'s packaged builders; ``.txt``, one document packed for
pre-training) or a hub dataset (``owner/name``, read from the local cache when the hub
cannot be reached). ``--data-split`` picks the split (local files have one, ``train``;
slices such as ``train[:1000]`` work without streaming) and ``--data-streaming`` reads rows
lazily, as training consumes them, for sets too large to tokenise up front.

Every source yields tokenised examples (see :mod:`memdlm.data.collate`) and a
``DataReport`` of what was read, kept and dropped (with row indices), so nothing is
lost silently; every bad row is a one-line ``DataError`` naming the source and the row.
Generated tasks are :class:`memdlm.tasks.dataset.SyntheticTaskDataset`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
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

logger = logging.getLogger(__name__)

# datasets' packaged builder for each file suffix; any other existing file is read as JSON lines.
BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".arrow": "arrow"}
TEXT_SUFFIX = ".txt"  # one plain-text document, packed into blocks
# the fields the row formats read (memdlm.data.formats)
ROW_FIELDS = ("prompt", "response", "instruction", "input", "output", "messages", "text")


@dataclass
class DataReport:
    source: str
    rows_read: int = 0
    examples_kept: int = 0
    dropped_too_long: list[int] = field(default_factory=list)
    tokens_dropped_tail: int = 0
    split: str | None = None
    # streaming: the counts grow as training reads rows (rewritten at the end of the run);
    # they cover the first pass over the data only.
    streaming: bool = False

    def summary(self) -> str:
        s = f"{self.source}: {self.rows_read} rows read, {self.examples_kept} examples kept"
        if self.streaming:
            s += " so far (streaming)"
        if self.dropped_too_long:
            first = ", ".join(map(str, self.dropped_too_long[:10]))
            s += f", {len(self.dropped_too_long)} dropped as longer than max_length (rows {first}"
            s += ", ...)" if len(self.dropped_too_long) > 10 else ")"
        if self.tokens_dropped_tail:
            s += f", {self.tokens_dropped_tail} trailing tokens short of a block dropped"
        return s

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def load_file_examples(source: str | Path, tokenizer, max_length: int, block_size: int | None = None,
                       split: str = "train", streaming: bool = False):
    """``(examples, report)`` from a user's file or a hub dataset.

    Prompt/response rows longer than ``max_length`` tokens are dropped and listed in the
    report. ``text`` rows and ``.txt`` files are packed into blocks of ``block_size``
    (default ``max_length``). A source mixing both kinds is an error. ``examples`` is a
    list, or with ``streaming`` a ``torch`` ``IterableDataset`` that tokenises rows as they
    are read.
    """
    source = str(source)
    block = block_size or max_length
    path = Path(source)
    if path.suffix == TEXT_SUFFIX:
        report = DataReport(source=source, split=split)
        check_data_path(path)
        report.rows_read = 1
        return _packed([read_utf8(path)], tokenizer, block, report)
    rows = RowSource(source, split, streaming)
    if streaming:
        report = DataReport(source=source, split=split, streaming=True)
        return StreamedExamples(rows, tokenizer, max_length, block, report), report
    report = DataReport(source=source, split=split)
    parsed = []
    for i, row in enumerate(rows.rows(explain=lambda p: _check_rows(p, tokenizer))):
        parsed.append(row_to_example(row, i, tokenizer, source=source))
    report.rows_read = len(parsed)
    kinds = {isinstance(p, str) for p in parsed}
    if len(kinds) > 1:
        first_text = next(i for i, p in enumerate(parsed) if isinstance(p, str))
        raise DataError(f"{source}: row {first_text} is plain text but other rows are prompt/response; "
                        "use one kind per file")
    if parsed and isinstance(parsed[0], str):
        return _packed(parsed, tokenizer, block, report)
    examples = []
    for i, pr in enumerate(parsed):
        assert isinstance(pr, PromptResponse)
        ex = _encoded(pr, i, tokenizer, max_length, report)
        if ex is not None:
            examples.append(ex)
    if not examples:
        raise DataError(f"{source}: no usable rows ({report.summary()})")
    logger.info(report.summary())
    return examples, report


def _encoded(pr: PromptResponse, index: int, tokenizer, max_length: int, report: DataReport) -> dict | None:
    """The row's example (its index as ``sample_seed``), or None -- listed in the report --
    when it is longer than ``max_length``."""
    ex = encode_pair(tokenizer, pr.prompt, pr.response)
    if len(ex["input_ids"]) > max_length:
        report.dropped_too_long.append(index)
        return None
    ex["sample_seed"] = index
    report.examples_kept += 1
    return ex


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


def _check_rows(path: Path, tokenizer) -> None:
    """Raise the DataError naming the first bad row of a JSON/JSONL file (its JSON, its
    object-ness, its fields), the explanation of a failure of ``datasets``' reader."""
    for i, row in enumerate(read_rows(path)):
        row_to_example(row, i, tokenizer, source=str(path))


# --- reading rows through datasets ------------------------------------------------------------


class RowSource:
    """The rows of ``--data`` as dicts, read by ``datasets.load_dataset`` (again on every
    pass when streaming). Fields that are null -- arrow fills a field missing from a row
    with None -- are left out, so a row holds the fields it was written with."""

    def __init__(self, source: str, split: str, streaming: bool):
        self.source, self.split, self.streaming = source, split, streaming
        path = Path(source)
        self.path = path if path.suffix in BUILDERS or path.exists() else None
        if self.path is not None:
            check_data_path(path)  # missing, or a directory: one line naming it

    def rows(self, explain=None) -> Iterator[dict]:
        """Every row, in order. ``explain(path)``: called when ``datasets`` cannot read a
        local JSON file, to raise the error naming the row (else a one-line DataError)."""
        dataset = self._load(explain)
        iterator = iter(dataset)
        while True:
            try:
                with _quiet_datasets():
                    row = next(iterator)
            except StopIteration:
                return
            except DataError:
                raise
            except Exception as err:  # a streamed file's reader fails at the row it cannot parse
                self._fail(err, explain)
            yield {k: v for k, v in row.items() if v is not None}

    def _load(self, explain):
        import datasets

        try:
            with _quiet_datasets():
                if self.path is None:
                    dataset = datasets.load_dataset(self.source, split=self.split, streaming=self.streaming)
                else:
                    dataset = datasets.load_dataset(BUILDERS.get(self.path.suffix, "json"),
                                                    data_files=str(self.path), split=self.split,
                                                    streaming=self.streaming)
        except DataError:
            raise
        except Exception as err:
            self._fail(err, explain)
        self._check_columns(dataset, explain)
        return dataset

    def _check_columns(self, dataset, explain) -> None:
        """A row field whose values mix types (a string in one row, a number in another) is
        a bad row, and datasets stores such a column as JSON text that decodes the string
        "2" as the number 2: name the row (JSON files), else the column."""
        mixed = [name for name, feature in (getattr(dataset, "features", None) or {}).items()
                 if name in ROW_FIELDS and type(feature).__name__ == "Json"]
        if not mixed:
            return
        if self.path is not None and explain is not None:
            explain(self.path)
        raise DataError(f"{self.source}: field {mixed[0]!r} holds values of different types across rows; "
                        "make it a string in every row")

    def _fail(self, err: Exception, explain):
        if self.path is None:
            raise DataError(hub_failure(self.source, self.split, err)) from None
        if self.path.suffix not in (".parquet", ".arrow") and explain is not None:
            explain(self.path)  # raises the error naming the row when a row is at fault
            if not read_rows(self.path):  # datasets cannot build a dataset of no rows
                raise DataError(f"{self.path}: no usable rows ({DataReport(str(self.path)).summary()})")
        raise DataError(f"{self.path}: datasets cannot read it as {BUILDERS.get(self.path.suffix, 'json')} "
                        f"(split {self.split!r}): {first_line(err)}") from None


def hub_failure(name: str, split: str, err: Exception) -> str:
    """One line for a hub dataset that could not be loaded: not a local file, not in the
    cache (named) while the hub is offline or unreachable, or a bad split."""
    import datasets

    text = first_line(err)
    if "split" in text.lower() and "unknown" in text.lower():
        return f"dataset {name!r}: {text}; choose one with --data-split"
    if isinstance(err, datasets.exceptions.DatasetNotFoundError) and not datasets.config.HF_HUB_OFFLINE:
        return f"--data {name!r} is neither a local file nor a dataset on the hub: {text}"
    offline = "HF_HUB_OFFLINE is set" if datasets.config.HF_HUB_OFFLINE else "the hub is unreachable"
    detail = "" if "not cached" in text else f" ({text})"
    return (f"--data {name!r} is not a local file, and the dataset {name!r} is not in the local cache "
            f"{datasets.config.HF_DATASETS_CACHE} while {offline}{detail}: run datasets.load_dataset({name!r}) "
            "where the hub is reachable and copy that cache here, or give a local file")


def first_line(err: BaseException) -> str:
    """The innermost cause's message, first line (datasets wraps the reader's error)."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    lines = str(err).strip().splitlines() or [type(err).__name__]
    return lines[0]


@contextlib.contextmanager
def _quiet_datasets():
    """datasets logs a reader's failure before raising it; the raised error is ours to word."""
    import datasets

    level = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)


# --- streaming ---------------------------------------------------------------------------------


class StreamedExamples(torch.utils.data.IterableDataset):
    """Rows tokenised as training reads them (``--data-streaming``): prompt/response rows one
    example each (too long: dropped and listed), text rows packed into blocks as they come.
    Bad rows stop training with the same one-line error as without streaming. Each pass
    reads the source again; the report counts the first pass."""

    def __init__(self, rows: RowSource, tokenizer, max_length: int, block_size: int, report: DataReport):
        self.rows, self.tokenizer = rows, tokenizer
        self.max_length, self.block_size, self.report = max_length, block_size, report
        self.passes = 0

    def __iter__(self) -> Iterator[dict]:
        counting = self.passes == 0
        self.passes += 1
        report = self.report if counting else DataReport(source=self.report.source)
        kind = None
        buffer: list[int] = []
        blocks = 0
        rows = self.rows.rows(explain=lambda p: _check_rows(p, self.tokenizer))
        for i, row in enumerate(rows):
            item = row_to_example(row, i, self.tokenizer, source=self.rows.source)
            report.rows_read += 1
            kind = _same_kind(kind, item, i, self.rows.source)
            if isinstance(item, PromptResponse):
                ex = _encoded(item, i, self.tokenizer, self.max_length, report)
                if ex is not None:
                    yield ex
                continue
            buffer += self.tokenizer(item, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            for block in _cut_blocks(buffer, self.block_size):
                report.examples_kept += 1
                yield {"input_ids": block, "labels": list(block), "sample_seed": blocks}
                blocks += 1
        report.tokens_dropped_tail = len(buffer) if kind == "text" else 0
        if report.examples_kept == 0:
            raise DataError(f"{self.rows.source}: no usable rows ({report.summary()})")


def _same_kind(kind: str | None, item, index: int, source: str) -> str:
    this = "text" if isinstance(item, str) else "pair"
    if kind is not None and this != kind:
        raise DataError(f"{source}: row {index} is {'plain text' if this == 'text' else 'prompt/response'} "
                        f"but earlier rows are {'plain text' if kind == 'text' else 'prompt/response'}; "
                        "use one kind per file")
    return this


def _cut_blocks(buffer: list[int], block_size: int) -> Iterable[list[int]]:
    """Full blocks off the front of ``buffer`` (which keeps the remainder)."""
    while len(buffer) >= block_size:
        block = buffer[:block_size]
        del buffer[:block_size]
        yield block
