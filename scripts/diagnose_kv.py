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

from memdlm.data.collate import IGNORE, encode_pair
from memdlm.eval.heldout import heldout_samples
from memdlm.backbones.modeling import forward_logits, load_model
from memdlm.backbones.tokenizer import load_tokenizer


def one_shot(model, tok, sample, reveal: str | None = None) -> str:
    ex = encode_pair(tok, sample.prompt, sample.response)
    ids = torch.tensor([ex["input_ids"]])
    slots = [i for i, lab in enumerate(ex["labels"]) if lab != IGNORE]  # " ", d1..d4, EOS
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
    shots, forced, distractor_first = [], [], []
    for s in samples:
        true, values = s.response.strip(), s.meta["values"]
        shots.append(one_shot(model, tok, s))
        forced.append(one_shot(model, tok, s, reveal=true[0]) == true)
        other = next((v for v in values if v[0] != true[0]), None)
        if other is not None:
            got = one_shot(model, tok, s, reveal=other[0])
            distractor_first.append((got == other, got[1:] == true[1:]))
    truths = [s.response.strip() for s in samples]
    in_context = [p in s.meta["values"] for p, s in zip(shots, samples)]
    exact = [p == t for p, t in zip(shots, truths)]

    def share(flags) -> float:
        flags = list(flags)
        return round(sum(flags) / max(len(flags), 1), 3)

    out = {"items": len(samples), "task": args.task, "length": args.length,
           "one_shot": {"exact": share(exact), "some_value": share(in_context),
                        "distractor_value": share(c and not e for c, e in zip(in_context, exact))},
           "digit_accuracy_by_position": [share(len(p) > j and p[j] == t[j] for p, t in zip(shots, truths))
                                          for j in range(4)],
           "first_digit_revealed": {"true: exact": share(forced),
                                    "distractor's: copies the distractor": share(c for c, _ in distractor_first),
                                    "distractor's: rest still the queried value's": share(
                                        r for _, r in distractor_first)}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
