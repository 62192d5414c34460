"""BABILong-style tasks (Kuratov et al., 2024): bAbI qa1-qa5 facts hidden in long filler.

A small bAbI world simulator (Weston et al., 2015) writes the facts: people move between
six rooms, pick up, drop and give objects; for qa4, rooms are related by directions. The
facts are inserted in order at random sentence boundaries of the haystack.

Prompt::

    {instruction} Answer with one word.
    <context>
    {filler with facts}
    </context>
    Question: {question}
    Answer:

Response: " {answer}". Question forms (as upstream):

- qa1 single supporting fact: "Where is Mary?" (her latest room);
- qa2 two supporting facts: "Where is the apple?" (the carrier's room, or where it was dropped);
- qa3 three supporting facts: "Where was the apple before the kitchen?";
- qa4 two-argument relations: "What is the hallway south of?" / "What is north of the kitchen?";
- qa5 three-argument relations: "What did Mary give to Fred?" / "Who gave the apple?" /
  "Who received the apple?" / "Who gave the apple to Fred?" / "Who did Mary give the apple to?".

Every question has exactly one answer given the facts (ambiguous draws are redrawn).
People's names come from the split's pool (``split_pool(words.FIRST_NAMES, split)``); the
rooms and objects are the fixed bAbI label sets, shared by both splits. Scored with the
``babilong`` metric against the task's ``labels`` (the six rooms; for qa5 every first name
and the three objects). Stories: qa1 4 facts / 3 people, qa2 and qa3 6 facts / 2 people,
qa4 2 facts, qa5 6 facts / 3 people; shortest lengths with the shipped tokenizer: about
75 (qa4) to 115 (qa2, qa3) tokens.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from memdlm.data import words
from memdlm.tasks.base import Sample, Task, fit_haystack, register_task, split_pool

LOCATIONS = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
OBJECTS = ("apple", "football", "milk")
DIRECTIONS = {"north": "south", "south": "north", "east": "west", "west": "east"}

MOVE = ("{p} moved to the {l}.", "{p} went to the {l}.", "{p} journeyed to the {l}.",
        "{p} travelled to the {l}.", "{p} went back to the {l}.")
PICK = ("{p} picked up the {o}.", "{p} got the {o} there.", "{p} grabbed the {o} there.",
        "{p} took the {o} there.")
DROP = ("{p} dropped the {o}.", "{p} discarded the {o}.", "{p} put down the {o}.",
        "{p} left the {o} there.")
GIVE = ("{p} gave the {o} to {q}.", "{p} handed the {o} to {q}.", "{p} passed the {o} to {q}.")

INSTRUCTIONS = {
    "qa1": "The text hides facts about where people go. If a person moved several times, "
           "use the latest move.",
    "qa2": "The text hides facts about people moving and carrying objects. An object is "
           "where the person carrying it is.",
    "qa3": "The text hides facts about people moving and carrying objects. Track the rooms "
           "each object has been in.",
    "qa4": "The text hides facts about how the rooms are placed relative to each other.",
    "qa5": "The text hides facts about people moving and giving objects to each other.",
}


@dataclass
class World:
    """The state of a bAbI world: who is where, who holds what, where objects have been."""

    location: dict[str, str | None]
    holder: dict[str, str | None] = field(default_factory=dict)
    place: dict[str, str | None] = field(default_factory=dict)
    history: dict[str, list[str]] = field(default_factory=dict)
    gives: list[tuple[str, str, str]] = field(default_factory=list)  # (giver, object, receiver)

    def where(self, obj: str) -> str | None:
        held_by = self.holder.get(obj)
        return self.location[held_by] if held_by else self.place.get(obj)

    def _visit(self, obj: str) -> None:
        room, seen = self.where(obj), self.history.setdefault(obj, [])
        if room is not None and (not seen or seen[-1] != room):
            seen.append(room)

    def move(self, person: str, room: str) -> None:
        self.location[person] = room
        for obj, held_by in self.holder.items():
            if held_by == person:
                self._visit(obj)

    def pick(self, person: str, obj: str) -> None:
        self.holder[obj], self.place[obj] = person, None
        self._visit(obj)

    def drop(self, person: str, obj: str) -> None:
        self.holder[obj], self.place[obj] = None, self.location[person]

    def give(self, person: str, obj: str, other: str) -> None:
        self.holder[obj] = other
        self.gives.append((person, obj, other))


def _actions(world: World, objects: tuple[str, ...], kinds: tuple[str, ...]):
    """The valid (kind, args) actions in this state."""
    out = []
    people = list(world.location)
    for p in people:
        room = world.location[p]
        if "move" in kinds:
            out += [("move", (p, r)) for r in LOCATIONS if r != room]
        if room is None:
            continue
        for o in objects:
            held_by = world.holder.get(o)
            if "pick" in kinds and held_by is None and world.place.get(o) in (None, room):
                out.append(("pick", (p, o)))
            if held_by == p and "drop" in kinds:
                out.append(("drop", (p, o)))
            if held_by == p and "give" in kinds:
                out += [("give", (p, o, q)) for q in people
                        if q != p and world.location[q] == room]
    return out


WEIGHTS = {"move": 1.0, "pick": 1.0, "drop": 0.4, "give": 3.0}  # per action kind, then uniform


def simulate(rng: random.Random, people: list[str], n_facts: int, kinds: tuple[str, ...],
             objects: tuple[str, ...] = OBJECTS) -> tuple[list[str], World]:
    """``n_facts`` random valid events; returns their sentences and the final world."""
    world = World(location={p: None for p in people})
    facts = []
    for _ in range(n_facts):
        actions = _actions(world, objects, kinds)
        by_kind: dict[str, list] = {}
        for kind, args in actions:
            by_kind.setdefault(kind, []).append(args)
        kinds_now = sorted(by_kind)
        kind = rng.choices(kinds_now, weights=[WEIGHTS[k] for k in kinds_now])[0]
        args = rng.choice(by_kind[kind])
        if kind == "move":
            facts.append(rng.choice(MOVE).format(p=args[0], l=args[1]))
            world.move(*args)
        elif kind == "pick":
            facts.append(rng.choice(PICK).format(p=args[0], o=args[1]))
            world.pick(*args)
        elif kind == "drop":
            facts.append(rng.choice(DROP).format(p=args[0], o=args[1]))
            world.drop(*args)
        else:
            facts.append(rng.choice(GIVE).format(p=args[0], o=args[1], q=args[2]))
            world.give(*args)
    return facts, world


def _question_qa1(rng, world):
    placed = [p for p, room in world.location.items() if room is not None]
    if not placed:
        return None
    p = rng.choice(placed)
    return f"Where is {p}?", world.location[p]


def _question_qa2(rng, world):
    known = [o for o in OBJECTS if world.where(o) is not None]
    if not known:
        return None
    o = rng.choice(known)
    return f"Where is the {o}?", world.where(o)


def _question_qa3(rng, world):
    options = [(o, i) for o, seen in world.history.items() for i in range(1, len(seen))
               if seen.count(seen[i]) == 1]
    if not options:
        return None
    o, i = rng.choice(options)
    seen = world.history[o]
    return f"Where was the {o} before the {seen[i]}?", seen[i - 1]


def _question_qa5(rng, world):
    """A question about the last transfer that the facts answer uniquely."""
    if not world.gives:
        return None
    giver, obj, receiver = world.gives[-1]
    g = world.gives

    def unique(values):
        return len(set(values)) == 1

    forms = []
    if unique(o for a, o, b in g if a == giver and b == receiver):
        forms.append((f"What did {giver} give to {receiver}?", obj))
    if unique(a for a, o, b in g if o == obj):
        forms.append((f"Who gave the {obj}?", giver))
    if unique(b for a, o, b in g if o == obj):
        forms.append((f"Who received the {obj}?", receiver))
    if unique(a for a, o, b in g if o == obj and b == receiver):
        forms.append((f"Who gave the {obj} to {receiver}?", giver))
    if unique(b for a, o, b in g if a == giver and o == obj):
        forms.append((f"Who did {giver} give the {obj} to?", receiver))
    return rng.choice(forms) if forms else None


def relations_story(rng: random.Random) -> tuple[list[str], str, str]:
    """qa4: two facts "The A is d1 of the B." / "The B is d2 of the C." (never d2 opposite
    to d1, so A and C differ) and a question one fact answers; its inverse reading never
    gives a second answer."""
    a, b, c = rng.sample(LOCATIONS, 3)
    d1 = rng.choice(sorted(DIRECTIONS))
    d2 = rng.choice([d for d in sorted(DIRECTIONS) if d != DIRECTIONS[d1]])
    facts = [(a, d1, b), (b, d2, c)]
    x, d, y = rng.choice(facts)
    if rng.random() < 0.5:
        question, answer = f"What is the {x} {d} of?", y
    else:
        question, answer = f"What is {d} of the {y}?", x
    sentences = [f"The {near} is {way} of the {far}." for near, way, far in facts]
    rng.shuffle(sentences)
    return sentences, question, answer


class BabiTask(Task):
    """One of qa1-qa5. ``facts`` events per story, ``people`` actors (qa4 ignores both)."""

    metric = "babilong"

    QUESTIONS = {"qa1": _question_qa1, "qa2": _question_qa2, "qa3": _question_qa3,
                 "qa5": _question_qa5}
    KINDS = {"qa1": ("move",), "qa2": ("move", "pick", "drop"), "qa3": ("move", "pick", "drop"),
             "qa5": ("move", "pick", "drop", "give")}

    def __init__(self, name: str, facts: int, people: int):
        if name not in INSTRUCTIONS:
            raise ValueError(f"unknown bAbI task {name!r}; choose one of {sorted(INSTRUCTIONS)}")
        self.name, self.facts, self.people = name, facts, people
        # the answer labels the babilong scorer looks for (upstream: the label set per task)
        self.labels = (tuple(words.FIRST_NAMES) + OBJECTS) if name == "qa5" else LOCATIONS

    def story(self, rng: random.Random, split: str) -> tuple[list[str], str, str]:
        """(facts, question, answer); redraws until the question has exactly one answer."""
        if self.name == "qa4":
            return relations_story(rng)
        names = split_pool(words.FIRST_NAMES, split)
        for _ in range(1000):
            people = rng.sample(names, self.people)
            facts, world = simulate(rng, people, self.facts, self.KINDS[self.name])
            qa = self.QUESTIONS[self.name](rng, world)
            if qa is not None:
                return facts, *qa
        raise RuntimeError(f"{self.name}: no answerable story in 1000 draws")  # pragma: no cover

    def build(self, rng, split, length, count, haystack):
        facts, question, answer = self.story(rng, split)
        instruction = INSTRUCTIONS[self.name] + " Answer with one word."

        def render(context: str) -> Sample:
            prompt = (f"{instruction}\n<context>\n{context}\n</context>\n"
                      f"Question: {question}\nAnswer:")
            return Sample(self.name, prompt, f" {answer}", (answer,),
                          {"question": question, "facts": facts})

        return fit_haystack(rng, haystack, facts, render, length, count, keep_order=True)


for _name, _facts, _people in (("qa1", 4, 3), ("qa2", 6, 2), ("qa3", 6, 2), ("qa4", 2, 0),
                               ("qa5", 6, 3)):
    register_task(BabiTask(_name, facts=_facts, people=_people))
