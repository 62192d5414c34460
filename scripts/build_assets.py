"""Rebuild the files shipped in src/memdlm/assets (the tiny default's tokenizer).

    python scripts/build_assets.py

Deterministic: the corpus comes from the package's own word lists, grammar and
task templates plus the Python documentation shipped with CPython (pydoc_data).
"""

from __future__ import annotations

import random

from memdlm.data import words
from memdlm.tasks.haystack import ProseHaystack
from memdlm.backbones.tokenizer import ASSET_DIR, train_tokenizer


def corpus(n_prose: int = 20000):
    rng = random.Random(0)
    yield from ProseHaystack().sentences(rng, n_prose)
    pools = [words.ADJECTIVES, words.NOUNS, words.FIRST_NAMES, words.PLACES, words.OBJECTS]
    for _ in range(50):  # task vocabulary often enough to become whole tokens
        for pool in pools:
            for w in pool:
                yield (f"The value of {w} is {rng.randrange(10**6)}. Question: what is the value "
                       f"of {w}? Answer: {w.capitalize()} {w}.")
    for _ in range(5000):
        name, place, obj = (rng.choice(words.FIRST_NAMES), rng.choice(words.PLACES),
                            rng.choice(words.OBJECTS))
        yield (f"{name} moved to the {place}. {name} picked up the {obj}. Where is {name}? "
               f"Where was the {obj} before the {place}? The {place} is north of the hallway.")
        yield (f"One of the special magic numbers for {rng.choice(words.ADJECTIVES)}-"
               f"{rng.choice(words.NOUNS)} is: {rng.randrange(10**7)}. VAR ABCDE = 12345.")
    try:
        from pydoc_data.topics import topics

        yield from topics.values()
    except ImportError:  # a Python built without its docs: the grammar alone is enough
        pass


def main() -> None:
    tok = train_tokenizer(corpus(), vocab_size=4096)
    ASSET_DIR.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(ASSET_DIR))
    print(f"wrote {ASSET_DIR} (vocab {len(tok)})")


if __name__ == "__main__":
    main()
