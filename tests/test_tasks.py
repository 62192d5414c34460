"""The generated tasks: answers follow from the prompt, lengths fit, splits stay disjoint."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import pytest

from memdlm.data import words
from memdlm.tasks import get_task, task_names
from memdlm.tasks.base import Sample, fit_filler, split_of
from memdlm.tasks.haystack import FillerStream, NoiseHaystack, ProseHaystack
from memdlm.tasks.longresponse import LongResponseTask
from memdlm.tasks.recall import AssociativeRecallTask, pools, recall_report
from memdlm.tasks.ruler import CommonWordsTask
from memdlm.backbones.tokenizer import count_tokens_fn

TASKS = [t for t in task_names() if not get_task(t).plain_text]  # tasks with answers
BABI = ["qa1", "qa2", "qa3", "qa4", "qa5"]


@pytest.fixture(scope="module")
def count(tok):
    """Token counts with the shipped tokenizer (``tok`` comes from conftest.py)."""
    return count_tokens_fn(tok)


def test_registry_has_every_task():
    for name in ["kv", "niah", "mv", "vt", "cwe", "longresp", *BABI]:
        assert name in TASKS


def test_every_generator_module_registers_by_existing_and_lookup_stays_light():
    """The registry imports every module of memdlm.tasks (no hand list) except the torch
    Dataset, so looking a task up pulls in neither torch nor transformers."""
    import subprocess
    import sys
    from pathlib import Path

    import memdlm.tasks
    from memdlm.tasks.base import _REGISTRY, NOT_GENERATORS

    modules = {p.stem for p in Path(memdlm.tasks.__file__).parent.glob("*.py")} - {"__init__"}
    registering = {type(t).__module__.rsplit(".", 1)[1] for t in _REGISTRY.values()}
    assert registering <= modules - NOT_GENERATORS
    assert {"kv", "recall", "ruler", "babilong", "longresponse", "prose"} <= registering
    code = ("import sys; from memdlm.tasks import task_names; task_names(); "
            "assert not {'torch', 'transformers'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_every_task_declares_the_optional_behaviours_with_their_types():
    """The behaviours code outside tasks/ reads (Task's docstring) exist on every task, with
    values in range, whether the task sets them or keeps the base's default."""
    for name in task_names():
        task = get_task(name)
        assert isinstance(task.plain_text, bool) and isinstance(task.fixed_slots, bool)
        assert isinstance(task.decode_steps, int) and task.decode_steps >= 1
        assert task.decode_steps == 1 or task.fixed_slots  # steps count only for fixed slots
        assert isinstance(task.labels, tuple) and (task.metric == "babilong") == bool(task.labels)
        levels = task.reference_levels()
        assert levels is None or (set(levels) == {"uniform", "copy"}
                                  and all(0 < v <= 100 for v in levels.values()))
    assert get_task("mqar_v3").decode_steps == 3 and get_task("prose").plain_text
    kv = get_task("kv").reference_levels()  # 3 distractors: copy 1 in 4; ~a quarter of 9,000 values held out
    assert kv["copy"] == 25.0 and 100 / 2500 < kv["uniform"] < 100 / 2000


def test_no_code_outside_tasks_names_a_task_class():
    """Generic code reads a task's declared behaviours, never its class (isinstance, imports)."""
    from pathlib import Path

    import memdlm
    from memdlm.tasks import Task

    classes, stack = set(), [Task]
    while stack:
        cls = stack.pop()
        classes.add(cls.__name__)
        stack.extend(cls.__subclasses__())
    root = Path(memdlm.__file__).parent
    scripts = root.parents[1] / "scripts"
    for path in [*root.rglob("*.py"), *scripts.rglob("*.py")]:
        if path.parent.name == "tasks" and path.parent.parent == root:
            continue
        named = {c for c in classes - {"Task"} if re.search(rf"\b{c}\b", path.read_text())}
        assert not named, f"{path} names {sorted(named)}"


# ---------------------------------------------------------------- answers from the prompt


def magic_numbers(prompt: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in re.findall(r"One of the special magic numbers for (\S+) is: (\d+)\.", prompt):
        out.setdefault(key, []).append(value)
    return out


def vt_answer(prompt: str, value: str) -> list[str]:
    """Resolve every "VAR X = ..." in the prompt; the variables holding ``value``, in order."""
    resolved: dict[str, str] = {}
    for name, rhs in re.findall(r"VAR ([A-Z]{5}) = (\d+|VAR [A-Z]{5})\.", prompt):
        resolved[name] = resolved.get(rhs[4:], "?") if rhs.startswith("VAR ") else rhs
    return [n for n, v in resolved.items() if v == value]


def cwe_entries(prompt: str) -> list[str]:
    listing = prompt.split("\n")[1]
    pairs = re.findall(r"(\d+)\. (\S+)", listing)
    assert [int(i) for i, _ in pairs] == list(range(1, len(pairs) + 1))
    return [w for _, w in pairs]


NAME = r"([A-Z][a-z]+)"
MOVE = re.compile(NAME + r" (?:moved|went|journeyed|travelled|went back) to the (\w+)\.")
PICK = re.compile(NAME + r" (?:picked up|got|grabbed|took) the (\w+)(?: there)?\.")
DROP = re.compile(NAME + r" (?:dropped|discarded|put down|left) the (\w+)(?: there)?\.")
GIVE = re.compile(NAME + r" (?:gave|handed|passed) the (\w+) to " + NAME + r"\.")
RELATION = re.compile(r"The (\w+) is (north|south|east|west) of the (\w+)\.")


def babi_answer(prompt: str, question: str) -> set[str]:
    """Replay the facts in the prompt's context; every answer the question admits."""
    context = prompt.split("<context>\n")[1].split("\n</context>")[0]
    room: dict[str, str] = {}
    holder: dict[str, str | None] = {}
    dropped: dict[str, str] = {}
    trail: dict[str, list[str]] = {}
    gives, relations = [], []

    def where(obj):
        return room.get(holder[obj]) if holder.get(obj) else dropped.get(obj)

    def visit(obj):
        if where(obj) and trail.setdefault(obj, [])[-1:] != [where(obj)]:
            trail[obj].append(where(obj))

    for sentence in re.split(r"(?<=\.) ", context):
        if m := MOVE.fullmatch(sentence):
            room[m[1]] = m[2]
            for obj in [o for o, h in holder.items() if h == m[1]]:
                visit(obj)
        elif m := PICK.fullmatch(sentence):
            holder[m[2]] = m[1]
            visit(m[2])
        elif m := DROP.fullmatch(sentence):
            holder[m[2]], dropped[m[2]] = None, room[m[1]]
        elif m := GIVE.fullmatch(sentence):
            assert room[m[1]] == room[m[3]], "a give needs both people in one room"
            holder[m[2]] = m[3]
            gives.append((m[1], m[2], m[3]))
        elif m := RELATION.fullmatch(sentence):
            opposite = {"north": "south", "south": "north", "east": "west", "west": "east"}
            relations += [(m[1], m[2], m[3]), (m[3], opposite[m[2]], m[1])]
    q = question
    if m := re.fullmatch(r"Where is the (\w+)\?", q):
        return {where(m[1])}
    if m := re.fullmatch(r"Where is (\w+)\?", q):
        return {room[m[1]]}
    if m := re.fullmatch(r"Where was the (\w+) before the (\w+)\?", q):
        seen = trail[m[1]]
        return {seen[i - 1] for i in range(1, len(seen)) if seen[i] == m[2]}
    if m := re.fullmatch(r"What is the (\w+) (\w+) of\?", q):
        return {y for x, d, y in relations if x == m[1] and d == m[2]}
    if m := re.fullmatch(r"What is (\w+) of the (\w+)\?", q):
        return {x for x, d, y in relations if d == m[1] and y == m[2]}
    if m := re.fullmatch(r"What did (\w+) give to (\w+)\?", q):
        return {o for a, o, b in gives if a == m[1] and b == m[2]}
    if m := re.fullmatch(r"Who gave the (\w+) to (\w+)\?", q):
        return {a for a, o, b in gives if o == m[1] and b == m[2]}
    if m := re.fullmatch(r"Who gave the (\w+)\?", q):
        return {a for a, o, b in gives if o == m[1]}
    if m := re.fullmatch(r"Who received the (\w+)\?", q):
        return {b for a, o, b in gives if o == m[1]}
    if m := re.fullmatch(r"Who did (\w+) give the (\w+) to\?", q):
        return {b for a, o, b in gives if a == m[1] and o == m[2]}
    raise AssertionError(f"unknown question form {q!r}")


def recall_answers(prompt: str) -> list[str]:
    """The values of the asked keys, read from an associative-recall prompt's words: a key
    is followed by its value's words (one or more values-pool words)."""
    context, asked = prompt.split(" | ")
    key_pool, value_pool, _ = pools()
    found = [w for w in context.split() if w in key_pool or w in value_pool]
    pairs, key = {}, None
    for word in found:
        if word in key_pool:
            key = word
            pairs[key] = []
        else:
            assert key is not None  # a value word before any key
            pairs[key].append(word)
    assert all(pairs.values()) and len({len(v) for v in pairs.values()}) == 1  # equal-length values
    return [" ".join(pairs[k]) for k in asked.split()]


def check_answers(s: Sample, count) -> None:
    """The answers follow from the prompt (recomputed from its text)."""
    if s.task == "prose_cont":  # the passage's own last words
        assert s.response == " " + " ".join(s.answers) and count(s.response) >= 49
        return
    if isinstance(get_task(s.task), AssociativeRecallTask):
        assert s.response == " " + " ".join(s.answers)
        assert recall_answers(s.prompt) == list(s.answers)
        return
    assert s.prompt.endswith("Answer:")
    assert s.response == " " + ", ".join(s.answers)
    if s.task in ("niah", "mv"):
        assert magic_numbers(s.prompt) == {s.meta["key"]: list(s.answers)}
        assert s.meta["question"] in s.prompt
    elif s.task == "vt":
        assert f"assigned the value {s.meta['value']}?" in s.prompt
        assert vt_answer(s.prompt, s.meta["value"]) == list(s.answers)
        assert len(s.answers) == 5
    elif s.task == "cwe":
        entries = cwe_entries(s.prompt)
        counts = Counter(entries)
        top = max(counts.values())
        assert list(s.answers) == sorted(s.answers, key=entries.index)  # first appearance
        assert {w for w, c in counts.items() if c == top} == set(s.answers)
        assert all(c * 2 <= top for w, c in counts.items() if w not in s.answers)
        assert f"the {len(s.answers)} most common words" in s.prompt
    elif s.task == "longresp":
        assert re.findall(r"The value of \S+ is (\d+)\.", s.prompt) == list(s.answers)
        assert count(s.response) >= 64
    elif s.task == "kv":
        assert f"The value of {s.meta['key']} is {s.answers[0]}." in s.prompt
    elif s.task in BABI:
        assert f"\nQuestion: {s.meta['question']}\nAnswer:" in s.prompt
        assert babi_answer(s.prompt, s.meta["question"]) == {s.answers[0]}
        assert s.answers[0].lower() in {label.lower() for label in get_task(s.task).labels}
    else:  # a task added later: its answers must at least be in the prompt
        assert all(a in s.prompt for a in s.answers)


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("length", [256, 1024])
def test_answers_follow_and_length_fits(name, length, count):
    for seed in range(2):
        for split in ("train", "eval"):
            s = get_task(name).sample(seed, split, length, count)
            size = count(s.prompt) + count(s.response)
            assert 0.95 * length <= size <= length, (name, length, size)
            check_answers(s, count)


@pytest.mark.parametrize("name", [n for n in TASKS if n != "mv"])  # mv needs ~190 tokens
def test_short_context_128(name, count):
    if name in ("vt", "longresp", "mqar64"):  # vt needs ~140 tokens, longresp ~230, mqar64's 64 pairs ~132
        with pytest.raises(ValueError, match="shorter than the sample without filler"):
            get_task(name).sample(0, "eval", 128, count)
        return
    s = get_task(name).sample(0, "eval", 128, count)
    size = count(s.prompt) + count(s.response)
    assert (0.95 * 128 if name != "kv" else 0) <= size <= 128
    check_answers(s, count)


@pytest.mark.parametrize("name", TASKS)
def test_same_seed_same_sample_other_seed_other_sample(name, count):
    task = get_task(name)
    a, b = task.sample(7, "eval", 256, count), task.sample(7, "eval", 256, count)
    assert a == b
    assert task.sample(8, "eval", 256, count).prompt != a.prompt
    assert task.sample(7, "train", 256, count).prompt != a.prompt


# ---------------------------------------------------------------- train / eval disjoint


def items(s: Sample) -> set[str]:
    """The keys, values, variable names, list words and people's names of a sample."""
    found = set(s.answers) - set(words.PLACES) - set(words.OBJECTS)
    task = get_task(s.task)
    # two-word keys are held out as whole pairs (split_of(key)); kv1 and kv_strict per word
    by_pair = getattr(task, "key_words", 0) == 2 and not getattr(task, "split_words", True)
    for key in [s.meta.get("key"), *s.meta.get("keys", [])]:
        if key:
            found |= {key} if by_pair else {key, *re.split(r"[- ]", key)}
    if s.task == "vt":
        found |= set(re.findall(r"VAR ([A-Z]{5})", s.prompt)) | {s.meta["value"]}
    if s.task == "cwe":
        found |= set(cwe_entries(s.prompt))
    if s.task in BABI:
        found |= {w.strip(".?") for w in s.prompt.split() if w.strip(".?") in words.FIRST_NAMES}
    if s.task == "longresp":
        found |= set(re.findall(r"The value of \S+ is (\d+)\.", s.prompt))
    return found


# Associative recall holds out fresh random assignments, not words (recall.py says why);
# prose_cont continues the shared haystack prose, which has no held-out items (like prose).
@pytest.mark.parametrize("name", [t for t in TASKS if not isinstance(get_task(t), AssociativeRecallTask)
                                  and t != "prose_cont"])
def test_train_and_eval_share_no_items(name):
    # character counts stand in for tokens: 50 samples a split stay fast; the split rule
    # does not depend on the tokenizer
    task, length = get_task(name), 1600
    seen = {split: set().union(*(items(task.sample(seed, split, length, len))
                                 for seed in range(50))) for split in ("train", "eval")}
    if name == "qa4":  # only rooms, a fixed label set shared by both splits
        assert not seen["train"] and not seen["eval"]
        return
    assert seen["train"] and seen["eval"]
    assert not seen["train"] & seen["eval"]
    for split, found in seen.items():
        assert all(split_of(x) == split for x in found if "-" not in x and " " not in x)


# ---------------------------------------------------------------- pieces


def test_fit_filler_finds_the_largest_fitting_n():
    sizes = [3 * n + (n // 7) for n in range(500)]  # a monotone, uneven length curve

    def build(n):
        return Sample("t", "x" * sizes[n], "", ())

    for target in (3, 50, 333, 1000, 1500):
        best = max(n for n in range(500) if sizes[n] <= target)
        assert len(fit_filler(build, target, len, max_filler=499).prompt) == sizes[best]
    with pytest.raises(ValueError):
        fit_filler(lambda n: Sample("t", "x" * (10 + n), "", ()), 5, len)


def test_filler_stream_cuts_words_and_keeps_prefixes():
    stream = FillerStream(ProseHaystack(), 0.25)
    long = stream.take(200)
    assert sum(len(x.split()) for x in long) == 200
    for n in (1, 9, 37, 150):
        short = stream.take(n)
        assert sum(len(x.split()) for x in short) == n
        assert all(x.endswith(".") for x in short)
        assert short[:-1] == long[: len(short) - 1]
    assert FillerStream(NoiseHaystack(), 0.5).take(4) == ["The grass is green."]


def test_vt_defaults_to_the_noise_haystack(count):
    s = get_task("vt").sample(0, "eval", 256, count)
    assert "The grass is green." in s.prompt
    assert "The grass is green." not in get_task("vt").sample(0, "eval", 256, count,
                                                               ProseHaystack()).prompt


def test_cwe_rule():
    assert [CommonWordsTask.num_common(n) for n in (128, 255, 256, 4096)] == [4, 4, 10, 10]
    assert [CommonWordsTask.base_repeats(n) for n in (128, 256, 1024, 8192)] == [2, 2, 8, 30]


def test_cwe_cycles_the_pool_but_keeps_common_words_twice_as_frequent():
    # a character count makes a long list cheap: more entries than the eval pool holds
    s = get_task("cwe").sample(0, "eval", 40000, len)
    counts = Counter(cwe_entries(s.prompt))
    assert max(c for w, c in counts.items() if w not in s.answers) >= 2  # the pool cycled
    check_answers(s, len)


def test_longresp_min_response_tokens(count):
    s = LongResponseTask(min_response_tokens=100).sample(0, "eval", 512, count)
    assert count(s.response) >= 100
    assert count(s.response[: s.response.rindex(",")]) < 100  # the fewest values that reach it
    check_answers(s, count)


def test_babi_question_forms_cover_upstream():
    slots = [*words.FIRST_NAMES, *words.PLACES, *words.OBJECTS, "north", "south", "east", "west"]
    slot = re.compile(r"\b(?:" + "|".join(slots) + r")\b")
    forms = {name: set() for name in BABI}
    for name in BABI:
        for seed in range(40):
            q = get_task(name).sample(seed, "train", 1000, len).meta["question"]
            forms[name].add(slot.sub("X", q))
    assert forms["qa1"] == {"Where is X?"}
    assert forms["qa2"] == {"Where is the X?"}
    assert forms["qa3"] == {"Where was the X before the X?"}
    assert forms["qa4"] == {"What is the X X of?", "What is X of the X?"}
    assert {"What did X give to X?", "Who gave the X?", "Who received the X?"} <= forms["qa5"]


def test_prose_is_plain_text_every_token_a_target(tok, count):
    from memdlm.tasks.dataset import SyntheticTaskDataset

    s = get_task("prose").sample(0, "train", 128, count)
    assert s.prompt == "" and s.answers == () and 120 <= count(s.response) <= 128
    ds = SyntheticTaskDataset(tok, ["prose", "kv"], [128], "train", 4)
    prose, kv = ds[0], ds[1]
    assert prose["labels"] == prose["input_ids"]
    assert sum(label != -100 for label in kv["labels"]) < len(kv["labels"]) // 4  # only the answer


def test_kv_held_out_keys_are_new_pairs_of_known_words_kv_strict_unseen_words(count):
    from memdlm.data import words

    def keys(task, split):
        return {k for seed in range(300) for k in get_task(task).sample(seed, split, 128, count).meta["keys"]}

    train, held = keys("kv", "train"), keys("kv", "eval")
    assert not train & held  # no held-out key was ever a training key
    assert all(split_of(k) == "eval" for k in held)
    train_words = {w for k in train for w in k.split()}
    assert sum(all(w in train_words for w in k.split()) for k in held) > len(held) // 2
    strict = keys("kv_strict", "eval")
    assert all(split_of(w) == "eval" for k in strict for w in k.split())
    assert set(words.ADJECTIVES) & {k.split()[0] for k in held}


def test_kv_dense_asks_every_key_in_training_only(count):
    task = get_task("kv_dense")
    train = [task.sample(seed, "train", 128, count) for seed in range(60)]
    multi = [s for s in train if "what are the values of" in s.prompt]
    assert 10 < len(multi) < 50
    for s in multi:
        asked = s.prompt.rsplit("values of ", 1)[1].removesuffix("? Answer:").split(", ")
        values = dict(zip(s.meta["keys"], s.meta["values"]))
        assert s.response == " " + ", ".join(values[k] for k in asked)
        assert sorted(asked) == sorted(s.meta["keys"])
    held = [task.sample(seed, "eval", 128, count) for seed in range(30)]
    assert all("what is the value of" in s.prompt and len(s.meta["keys"]) == 4 for s in held)


def test_curriculum1_never_trains_without_a_distractor():
    task = get_task("kv_curriculum1")
    counts = {len(task.sample(seed, "train", 400, len).meta["keys"]) for seed in range(40)}
    assert min(counts) == 2 and max(counts) == 4  # 1-3 distractors besides the queried key


# ---------------------------------------------------------------- associative recall


RECALL = [t for t in TASKS if isinstance(get_task(t), AssociativeRecallTask)]


def test_recall_pools_are_disjoint_single_tokens(tok):
    keys, values, filler = pools()
    assert not set(keys) & set(values) and not (set(keys) | set(values)) & set(filler)
    assert len(keys) >= 32 and len(values) >= 32
    for word in keys + values:
        assert len(tok(" " + word, add_special_tokens=False)["input_ids"]) == 1, word


@pytest.mark.parametrize("name", RECALL)
def test_recall_answer_j_sits_q_tokens_after_query_j(name, tok, count):
    task = get_task(name)
    w = task.value_words
    s = task.sample(3, "eval", task.pairs * (1 + w) + task.queries * (1 + w) + 1, count)  # bare: no filler
    prompt = tok(s.prompt, add_special_tokens=False)["input_ids"]
    ids = prompt + tok(s.response, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(prompt) + task.queries * w  # one token per answer word
    for j in range(task.queries):
        query, answer = len(prompt) - task.queries + j, len(prompt) + j * w
        assert answer - query == task.queries + j * (w - 1)
        assert tok.decode([ids[query]]).strip() == s.meta["keys"][s.meta["asked"][j]]
        assert tok.decode(ids[answer:answer + w]).strip() == s.answers[j]


def test_multi_word_values_are_distinct_words_each_next_to_the_previous(tok, count):
    task = get_task("mqar_v3")
    s = task.sample(5, "train", 128, count)
    words_ = [word for value in s.meta["values"] for word in value.split()]
    assert len(words_) == 8 * 3 and len(set(words_)) == len(words_)
    asked = s.meta["values"][s.meta["asked"][0]]
    assert f" {asked} " in s.prompt + " "  # the words of a value sit together, in order
    assert s.response == " " + asked
    # uniform guessing names all three words: (1/|values|)^3
    assert task.reference_levels()["uniform"] == pytest.approx(100 / len(pools()[1]) ** 3)


def test_multi_word_answers_are_scored_whole(count):
    s = get_task("mqar_v3").sample(0, "eval", 64, count)
    right = s.answers[0]
    other = next(v for v in s.meta["values"] if v != right)
    half = " ".join(right.split()[:2] + other.split()[2:])
    report = recall_report([f" {right}", f" {other}", f" {half}", f" {right.upper()}"], [s] * 4)
    assert report["per_query"] == pytest.approx(50.0)  # right twice (case ignored), half-right is wrong
    assert report["chose"] == pytest.approx({"queried": 50.0, "other_context": 25.0, "outside": 25.0})


@pytest.mark.parametrize("name", RECALL)
def test_recall_asks_fewer_keys_than_pairs_without_repeats(name, count):
    task = get_task(name)
    assert 1 <= task.queries < task.pairs
    s = task.sample(0, "train", 512, count)
    assert len(set(s.meta["asked"])) == task.queries
    assert len(set(s.meta["values"])) == task.pairs  # values drawn without replacement


def test_recall_refuses_every_key_asked():
    with pytest.raises(ValueError, match="elimination"):
        AssociativeRecallTask("x", pairs=4, queries=4)


def test_recall_filler_puts_pairs_at_random_depths(count):
    depths = set()
    for seed in range(20):
        s = get_task("mqar").sample(seed, "train", 128, count)
        words_ = s.prompt.split(" | ")[0].split()
        depths.add(words_.index(s.meta["keys"][0]))
    assert len(depths) > 5


def test_recall_report_hand_computed(count):
    s = get_task("mqar_q4").sample(0, "eval", 64, count)  # 4 queries; two scored below
    s = dataclasses.replace(s, answers=s.answers[:2])
    a0, a1 = s.answers
    other = next(v for v in s.meta["values"] if v not in s.answers)
    report = recall_report([f" {a0} {a1}", f" {a0} {other}", f" {a1}", " nothing here"], [s] * 4)
    # 8 queries: right 3 (a0, a1, a0); other context 2 (other, a1 in slot 0); outside 3
    assert report["per_query"] == pytest.approx(100 * 3 / 8)
    assert report["all_correct"] == pytest.approx(25.0)
    assert report["chose"] == pytest.approx({"queried": 37.5, "other_context": 25.0, "outside": 37.5})
    assert report["reference"]["copy"] == pytest.approx(12.5)
    assert report["reference"]["uniform"] == pytest.approx(100 / len(pools()[1]))


@pytest.mark.parametrize("name, steps", [("mqar", 1), ("mqar_q4", 1), ("mqar_v3", 3)])
def test_held_out_decoding_commits_one_word_of_each_answer_per_step(tok, count, name, steps):
    from memdlm.eval.heldout import answer_sampler_config

    task = get_task(name)
    samples = [task.sample(i, "eval", 64, count) for i in range(3)]
    config = answer_sampler_config(tok, samples)
    assert config.steps == steps
    assert config.max_new_tokens == task.queries * task.value_words + 1  # the answer slots and EOS


def test_prose_continuation_response_is_the_shortest_long_enough_tail(tok):
    """prose_cont: prompt + response is one passage; the response reaches 49 tokens and
    would not without its first word (the fewest last words that do)."""
    from memdlm.tasks import get_task

    def n(text):
        return len(tok(text, add_special_tokens=False)["input_ids"])

    task = get_task("prose_cont")
    for i in range(5):
        s = task.sample(i, "eval", 256, n)
        words = s.response.split()
        assert n(s.response) >= 49 and n(" " + " ".join(words[1:])) < 49
        assert s.prompt and not s.prompt.endswith(" ") and s.response.startswith(" ")
        assert n(s.prompt) + n(s.response) <= 256
    assert task.sample(0, "eval", 256, n) == task.sample(0, "eval", 256, n)  # deterministic in the seed
