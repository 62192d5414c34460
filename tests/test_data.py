"""Data: the collator, tokenisation and packing, user files, generated tasks, the tokenizer."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from memdlm.data.collate import IGNORE, DiffusionCollator, encode_pair, pack_texts
from memdlm.data.formats import DataError, PromptResponse, row_to_example
from memdlm.data.sources import load_file_examples
from memdlm.tasks.dataset import SyntheticTaskDataset
from memdlm.backbones.tokenizer import count_tokens_fn, ensure_special_tokens, load_tokenizer

# --- DiffusionCollator ------------------------------------------------------------------

EXAMPLES = [
    {"input_ids": [10, 11, 12, 13], "labels": [IGNORE, IGNORE, 12, 13], "sample_seed": 5},
    {"input_ids": [20, 21], "labels": [IGNORE, 21], "sample_seed": 9},
    {"input_ids": [30, 31, 32, 33, 34], "labels": [IGNORE, 31, 32, 33, 34], "sample_seed": 2},
]


def test_collator_right_pads_and_ignores_prompt_and_padding():
    batch = DiffusionCollator(pad_token_id=0, eos_token_id=2)(EXAMPLES)
    assert batch["input_ids"].tolist() == [[10, 11, 12, 13, 0],
                                           [20, 21, 0, 0, 0],
                                           [30, 31, 32, 33, 34]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, 12, 13, IGNORE],
                                        [IGNORE, 21, IGNORE, IGNORE, IGNORE],
                                        [IGNORE, 31, 32, 33, 34]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0],
                                                [1, 1, 0, 0, 0],
                                                [1, 1, 1, 1, 1]]
    assert batch["sample_seed"].tolist() == [5, 9, 2]
    assert all(v.dtype == torch.long for v in batch.values())


def test_collator_pad_with_eos_makes_padding_maskable_eos():
    batch = DiffusionCollator(pad_token_id=0, eos_token_id=2, pad_with_eos=True)(EXAMPLES[:2])
    assert batch["input_ids"].tolist() == [[10, 11, 12, 13], [20, 21, 2, 2]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, 12, 13], [IGNORE, 21, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]


def test_collator_pad_to_multiple_of():
    batch = DiffusionCollator(pad_token_id=0, pad_to_multiple_of=4)(EXAMPLES)
    assert batch["input_ids"].shape == (3, 8)
    assert batch["attention_mask"].sum(1).tolist() == [4, 2, 5]
    assert (batch["labels"][:, 5:] == IGNORE).all()


def test_collator_sample_seed_only_when_every_example_has_one():
    no_seed = [dict(EXAMPLES[0]), {k: v for k, v in EXAMPLES[1].items() if k != "sample_seed"}]
    assert "sample_seed" not in DiffusionCollator(pad_token_id=0)(no_seed)


# --- encode_pair and pack_texts ---------------------------------------------------------


def test_encode_pair_masks_only_the_response_and_eos(tok):
    prompt, response = "Question: what is 12 plus 30? Answer:", " 42"
    ex = encode_pair(tok, prompt, response)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"]
    assert ex["input_ids"] == p + r + [tok.eos_token_id]
    assert ex["labels"] == [IGNORE] * len(p) + r + [tok.eos_token_id]
    assert ex["input_ids"][-1] == tok.eos_token_id
    assert tok.decode(ex["input_ids"][:len(p)]) == prompt
    assert tok.decode([i for i in ex["labels"] if i != IGNORE][:-1]) == response


def test_pack_texts_full_blocks_with_eos_between_documents(tok):
    texts = ["The cat sat on the mat.", "Dogs bark at 7 pm.", "A short one.", "Last words here."]
    stream = []
    for t in texts:
        stream += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    blocks = pack_texts(tok, texts, block_size=8)
    assert len(blocks) == len(stream) // 8 >= 2
    assert all(len(b["input_ids"]) == 8 for b in blocks)
    assert all(b["labels"] == b["input_ids"] for b in blocks)  # every token maskable
    assert sum((b["input_ids"] for b in blocks), []) == stream[:len(blocks) * 8]
    assert stream.count(tok.eos_token_id) == len(texts)


# --- user files -------------------------------------------------------------------------


def write_jsonl(path, rows) -> str:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def split_decode(tok, ex: dict) -> tuple[str, str]:
    """(prompt text, response text) from an example; the response's final EOS is checked."""
    n_prompt = sum(1 for x in ex["labels"] if x == IGNORE)
    assert ex["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
    assert ex["input_ids"][-1] == tok.eos_token_id
    return tok.decode(ex["input_ids"][:n_prompt]), tok.decode(ex["input_ids"][n_prompt:-1])


def test_prompt_response_jsonl(tok, tmp_path):
    rows = [{"prompt": "Q: 2+2?", "response": " 4"},
            {"prompt": "", "response": "plain response"},
            {"prompt": "Name a colour.", "response": " Blue, like 1 sky."}]
    examples, report = load_file_examples(write_jsonl(tmp_path / "d.jsonl", rows), tok, 64)
    assert [split_decode(tok, ex) for ex in examples] == [(r["prompt"], r["response"]) for r in rows]
    assert [ex["sample_seed"] for ex in examples] == [0, 1, 2]
    assert (report.rows_read, report.examples_kept, report.dropped_too_long) == (3, 3, [])


def test_alpaca_json_list(tok, tmp_path):
    rows = [{"instruction": "Add the numbers.", "input": "2 3", "output": "5"},
            {"instruction": "Say hi.", "output": "hi"},
            {"instruction": "Echo.", "input": "", "output": "ok"}]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(rows, indent=2))
    examples, report = load_file_examples(path, tok, 64)
    assert [split_decode(tok, ex) for ex in examples] == [
        ("User: Add the numbers.\n\n2 3\nAssistant:", "5"),
        ("User: Say hi.\nAssistant:", "hi"),
        ("User: Echo.\nAssistant:", "ok"),
    ]
    assert report.rows_read == 3 and report.examples_kept == 3


