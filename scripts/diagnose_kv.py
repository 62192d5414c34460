"""Why does a trained model miss held-out key-value answers? One-shot digit diagnostics.

    python scripts/diagnose_kv.py RUN_DIR [--task kv] [--length 128] [--items 200]

Every answer slot is masked and the model predicts all of them at once (argmax), then
again with the first digit revealed -- either the queried value's (teacher-forced) or a
distractor value's. The JSON printed says, per digit position, how often the prediction
is the queried value's digit, and how often the whole prediction is *some* value of the
context: a model that finds values but not the right key copies a distractor
coherently; one that copies by offset without committing to a value mixes digits.
"""

from __future__ import annotations

import argparse
import json

import torch

from memdlm.data.collate import encode_pair
from memdlm.eval.heldout import heldout_samples
from memdlm.modeling import forward_logits, load_model
from memdlm.tokenizer import load_tokenizer


def one_shot(model, tok, sample, reveal: str | None = None) -> str:
    ex = encode_pair(tok, sample.prompt, sample.response)
    ids = torch.tensor([ex["input_ids"]])
    slots = [i for i, lab in enumerate(ex["labels"]) if lab != -100]  # " ", d1..d4, EOS
    masked = ids.clone()
    masked[0, slots] = tok.mask_token_id
    if reveal is not None:  # the first digit is given
        masked[0, slots[1]] = tok.convert_tokens_to_ids(reveal)
    with torch.no_grad():
        logits = forward_logits(model, masked)[0]
    pred = logits[slots].argmax(-1)
    if reveal is not None:
        pred[1] = masked[0, slots[1]]
    return tok.decode(pred[1:-1]).replace(" ", "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--task", default="kv")
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--items", type=int, default=200)
    args = ap.parse_args()
    tok = load_tokenizer(args.run_dir)
    model = load_model(args.run_dir).eval()
    samples = heldout_samples(tok, [args.task], args.length, args.items)
    stats = {k: 0 for k in ("exact", "some_value", "distractor_value")}
    per_pos = [0, 0, 0, 0]
    forced = {"true_first": 0, "distractor_first_copies_it": 0, "distractor_first_gives_true_rest": 0, "n_distr": 0}
    for s in samples:
        true, values = s.meta["values"][s.meta["keys"].index(s.meta["key"])], s.meta["values"]
        pred = one_shot(model, tok, s)
        stats["exact"] += pred == true
        stats["some_value"] += pred in values
        stats["distractor_value"] += pred in values and pred != true
        for j in range(4):
            per_pos[j] += len(pred) > j and pred[j] == true[j]
        forced["true_first"] += one_shot(model, tok, s, reveal=true[0]) == true
        others = [v for v in values if v[0] != true[0]]
        if others:
            forced["n_distr"] += 1
            got = one_shot(model, tok, s, reveal=others[0][0])
            forced["distractor_first_copies_it"] += got == others[0]
            forced["distractor_first_gives_true_rest"] += got[1:] == true[1:]
    n = len(samples)
    out = {"items": n, "task": args.task, "length": args.length,
           "one_shot": {k: round(v / n, 3) for k, v in stats.items()},
           "digit_accuracy_by_position": [round(v / n, 3) for v in per_pos],
           "first_digit_revealed": {"true: exact": round(forced["true_first"] / n, 3),
                                    "distractor's: copies the distractor": round(
                                        forced["distractor_first_copies_it"] / max(forced["n_distr"], 1), 3),
                                    "distractor's: rest still the queried value's": round(
                                        forced["distractor_first_gives_true_rest"] / max(forced["n_distr"], 1), 3)}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
