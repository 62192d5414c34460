"""Check that a loaded model attends bidirectionally, on an unpadded and a padded batch.

A masked diffusion model must let position 0 see the last token. Some remote code
is bidirectional only while no row is padded: LLaDA2 turns a padded 2-D attention
mask into a *causal* 4-D mask (transformers 4's ``_prepare_4d_causal_attention_mask``),
and memdlm's data mixes lengths, so padded batches are the rule. The check runs
once per :func:`memdlm.backbones.modeling.load_model` on a few random tokens:

- unpadded (one row): position 0's logits must change when the last token changes;
- padded (two rows, the first right-padded by 2): row 0's position 0 must change when
  its last *real* token changes.

When only the padded check fails, the model's ``forward`` is wrapped to receive a
4-D boolean key-padding mask ``[b, 1, l, l]`` (True: attend) instead of the 2-D one --
remote code passes a 4-D mask through unchanged -- and the check is repeated.
"""

from __future__ import annotations

import functools
import logging
import types

import torch

from memdlm.backbones.partitioned import refuse_partitioned
from memdlm.errors import ConfigError

logger = logging.getLogger("memdlm")


class CausalAttentionError(ConfigError):
    """The model attends causally, and memdlm cannot switch it off from outside."""


def key_padding_mask_4d(mask: torch.Tensor) -> torch.Tensor:
    """``[b, l]`` 1/0 -> ``[b, 1, l, l]`` bool: every query sees every real key of its row."""
    b, length = mask.shape
    return mask.bool()[:, None, None, :].expand(b, 1, length, length)


def pass_4d_key_padding_masks(model) -> None:
    """Wrap ``model.forward`` so a 2-D ``attention_mask`` keyword reaches it as a 4-D key-padding mask.

    The instance's ``forward`` is replaced (not a hook on ``__call__``): PEFT calls the
    base model's ``forward`` directly. It is bound to the model as a method, not a closure
    over it, so ``copy.deepcopy(model)`` gives a copy whose forward runs the copy.
    """
    original = model.forward
    bound = getattr(original, "__self__", None) is model
    inner = original.__func__ if bound else None

    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            kwargs["attention_mask"] = key_padding_mask_4d(mask)
        return inner(self, *args, **kwargs) if bound else original(*args, **kwargs)

    model.forward = types.MethodType(forward, model)
    model.config.memdlm_key_padding_4d = True  # informative: shows in the run's saved config


def position_zero_sees_last_token(model, padded: bool, seed: int = 0) -> bool:
    """Whether row 0's position-0 logits move when its last real token changes.

    The model is called directly, not through ``modeling.forward_logits``: ``modeling``
    imports this module (``load_model`` runs the check), so importing it back would be a
    cycle. Position 0's logits are its own also with right-shifted logits (Dream), so the
    shift ``forward_logits`` would apply changes nothing here.
    """
    vocab = model.get_input_embeddings().num_embeddings
    length, pad = 8, 2
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2 if padded else 1, length), generator=g)
    mask = torch.ones_like(ids)
    last = length - 1
    if padded:
        mask[0, length - pad:] = 0
        ids[0, length - pad:] = getattr(model.config, "pad_token_id", None) or 0
        last = length - pad - 1
    edited = ids.clone()
    edited[0, last] = (ids[0, last] + 1) % vocab
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            a = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits[0, 0]
            b = model(input_ids=edited.to(device), attention_mask=mask.to(device), use_cache=False).logits[0, 0]
    finally:
        model.train(was_training)
    # a tolerance, not equality: in MoE models the edit re-routes other tokens, and expert
    # matmuls over a different number of rows round position 0 differently in the last bits
    return not torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-4)


def ensure_bidirectional(model) -> None:
    """Check both batches; fix the padded case with 4-D masks; raise if still causal."""
    name = type(model).__name__
    refuse_partitioned(model.named_parameters(), "the load-time bidirectionality check (a forward)")
    if not position_zero_sees_last_token(model, padded=False):
        raise CausalAttentionError(
            f"{name}: position 0 ignores the last token -- the model attends causally and has no switch "
            "memdlm knows (docs/BACKBONES.md); a masked diffusion model needs bidirectional attention")
    if position_zero_sees_last_token(model, padded=True):
        return
    pass_4d_key_padding_masks(model)
    try:
        fixed = position_zero_sees_last_token(model, padded=True)
    except Exception as err:  # the model's code rejects a 4-D boolean mask
        raise CausalAttentionError(f"{name} turns a padded 2-D attention mask into a causal one and does not "
                                   f"accept a 4-D key-padding mask ({err}); see docs/BACKBONES.md") from err
    if not fixed:
        raise CausalAttentionError(f"{name} attends causally in padded batches, even with a 4-D key-padding "
                                   "mask; see docs/BACKBONES.md")
    logger.warning("%s builds a causal mask from a padded 2-D attention mask; memdlm passes it 4-D "
                   "key-padding masks instead (bidirectional in padded batches, checked)", name)