def test_messages_jsonl(tok, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "hello"}]},
            {"messages": [{"role": "system", "content": "be brief"},
                          {"role": "user", "content": "a"},
                          {"role": "assistant", "content": "b"},
                          {"role": "user", "content": "c"},
                          {"role": "assistant", "content": "d 12"}]}]
    examples, _ = load_file_examples(write_jsonl(tmp_path / "chat.jsonl", rows), tok, 64)
    assert [split_decode(tok, ex) for ex in examples] == [
        ("User: hi\nAssistant:", "hello"),
        ("System: be brief\nUser: a\nAssistant: b<|eos|>\nUser: c\nAssistant:", "d 12"),
    ]


def test_text_jsonl_is_packed(tok, tmp_path):
    texts = ["Once upon a time there was a cat.", "It sat on 3 mats.", "Then it slept all day long."]
    path = write_jsonl(tmp_path / "text.jsonl", [{"text": t} for t in texts])
    blocks, report = load_file_examples(path, tok, max_length=64, block_size=6)
    assert [{k: b[k] for k in ("input_ids", "labels")} for b in blocks] == pack_texts(tok, texts, 6)
    assert [b["sample_seed"] for b in blocks] == list(range(len(blocks)))
    total = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    assert report.tokens_dropped_tail == total - 6 * len(blocks)
    assert 0 <= report.tokens_dropped_tail < 6
    assert report.rows_read == 3 and report.examples_kept == len(blocks)


def test_txt_file_is_packed(tok, tmp_path):
    text = "Plain text for pre-training.\nA second line with 123 numbers.\n" * 3
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    blocks, report = load_file_examples(path, tok, max_length=16)  # block_size defaults to it
    stream = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert sum((b["input_ids"] for b in blocks), []) == stream[:16 * len(blocks)]
    assert all(len(b["input_ids"]) == 16 and b["labels"] == b["input_ids"] for b in blocks)
    assert report.rows_read == 1 and report.tokens_dropped_tail == len(stream) - 16 * len(blocks)


