"""Reading user data rows and turning them into (prompt, response) or plain text.

Accepted row formats (JSON / JSONL files, one object per row):

- ``prompt`` / ``response`` -- used as raw text (no chat template);
- Alpaca / LongAlpaca ``instruction`` / ``input`` (optional) / ``output`` -- the
  user turn is ``instruction`` followed by a blank line and ``input`` when present;
- chat ``messages`` -- a list of ``{"role", "content"}``; the last message must
  come from the assistant and is the response, everything before it the prompt;
- ``text`` -- plain text for pre-training (packed into blocks, every token scored).

Alpaca and chat rows go through the tokenizer's chat template when it has one
(the shipped tokenizer does), otherwise through ``"User: ...\\nAssistant:"``.
Every error names the file and the row's index (0-based).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from memdlm.errors import DataError  # defined with the other user errors; imported from here too


@dataclass(frozen=True)
class PromptResponse:
    prompt: str
    response: str


def check_data_path(path: Path) -> None:
    if path.is_dir():
        raise DataError(f"data file {path} is a directory; give a .json, .jsonl, .parquet, .arrow or .txt file inside it")
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")


def read_utf8(path: Path, what: str = "data file") -> str:
    """The file's text; bytes that are not UTF-8 are a DataError naming the line and byte."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(f"{what} {path}: line {line} (byte {err.start}) is not UTF-8 "
                        f"({raw[err.start:err.start + 1]!r}: {err.reason}); re-save the file as UTF-8") from None


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a .json (a list of objects) or .jsonl file, validated line by line."""
    path = Path(path)
    check_data_path(path)
    text = read_utf8(path)
    whole = _parse_whole(text) if path.suffix == ".json" else None
    if whole is not None:
        rows = whole if isinstance(whole, list) else [whole]
    elif path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err})") from None
    else:
        rows = []
        for line_no, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: row {len(rows)} (line {line_no + 1}) is not valid JSON: {err.msg}") from None
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i} is a {type(row).__name__}, expected a JSON object")
    return rows


def _parse_whole(text: str):
    """The file as one JSON document (a list of rows or one object), or None."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def detect_format(row: dict) -> str:
    if "messages" in row:
        return "messages"
    if "instruction" in row:
        return "alpaca"
    if "prompt" in row or "response" in row:
        return "prompt_response"
    if "text" in row:
        return "text"
    raise KeyError("no known fields")


def _require_str(row: dict, key: str, where: str, allow_empty: bool = False) -> str:
    if key not in row:
        raise DataError(f"{where}: missing field {key!r} (fields present: {sorted(row)})")
    value = row[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} is a {type(value).__name__}, expected a string")
    if not allow_empty and not value.strip():
        raise DataError(f"{where}: field {key!r} is empty")
    return value


def render_user_turn(tokenizer, messages: list[dict]) -> str:
    """The prompt text for a conversation ending before the assistant's answer."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    turns = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
    return turns + "Assistant:"


def row_to_example(row: dict, index: int, tokenizer, source: str = "data") -> PromptResponse | str:
    """A PromptResponse, or a str for plain-text rows. Raises DataError naming the row."""
    where = f"{source}: row {index}"
    try:
        kind = detect_format(row)
    except KeyError:
        raise DataError(
            f"{where} has none of the fields 'prompt'/'response', 'instruction'/'output', "
            f"'messages' or 'text' (fields present: {sorted(row)})") from None
    if kind == "text":
        return _require_str(row, "text", where)
    if kind == "prompt_response":
        return PromptResponse(_require_str(row, "prompt", where, allow_empty=True),
                              _require_str(row, "response", where))
    if kind == "alpaca":
        user = _require_str(row, "instruction", where)
        extra = row.get("input")
        extra = "" if extra is None else extra
        if not isinstance(extra, str):
            raise DataError(f"{where}: field 'input' is a {type(extra).__name__}, expected a string")
        if extra.strip():
            user = f"{user}\n\n{extra}"
        prompt = render_user_turn(tokenizer, [{"role": "user", "content": user}])
        return PromptResponse(prompt, _require_str(row, "output", where))
    return _messages_example(row["messages"], where, tokenizer)


def _messages_example(messages, where: str, tokenizer) -> PromptResponse:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list")
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"{where}: message {j} needs 'role' and 'content'")
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last message must be the assistant's (got {messages[-1]['role']!r})")
    response = messages[-1]["content"]
    if not isinstance(response, str) or not response.strip():
        raise DataError(f"{where}: the assistant's response is empty")
    return PromptResponse(render_user_turn(tokenizer, messages[:-1]), response)
