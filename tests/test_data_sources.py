"""``--data`` through ``datasets.load_dataset``: parquet and arrow files (LongAlpaca's
instruction/input/output rows), splits, streaming, hub names read offline from the cache."""

from __future__ import annotations

import json

import datasets
import pytest

from memdlm.cli import main
from memdlm.data.collate import pack_texts
from memdlm.data.formats import DataError
from memdlm.data.sources import StreamedExamples, load_file_examples

# LongAlpaca-12k's columns (instruction, input, output, file) -- input mostly empty there.
LONGALPACA = [
    {"instruction": "Summarise the paper below.\n\nPaper: diffusion models denoise 12 tokens.",
     "input": "", "output": "It denoises tokens.", "file": "a.pdf"},
    {"instruction": "Add the numbers.", "input": "2 3", "output": "5", "file": "b.pdf"},
    {"instruction": "Repeat: " + "long " * 80, "input": "", "output": "long", "file": "c.pdf"},
    {"instruction": "Say hi.", "input": "", "output": "hi", "file": "d.pdf"},
]
TINY = ["--tiny-layers", "1", "--tiny-hidden-size", "32", "--tiny-intermediate-size", "64"]
QUICK = ["--max-steps", "2", "--per-device-train-batch-size", "2", "--heldout-items", "0",
         "--num-eval-samples", "0", "--logging-steps", "1", "--save-strategy", "no", "--disable-tqdm", "true"]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def write_parquet(path, rows) -> str:
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return str(path)


def write_arrow(directory, rows) -> str:
    """An Arrow file as ``save_to_disk`` writes it (the IPC stream format datasets' arrow builder reads)."""
    datasets.Dataset.from_list(rows).save_to_disk(str(directory))
    return str(next(directory.glob("*.arrow")))


def plain(examples) -> list[dict]:
    return [dict(ex) for ex in examples]


def test_parquet_and_arrow_give_the_jsonl_examples(tok, tmp_path):
    """The same rows as JSONL, parquet and arrow: identical examples and reports (the row
    longer than max_length dropped and listed by index; an extra column ignored)."""
    want, want_report = load_file_examples(write_jsonl(tmp_path / "d.jsonl", LONGALPACA), tok, 64)
    assert want_report.dropped_too_long == [2] and [e["sample_seed"] for e in want] == [0, 1, 3]
    for path in (write_parquet(tmp_path / "d.parquet", LONGALPACA), write_arrow(tmp_path / "arrow", LONGALPACA)):
        got, report = load_file_examples(path, tok, 64)
        assert plain(got) == plain(want), path
        assert (report.rows_read, report.examples_kept, report.dropped_too_long) == (4, 3, [2])
    # the Alpaca rendering: instruction, blank line, input when it is not empty
    assert tok.decode(want[1]["input_ids"]).startswith("User: Add the numbers.\n\n2 3\nAssistant:")


def test_split_slice_and_unknown_split(tok, tmp_path):
    path = write_parquet(tmp_path / "d.parquet", LONGALPACA)
    got, report = load_file_examples(path, tok, 64, split="train[:2]")
    assert [e["sample_seed"] for e in got] == [0, 1] and report.rows_read == 2 and report.split == "train[:2]"
    with pytest.raises(DataError, match=r"d\.parquet: datasets cannot read it as parquet \(split 'test'\)") as err:
        load_file_examples(path, tok, 64, split="test")
    assert "\n" not in str(err.value)


def test_mixed_types_in_a_row_field_name_the_row(tok, tmp_path):
    """datasets stores a column mixing strings and numbers as JSON text, which turns the string
    "2" into the number 2: the row with the number is named instead."""
    rows = [{"prompt": "Q: 1+1?", "response": "2"}, {"prompt": "Q", "response": 3}]
    with pytest.raises(DataError, match=r"row 1: field 'response' is a int"):
        load_file_examples(write_jsonl(tmp_path / "d.jsonl", rows), tok, 64)


def test_streaming_yields_the_same_examples_and_report(tok, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", LONGALPACA)
    want, want_report = load_file_examples(path, tok, 64)
    stream, report = load_file_examples(path, tok, 64, streaming=True)
    assert isinstance(stream, StreamedExamples) and report.streaming and report.rows_read == 0
    assert plain(stream) == plain(want)
    assert (report.rows_read, report.examples_kept, report.dropped_too_long) == (4, 3, [2])
    assert plain(stream) == plain(want)  # a second pass reads again; the report counts the first
    assert report.rows_read == 4


def test_streaming_text_rows_are_packed_as_without_streaming(tok, tmp_path):
    texts = ["Once upon a time there was a cat.", "It sat on 3 mats.", "Then it slept all day long."]
    path = write_parquet(tmp_path / "t.parquet", [{"text": t} for t in texts])
    stream, report = load_file_examples(path, tok, max_length=64, block_size=6, streaming=True)
    blocks = plain(stream)
    assert [{k: b[k] for k in ("input_ids", "labels")} for b in blocks] == pack_texts(tok, texts, 6)
    assert [b["sample_seed"] for b in blocks] == list(range(len(blocks)))
    total = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    assert report.tokens_dropped_tail == total - 6 * len(blocks) and report.examples_kept == len(blocks)


def test_streaming_bad_row_is_named(tok, tmp_path):
    rows = [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": "  "}]
    stream, _ = load_file_examples(write_jsonl(tmp_path / "d.jsonl", rows), tok, 64, streaming=True)
    with pytest.raises(DataError, match=r"d\.jsonl: row 1: field 'response' is empty"):
        plain(stream)


def test_hub_name_not_cached_offline_is_one_line(tok, monkeypatch, tmp_path):
    """A name that is no local file is a hub dataset; offline and not cached, one line
    names the cache and the way out (no download is attempted)."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    with pytest.raises(DataError) as err:
        load_file_examples("memdlm-tests/no-such-set", tok, 64)
    line = str(err.value)
    assert "\n" not in line
    assert "'memdlm-tests/no-such-set' is not a local file" in line
    assert f"not in the local cache {tmp_path / 'cache'} while HF_HUB_OFFLINE is set" in line


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True], ids=["parquet", "streaming"])
def test_train_on_longalpaca_parquet(tmp_path, streaming):
    """Two MemDLM steps of a tiny model on LongAlpaca-style parquet rows, read up front or
    streamed; data_report.json lists the dropped row either way."""
    data = write_parquet(tmp_path / "longalpaca.parquet", LONGALPACA * 2)
    out = tmp_path / "run"
    flags = ["--data-streaming", "true"] if streaming else []
    rc = main(["train", "--method", "memdlm", "--data", data, "--max-length", "64", "--output-dir", str(out),
               *flags, *TINY, *QUICK])
    assert rc == 0
    summary = json.loads((out / "run_complete.json").read_text())
    assert summary["global_step"] == 2
    report = json.loads((out / "data_report.json").read_text())
    assert report["streaming"] is streaming and report["dropped_too_long"][:1] == [2]
    if not streaming:
        assert (report["rows_read"], report["examples_kept"], report["dropped_too_long"]) == (8, 6, [2, 6])
    else:  # at least the four examples two steps of two took (the loader reads ahead)
        assert report["examples_kept"] >= 4
        assert report["rows_read"] == report["examples_kept"] + len(report["dropped_too_long"])


def test_streaming_with_loader_workers_is_refused(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", LONGALPACA)
    rc = main(["train", "--data", data, "--data-streaming", "true", "--dataloader-num-workers", "2",
               "--output-dir", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "--data-streaming reads rows in the main process" in err