def test_too_long_rows_dropped_and_listed(tok, tmp_path):
    long_prompt = " ".join(["word"] * 40)
    rows = [{"prompt": "a", "response": "b"},
            {"prompt": long_prompt, "response": "b"},
            {"prompt": "c", "response": "d"},
            {"prompt": "x", "response": long_prompt},
            {"prompt": "e", "response": "f"}]
    exact = encode_pair(tok, "Exactly at the limit:", " yes")
    rows.append({"prompt": "Exactly at the limit:", "response": " yes"})
    max_length = len(exact["input_ids"])
    assert max_length < 40
    examples, report = load_file_examples(write_jsonl(tmp_path / "d.jsonl", rows), tok, max_length)
    assert report.dropped_too_long == [1, 3]
    assert report.examples_kept + len(report.dropped_too_long) == report.rows_read == 6
    assert [ex["sample_seed"] for ex in examples] == [0, 2, 4, 5]  # the row index survives
    assert examples[-1]["input_ids"] == exact["input_ids"]  # a row of exactly max_length is kept
    assert "2 dropped" in report.summary() and "rows 1, 3" in report.summary()


def test_all_rows_too_long_is_an_error(tok, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a b c d e f", "response": "g h"}])
    with pytest.raises(DataError, match="no usable rows"):
        load_file_examples(path, tok, 3)


@pytest.mark.parametrize("lines, pattern", [
    # malformed JSON: row index (blank lines skipped) and 1-based line number
    (['{"prompt": "a", "response": "b"}', "", '{"prompt": "c", "response": "d"}',
      '{"prompt": "e", "response": }'], r"row 2 \(line 4\) is not valid JSON"),
    (['{"prompt": "a", "response": "b"}', '{"prompt": "c", "response": "d"}',
      '{"question": "q", "answer": "a"}'], r"row 2 has none of the fields.*'question'"),
    (['{"prompt": "a", "response": "b"}'] * 3 + ['{"prompt": "c", "response": "  "}'],
     r"row 3: field 'response' is empty"),
    (['{"prompt": "a", "response": "b"}', '{"prompt": "c", "response": 5}'],
     r"row 1: field 'response' is a int, expected a string"),
    (['{"prompt": ["a"], "response": "b"}'], r"row 0: field 'prompt' is a list"),
    (['{"prompt": "c"}'], r"row 0: missing field 'response'"),
    (['{"instruction": "i", "input": "x", "output": 7}'], r"row 0: field 'output' is a int"),
    (['{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
      '{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}'],
     r"row 1: the last message must be the assistant's \(got 'user'\)"),
    (['{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}'],
     r"row 0: the assistant's response is empty"),
    (['{"messages": []}'], r"row 0: 'messages' must be a non-empty list"),
    (['{"prompt": "a", "response": "b"}', '{"text": "plain"}'],
     r"row 1 is plain text but other rows are prompt/response"),
    (['{"text": "plain"}', '{"prompt": "a", "response": "b"}'],
     r"row 0 is plain text but other rows are prompt/response"),
    (['{"text": " "}'], r"row 0: field 'text' is empty"),
    (['{"prompt": "a", "response": "b"}', "[1, 2]"], r"row 1 is a list, expected a JSON object"),
])
def test_bad_rows_name_file_and_row(tok, tmp_path, lines, pattern):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=pattern) as err:
        load_file_examples(path, tok, 64)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)  # one line for the CLI


def test_json_list_with_non_object_row(tok, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"prompt": "a", "response": "b"}, 3]))
    with pytest.raises(DataError, match=r"row 1 is a int"):
        load_file_examples(path, tok, 64)


