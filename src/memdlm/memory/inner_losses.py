"""Inner-loop losses: per-token values ``[b, l]`` at a stage's loss positions.

The inner loop weights and normalises them exactly as the outer MDLM loss does
(``memdlm.diffusion.loss``), so the variants differ only in the per-token term:

- ``ce``: -log p(x0_i | student state) -- the paper's choice;
- ``kl`` / ``reverse_kl``: KL(teacher || student) / KL(student || teacher) of the
  logits, the teacher being the same model (current fast weights, no grad) on
  the next, less-masked state (the clean sequence after the last stage);
- ``hidden_mse`` / ``hidden_cosine``: the last hidden state against the teacher's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from memdlm.errors import ConfigError
from memdlm.diffusion.masking import apply_mask
from memdlm.backbones.modeling import capture_final_hidden, forward_logits, logits_only_at


def _dense(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(positions.shape, dtype=torch.float32, device=values.device)
    return out.index_put(tuple(positions.nonzero().t()), values.float())


def _forward(model, ids, attention_mask, positions):
    """(logits [n, V], last hidden [n, H]) at positions."""
    store: list = []
    with logits_only_at(model, positions), capture_final_hidden(model, store):
        logits = model(input_ids=ids, attention_mask=attention_mask, use_cache=False).logits
    return logits, store[0]


class InnerLoss:
    """``teacher`` runs first (no grad, caller's memory active); ``student`` gives [b, l].

    Every subclass keeps these two signatures; one overrides ``per_token`` (a loss against
    the teacher's logits or hidden states) or ``teacher`` and ``student`` together.
    """

    name = "base"
    # Whether ``student`` can take the anchor stage's logits from a given ``forward(positions)``
    # (the split forward: the upper layers on hidden states the outer loss computes anyway)
    # instead of running the model: true when the loss needs only the student's logits.
    accepts_split_forward = False

    def teacher(self, model, clean_ids, attention_mask, stage, mask_token_id):
        teacher_ids = apply_mask(clean_ids, stage.teacher_masked, mask_token_id)
        return _forward(model, teacher_ids, attention_mask, stage.loss_positions)

    def student(self, model, clean_ids, attention_mask, stage, mask_token_id, teacher_out, forward=None):
        """The per-token loss [b, l] (zero off ``stage.loss_positions``). ``forward(positions)
        -> logits`` replaces the model's full forward on the student state (the split
        forward); only a loss with ``accepts_split_forward`` takes one."""
        if forward is not None:
            raise ValueError(f"inner loss {self.name!r} runs the model's own forward on the student "
                             "state and takes no split forward (accepts_split_forward is False)")
        student_ids = apply_mask(clean_ids, stage.masked, mask_token_id)
        logits, hidden = _forward(model, student_ids, attention_mask, stage.loss_positions)
        return _dense(self.per_token(logits, hidden, *teacher_out), stage.loss_positions)

    def per_token(self, logits, hidden, t_logits, t_hidden):  # pragma: no cover
        raise NotImplementedError


class CrossEntropy(InnerLoss):
    name = "ce"
    accepts_split_forward = True

    def teacher(self, model, clean_ids, attention_mask, stage, mask_token_id):
        return None  # the clean tokens are the target

    def student(self, model, clean_ids, attention_mask, stage, mask_token_id, teacher_out, forward=None):
        if forward is not None:
            logits = forward(stage.loss_positions)
        else:
            student_ids = apply_mask(clean_ids, stage.masked, mask_token_id)
            logits = forward_logits(model, student_ids, attention_mask, positions=stage.loss_positions)
        nll = F.cross_entropy(logits.float(), clean_ids[stage.loss_positions], reduction="none")
        return _dense(nll, stage.loss_positions)


class ForwardKL(InnerLoss):
    name = "kl"

    def per_token(self, logits, hidden, t_logits, t_hidden):
        t_logp, s_logp = F.log_softmax(t_logits.float(), -1), F.log_softmax(logits.float(), -1)
        return (t_logp.exp() * (t_logp - s_logp)).sum(-1)


class ReverseKL(InnerLoss):
    name = "reverse_kl"

    def per_token(self, logits, hidden, t_logits, t_hidden):
        t_logp, s_logp = F.log_softmax(t_logits.float(), -1), F.log_softmax(logits.float(), -1)
        return (s_logp.exp() * (s_logp - t_logp)).sum(-1)


class HiddenMSE(InnerLoss):
    name = "hidden_mse"

    def per_token(self, logits, hidden, t_logits, t_hidden):
        return (hidden.float() - t_hidden.float()).pow(2).mean(-1)


class HiddenCosine(InnerLoss):
    name = "hidden_cosine"

    def per_token(self, logits, hidden, t_logits, t_hidden):
        return 1.0 - F.cosine_similarity(hidden.float(), t_hidden.float(), dim=-1)


INNER_LOSS_CLASSES = {c.name: c for c in (CrossEntropy, ForwardKL, ReverseKL, HiddenMSE, HiddenCosine)}


def get_inner_loss(name: str) -> InnerLoss:
    try:
        return INNER_LOSS_CLASSES[name]()
    except KeyError:
        raise ConfigError(f"unknown inner loss {name!r}; choose one of {sorted(INNER_LOSS_CLASSES)}") from None