def test_missing_file_and_short_txt(tok, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_file_examples(tmp_path / "nope.jsonl", tok, 64)
    (tmp_path / "short.txt").write_text("too short")
    with pytest.raises(DataError, match="shorter than one block of 64"):
        load_file_examples(tmp_path / "short.txt", tok, 64)


def test_row_to_example_kinds(tok):
    assert row_to_example({"text": "abc"}, 0, tok) == "abc"
    assert row_to_example({"prompt": "p", "response": "r"}, 0, tok) == PromptResponse("p", "r")


# --- generated tasks --------------------------------------------------------------------


def test_synthetic_items_deterministic(tok):
    a = SyntheticTaskDataset(tok, ["kv"], [128, 256], "train", 50, seed=3)
    b = SyntheticTaskDataset(tok, ["kv"], [128, 256], "train", 50, seed=3)
    assert len(a) == 50
    for i in (0, 1, 7, 49):
        assert a[i] == b[i]
        assert a.sample(i) == b.sample(i)
        assert a[i]["sample_seed"] == 3 * 1_000_003 + i
    assert a[0]["input_ids"] != a[2]["input_ids"]
    other_seed = SyntheticTaskDataset(tok, ["kv"], [128, 256], "train", 50, seed=4)
    assert other_seed[0]["input_ids"] != a[0]["input_ids"]
    # Lengths cycle with i: even items fit 128 tokens (+ EOS), odd items use the 256 budget.
    assert all(len(a[i]["input_ids"]) <= 129 for i in (0, 2, 4))
    assert all(129 < len(a[i]["input_ids"]) <= 257 for i in (1, 3, 5))


def test_synthetic_train_and_eval_items_are_disjoint(tok):
    train = SyntheticTaskDataset(tok, ["kv"], [128], "train", 100, seed=0)
    evals = SyntheticTaskDataset(tok, ["kv"], [128], "eval", 100, seed=0)
    keys, values = {"train": set(), "eval": set()}, {"train": set(), "eval": set()}
    for split, ds in (("train", train), ("eval", evals)):
        for i in range(100):
            s = ds.sample(i)
            keys[split].update(s.meta["keys"])
            values[split].update(s.meta["values"])
            # The response is the queried key's value, stated in the prompt.
            value = s.meta["values"][s.meta["keys"].index(s.meta["key"])]
            assert s.response.strip() == value
            assert f"The value of {s.meta['key']} is {value}." in s.prompt
    assert len(keys["train"]) > 100 and len(keys["eval"]) > 100
    assert not keys["train"] & keys["eval"]
    assert not values["train"] & values["eval"]


def test_synthetic_rejects_empty_and_unknown():
    with pytest.raises(ValueError, match="at least one task"):
        SyntheticTaskDataset(None, [], [64], "train", 1)
    with pytest.raises(ValueError, match=r"unknown task 'nope'.*kv"):
        SyntheticTaskDataset(None, ["nope"], [64], "train", 1)


# --- tokenizer --------------------------------------------------------------------------


def test_shipped_tokenizer_special_tokens(tok):
    ids = {tok.mask_token_id, tok.pad_token_id, tok.eos_token_id}
    assert None not in ids and len(ids) == 3
    assert tok.convert_ids_to_tokens([tok.mask_token_id, tok.pad_token_id, tok.eos_token_id]) == [
        "<|mask|>", "<|pad|>", "<|eos|>"]
    assert tok("<|mask|>", add_special_tokens=False)["input_ids"] == [tok.mask_token_id]
    assert all(i < len(tok) for i in ids)


def test_shipped_tokenizer_digits_are_single_tokens(tok):
    for d in "0123456789":
        assert len(tok(d, add_special_tokens=False)["input_ids"]) == 1
    ids = tok("9081726354", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in ids] == list("9081726354")
    ids = tok("value 2024.", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in ids if tok.decode([i]).isdigit()] == list("2024")


def test_count_tokens_fn_matches_tokenizer(tok):
    count = count_tokens_fn(tok)
    for text in ("", "Hello world", "The value of quiet river is 1234."):
        assert count(text) == len(tok(text, add_special_tokens=False)["input_ids"])


def test_missing_mask_token_names_source(maskless_tokenizer):
    with pytest.raises(ValueError, match=r"/some/model/dir has no mask token"):
        ensure_special_tokens(maskless_tokenizer, source="/some/model/dir")


def test_load_tokenizer_from_directory_without_mask(maskless_tokenizer, tmp_path):
    maskless_tokenizer.save_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match="mask token") as err:
        load_tokenizer(str(tmp_path / "tok"))
    assert str(tmp_path / "tok") in str(err.value)


def wordlevel(**special) -> PreTrainedTokenizerFast:
    vocab = {"<m>": 0, "<e>": 1, "<unk>": 2, "hi": 3}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", **special)


def test_missing_pad_falls_back_to_eos():
    t = ensure_special_tokens(wordlevel(mask_token="<m>", eos_token="<e>"), source="x")
    assert t.pad_token_id == t.eos_token_id == 1
    with pytest.raises(ValueError, match="neither a pad nor an eos"):
        ensure_special_tokens(wordlevel(mask_token="<m>"), source="x")
