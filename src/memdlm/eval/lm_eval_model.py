"""A memdlm model for lm-evaluation-harness (``lm-eval==0.4.13``; ``pip install 'memdlm[lmeval]'``).

    memdlm lm-eval --model-args pretrained=runs/tiny-mem,memory=True --tasks memdlm_kv_128
    # or in Python:
    from memdlm.eval.lm_eval_model import register; register()
    lm_eval.simple_evaluate(model="memdlm", model_args="pretrained=runs/tiny,mc_samples=64", tasks=[...])

Importing :mod:`memdlm` never imports lm-eval; this module does, and registering
the model under the name ``memdlm`` is the explicit call :func:`register`.

Model arguments (``--model-args k=v,...``): ``pretrained`` (a local model or run
directory), ``memory`` (inference-time adaptation on each context before
answering: a fresh per-request memory, see :mod:`memdlm.memory.adapt`),
every memory override of the inference commands by its field name (``adapt_mask_ratio``,
``inner_lr``, ``memory_rank``, ...: :class:`memdlm.memory.config.AdaptationArguments`; list-valued
``progressive_ratios`` excepted), ``steps`` / ``max_new_tokens`` / ``block_length`` /
``temperature`` / ``remasking`` / ``unmask_rule`` / ``threshold`` / ``max_per_step`` /
``cache`` / ``dream_eps`` (the sampler, :class:`memdlm.sampling.sampler.SamplerConfig`, whose defaults apply when
an argument is not given),
``batch_size`` (sequences per forward pass), ``mc_samples``, ``seed``,
``greedy_check``, ``max_length`` (the context limit; default: the model's, read by
:func:`memdlm.backbones.context.context_limit` -- never a made-up number), ``context_overflow``
(``refuse`` / ``truncate`` / ``extend``: what happens to a request past the limit,
:mod:`memdlm.backbones.context`; counted in the results' ``config.memdlm.backbones.context``), ``device``,
``dtype``, ``trust_remote_code``. lm-eval parses ``--model_args`` itself (``key=value``
pairs, values typed by its ``simple_parse_args_string``) and passes ``--device`` and
``--batch_size`` as keyword arguments; :func:`memdlm.commands.lm_eval.harness_argv` moves
those two out of ``--model-args`` when given there.

**Log-likelihood** of a continuation y (L tokens) given a context c is estimated
with the masked-diffusion ELBO in LLaDA's form (Nie et al. 2025, Eq. 6; the MDLM
bound of Sahoo et al. 2024 rewritten over the number of masked tokens)::

    log p(y | c) >= E_{l ~ U{1..L}} E_{M: l of the L positions, uniformly}
                        [ (L / l) * sum_{i in M} log p_theta(y_i | c, y with M masked) ]

1. Each of the ``mc_samples`` draws k = 0..n-1 takes a *stratified* level
   u_k = (k + v_k) / n, v_k ~ U(0, 1), and masks l_k = floor(u_k L) + 1 tokens
   (so l_k is uniform on {1..L} marginally; stratifying only lowers variance);
2. which l_k positions are masked is uniform (random scores, top l_k);
3. one forward pass per draw scores the masked positions (raw ``log_softmax``,
   as the training loss does); the weighted sums are averaged over the draws.

For L = 1 every draw masks the single token with weight 1, so the estimate is the
*exact* ``log softmax(logits)[y]`` of one forward pass. Draws come from a
generator seeded by (``seed``, context, continuation), so a request's estimate
does not depend on its batch mates or on the request order.

**is_greedy** (``greedy_check=decode``, default): the sampler's own greedy decode
(temperature 0, low-confidence remasking, one token per step, one block, EOS an
ordinary token) of L slots after the context reproduces y exactly -- the
diffusion analogue of "greedy decoding produces the continuation". It costs L
forward passes per request; ``greedy_check=none`` skips it (always False).

**loglikelihood_rolling** scores a whole text with the same estimator and an
empty context ([BOS] when the tokenizer has one). A text longer than
``max_length`` is cut into consecutive pieces of ``max_length // 2`` tokens, each
scored given up to the preceding ``max_length - piece`` tokens; the pieces' values
add up (a chain-rule decomposition, each factor bounded by its ELBO).

With ``memory=True`` every request first writes a memory from its context alone
(the ``memdlm generate --memory`` recipe), which stays active for all of that
request's forward passes; requests without a context (rolling windows at the
start of a text) run without memory. The memory is the run's
(:meth:`memdlm.runs.run.Run.memory`: its ``run_config.json`` settings when ``pretrained`` is a
memdlm run, else the defaults) with the memory overrides given; ``memory_record`` holds the
settings used. An override without ``memory=True`` is an error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import zlib
from pathlib import Path

import torch
from lm_eval.api.model import LM
from tqdm.auto import tqdm

from memdlm.config import GENERATION_BATCH_SIZE
from memdlm.errors import ConfigError
from memdlm.memory.config import ADAPTATION_FIELDS, adaptation_arg_types
from memdlm.validation import coerce_values
from memdlm.backbones.context import check_overflow_choice, context_limit, new_counts
from memdlm.runs.placement import resolve_device, resolve_dtype
from memdlm.runs.run import Run
from memdlm.backbones.tokenizer import ensure_special_tokens
from memdlm.runs.placement import record
from memdlm.backbones.context import fit_prompts
from memdlm.backbones.modeling import forward_logits
from memdlm.sampling.sampler import Sampler, SamplerConfig
from memdlm.sampling.sampler import SamplerConfig
from memdlm.sampling.generation import generate

logger = logging.getLogger(__name__)
MODEL_NAME = "memdlm"
GREEDY_CHECKS = ("decode", "none")
# lm-eval parses --model-args into strings or guessed scalars ('no' stays a string, a bare key
# becomes ''): every boolean and number among them is parsed strictly (validation.coerce_values),
# so memory=no is False, and a bare memory or steps=abc is an error naming the key.
MODEL_ARG_TYPES = {**adaptation_arg_types(), "memory": bool, "trust_remote_code": bool, "steps": (int, 1),
                   "max_new_tokens": (int, 1), "block_length": (int, 1), "temperature": (float, 0),
                   "threshold": float, "max_per_step": (int, 1), "batch_size": (int, 1),
                   "mc_samples": (int, 1), "seed": (int, 0), "max_length": (int, 1), "dream_eps": float}
# the sampler ones, typed
_SAMPLER_TYPES = {"temperature": float, "remasking": str, "unmask_rule": str, "threshold": float,
                  "max_per_step": int, "cache": str, "dream_eps": float}


def register() -> None:
    """Register :class:`MemdlmLM` with lm-eval under the name ``memdlm`` (idempotent)."""
    from lm_eval.api.registry import register_model

    register_model(MODEL_NAME)(MemdlmLM)


def request_seed(seed: int, *texts: str) -> int:
    """A stable 31-bit seed from the run seed and a request's texts."""
    crc = zlib.crc32("\x00".join(texts).encode("utf-8"))
    return (int(seed) * 1_000_003 + crc) % (2**31 - 1)


def mask_draws(length: int, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified masks over a continuation of ``length`` tokens, for ``n`` draws.

    Returns ``masked [n, length]`` (bool, l_k True entries in row k) and the
    ELBO weights ``L / l_k`` ``[n]``.
    """
    u = (torch.arange(n) + torch.rand(n, generator=generator)) / n  # [n] stratified levels
    counts = (u * length).floor().long().clamp(max=length - 1) + 1  # [n] l_k in 1..L
    scores = torch.rand(n, length, generator=generator)  # [n, L]
    rank = scores.argsort(dim=1).argsort(dim=1)  # [n, L] 0 = lowest score
    masked = rank < counts[:, None]
    assert bool((masked.sum(1) == counts).all())
    return masked, length / counts.float()


class MemdlmLM(LM):
    """lm-eval model for masked diffusion LMs (see the module docstring)."""

    def __init__(self, pretrained, tokenizer=None, memory: bool = False, steps: int | None = None,
                 max_new_tokens: int = 256, block_length: int | None = None,
                 temperature: float | None = None, remasking: str | None = None, unmask_rule: str | None = None,
                 threshold: float | None = None, max_per_step: int | None = None, cache: str | None = None,
                 dream_eps: float | None = None,
                 batch_size: int | str = GENERATION_BATCH_SIZE,
                 mc_samples: int = 32, seed: int = 0, greedy_check: str = "decode",
                 max_length: int | None = None, device: str | None = None, dtype: str | None = None,
                 trust_remote_code: bool = False, context_overflow: str = "refuse", **unused):
        super().__init__()

        unused.pop("max_batch_size", None)  # lm-eval's auto batching: not used here
        overrides = {k: unused.pop(k) for k in list(unused) if k in ADAPTATION_FIELDS and unused[k] is not None}
        if overrides and not memory:
            raise ConfigError(f"memory overrides {sorted(overrides)} given without memory=True")
        if unused:
            logger.warning("memdlm model: ignoring unknown model arguments %s", sorted(unused))
        if greedy_check not in GREEDY_CHECKS:
            raise ConfigError(f"unknown greedy_check {greedy_check!r}; choose one of {GREEDY_CHECKS}")
        if not str(batch_size).isdigit():
            raise ConfigError(f"batch_size {batch_size!r}: give a number of sequences per forward pass "
                              "(lm-eval's 'auto' is not supported)")
        if int(mc_samples) < 1 or int(batch_size) < 1:
            raise ValueError("mc_samples and batch_size must be >= 1")
        self._rank, self._world_size = _distributed_setup()
        if device is None and self._world_size > 1 and torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"  # one GPU per process
        self.run = self._load(pretrained, tokenizer, device, dtype, trust_remote_code)
        self.model, self.tokenizer = self.run.model, self.run.tokenizer
        self._device = next(self.model.parameters()).device
        self.context_overflow = check_overflow_choice(str(context_overflow))
        self.limit = context_limit(self.model, self.tokenizer, override=max_length)
        self.context_counts = new_counts()
        self.steps, self.max_new_tokens = steps, int(max_new_tokens)
        self.block_length = block_length
        given = dict(temperature=temperature, remasking=remasking, unmask_rule=unmask_rule, threshold=threshold,
                     max_per_step=max_per_step, cache=cache, dream_eps=dream_eps)
        self.sampler_args = {k: _SAMPLER_TYPES[k](v) for k, v in given.items() if v is not None}  # else SamplerConfig's
        self.batch_size, self.mc_samples, self.seed = int(batch_size), int(mc_samples), int(seed)
        self.greedy_check = greedy_check
        self.sampler_config()  # validate the sampler settings now, not at the first request
        self.memory = self.run.memory(**overrides) if memory else None
        self.memory_record = self.memory.record() if self.memory is not None else None

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        """lm-eval's ``--model_args`` string (its own parser), then :meth:`create_from_arg_obj`."""
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        """The model from parsed arguments, each boolean and number parsed strictly
        (``MODEL_ARG_TYPES``); ``additional_config``'s values (lm-eval's --batch_size, --device)
        win over the same keys in ``arg_dict``."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(**coerce_values({**arg_dict, **extra}, MODEL_ARG_TYPES))

    @staticmethod
    def _load(pretrained, tokenizer, device, dtype, trust_remote_code):
        """The :class:`memdlm.runs.run.Run` of ``pretrained`` (a directory, or an in-memory model
        with its tokenizer), on ``device``, in eval mode."""

        device = resolve_device(device)
        if isinstance(pretrained, (str, Path)):
            run = Run.load(str(pretrained), trust_remote_code, dtype=resolve_dtype(dtype), device=device)
            if tokenizer is not None:
                run.tokenizer = tokenizer
        elif tokenizer is None:
            raise ValueError("pass the tokenizer along with an in-memory model")
        else:
            run = Run(pretrained, tokenizer)
            run.model.to(device=device, dtype=resolve_dtype(dtype) if dtype not in (None, "auto") else None).eval()
        ensure_special_tokens(run.tokenizer, source="lm-eval model")
        return run

    # -- lm-eval metadata ----------------------------------------------------------

    @property
    def max_length(self) -> int:
        """The context limit in tokens (``max_length`` argument, else the model's config or
        tokenizer); an error when neither says, rather than a made-up number."""
        if self.limit.tokens is None:
            raise ConfigError("the model's context limit is unknown (no max_position_embeddings, "
                              "max_sequence_length, ... in its config, no tokenizer model_max_length): "
                              "pass max_length=N in --model-args")
        return self.limit.tokens

    def get_model_info(self) -> dict:
        """What lm-eval adds to ``results["config"]``: the memdlm settings of this evaluation
        (device, dtype, context limit with the requests truncated or run past it, memory)."""

        return {"memdlm": {**record(self.model), "context": {**self.limit.to_dict(),
                                                             "overflow": self.context_overflow,
                                                             **self.context_counts},
                           "memory": self.memory_record, "world_size": self.world_size,
                           # the decoding rule of generate_until (its length follows each task's max_gen_toks)
                           "sampler": dataclasses.asdict(self.sampler_config().for_model(self.model))}}

    # -- several processes (torchrun / accelerate launch): lm-eval splits the requests --

    def all_gather(self, tensor):
        if self.world_size == 1:
            return tensor
        import torch.distributed as dist

        tensor = tensor.reshape(-1)  # lm-eval gathers 0-d counts too; concatenated as 1-d
        parts = [torch.zeros_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)

    def gather_object(self, obj, dst=0):
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "memdlm")).replace("/", "__")

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt)

    # -- tokens ----------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _prefix(self) -> list[int]:
        bos = self.tokenizer.bos_token_id
        return [bos] if bos is not None else []

    def _pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation ids; the context's trailing spaces move to the
        continuation and the two are split from one encoding of the whole text."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        whole = self._encode(context + continuation)
        ctx = self._encode(context)
        if whole[:len(ctx)] != ctx:  # the merge crossed the boundary: encode apart
            whole = ctx + self._encode(continuation)
        cont = whole[len(ctx):]
        if not cont:
            raise ValueError(f"continuation {continuation!r} encodes to no tokens")
        return self._fit(ctx or self._prefix(), len(cont), "context"), cont

    def _fit(self, ids: list[int], new_tokens: int, what: str) -> list[int]:
        """``ids`` within the context limit with room for ``new_tokens``: refused past it unless
        ``context_overflow`` says truncate / extend (:mod:`memdlm.backbones.context`); counted."""

        return fit_prompts([ids], new_tokens, self.limit, self.context_overflow, self.context_counts, what)[0]

    # -- memory ----------------------------------------------------------------------

    def _adapt(self, contexts: list[list[int]], seeds: list[int]):
        """Per-context fast weights (slot i <-> context i), or None without memory."""
        if self.memory is None:
            return None
        return self.memory.adapt(contexts, seeds)

    def _right_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            attn[i, :len(r)] = 1
        return ids.to(self._device), attn.to(self._device)

    @staticmethod
    def _memory_for(memory, slots: list[int]):
        """A context factory activating ``memory`` with forward row j using slot ``slots[j]``."""
        import contextlib

        if memory is None:
            return contextlib.nullcontext
        view = dataclasses.replace(memory, slot_of_sample=torch.tensor(slots, device=memory.params()[0].device))
        return view.active

    # -- log-likelihood --------------------------------------------------------------

    def _mc_loglik(self, pairs, seeds, memory) -> list[float]:
        """ELBO estimates of log p(continuation | context) for a chunk of requests."""
        rows = []  # (request j in chunk, ids, masked positions [W] bool, weight)
        for j, ((ctx, cont), seed) in enumerate(zip(pairs, seeds)):
            masked, weight = mask_draws(len(cont), self.mc_samples, torch.Generator().manual_seed(seed))
            for k in range(self.mc_samples):
                where = torch.cat([torch.zeros(len(ctx), dtype=torch.bool), masked[k]])
                rows.append((j, ctx + cont, where, float(weight[k])))
        totals = torch.zeros(len(pairs), dtype=torch.float64)
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start:start + self.batch_size]
            ids, attn = self._right_pad([r[1] for r in batch])  # [b, W]
            where = torch.zeros_like(ids, dtype=torch.bool)
            for i, r in enumerate(batch):
                where[i, :len(r[2])] = r[2].to(self._device)
            noisy = ids.masked_fill(where, self.tokenizer.mask_token_id)
            with torch.no_grad(), self._memory_for(memory, [r[0] for r in batch])():
                logits = self._forward(noisy, attn, where)  # [n, V] at the masked positions
            logp = logits.float().log_softmax(-1).gather(-1, ids[where][:, None]).squeeze(-1)  # [n]
            per_row = torch.zeros(len(batch), device=logp.device).index_add_(0, where.nonzero()[:, 0], logp)
            weights = torch.tensor([r[3] for r in batch], device=logp.device)
            slots = torch.tensor([r[0] for r in batch])
            totals.index_add_(0, slots, (weights * per_row).double().cpu())
        return (totals / self.mc_samples).tolist()

    def _forward(self, ids, attn, where) -> torch.Tensor:

        return forward_logits(self.model, ids, attn, positions=where)

    def _greedy(self, pairs, memory) -> list[bool]:
        """Whether the sampler's greedy decode of len(continuation) slots gives the continuation."""
        if self.greedy_check == "none":
            return [False] * len(pairs)

        out = [False] * len(pairs)
        by_length: dict[int, list[int]] = {}
        for j, (_, cont) in enumerate(pairs):
            by_length.setdefault(len(cont), []).append(j)
        for length, members in by_length.items():
            config = SamplerConfig(max_new_tokens=length, steps=length, temperature=0.0,
                                   remasking="low_confidence", stop_at_eos=False)
            sampler = Sampler(self.model, self.tokenizer, config)
            result = sampler.generate([pairs[j][0] for j in members],
                                      forward_context=self._memory_for(memory, members))
            for j, response in zip(members, result.responses):
                out[j] = list(response) == list(pairs[j][1])
        return out

    def _score_pairs(self, pairs, seeds, adapt: list[bool], desc: str,
                     disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(estimate, is_greedy) per (context ids, continuation ids) pair, in input order."""
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        # Requests with and without a context to adapt on go in separate chunks;
        # longest first, so a chunk's rows have similar widths.
        order = sorted(range(len(pairs)), key=lambda i: (adapt[i], -sum(map(len, pairs[i]))))
        chunks = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        chunks = [[i for i in c if adapt[i] == flag] for c in chunks for flag in (False, True)]
        for chunk in tqdm([c for c in chunks if c], desc=desc,
                          disable=disable_tqdm or len(pairs) < 2 * self.batch_size):
            chunk_pairs, chunk_seeds = [pairs[i] for i in chunk], [seeds[i] for i in chunk]
            memory = self._adapt([p[0] for p in chunk_pairs], chunk_seeds) if adapt[chunk[0]] else None
            values = self._mc_loglik(chunk_pairs, chunk_seeds, memory)
            greedy = self._greedy(chunk_pairs, memory)
            for i, v, g in zip(chunk, values, greedy):
                results[i] = (v, g)
        return results

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs, seeds, adapt = [], [], []
        for req in requests:
            context, continuation = req.args
            pairs.append(self._pair(context, continuation))
            seeds.append(request_seed(self.seed, context, continuation))
            adapt.append(bool(context.strip()))
        results = self._score_pairs(pairs, seeds, adapt, "loglikelihood", disable_tqdm)
        for req, res in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", req.args, res)
        return results

    def _windows(self, tokens: list[int]) -> list[tuple[list[int], list[int]]]:
        """(context, piece) windows covering ``tokens`` (module docstring)."""
        if len(tokens) <= self.max_length:
            return [(self._prefix(), tokens)]
        piece = max(1, self.max_length // 2)
        return [(tokens[max(0, s - (self.max_length - len(tokens[s:s + piece]))):s] or self._prefix(),
                 tokens[s:s + piece]) for s in range(0, len(tokens), piece)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        pairs, seeds, adapt, owner = [], [], [], []
        for r, req in enumerate(requests):
            (text,) = req.args
            for w, window in enumerate(self._windows(self._encode(text))):
                pairs.append(window)
                seeds.append(request_seed(self.seed, text, str(w)))
                adapt.append(w > 0)
                owner.append(r)
        scored = self._score_pairs(pairs, seeds, adapt, "loglikelihood_rolling", disable_tqdm)
        totals = [0.0] * len(requests)
        for r, (value, _) in zip(owner, scored):
            totals[r] += value
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # -- generation ------------------------------------------------------------------

    def sampler_config(self, max_gen_toks: int | None = None, temperature: float | None = None):
        """The sampler settings for one request: steps and blocks clipped to fit N tokens."""

        n = int(max_gen_toks or self.max_new_tokens)
        block = self.block_length if self.block_length and self.block_length < n else None
        n_blocks = -(-n // block) if block else 1
        steps = max(n_blocks, min(int(self.steps or n), n))
        args = {**self.sampler_args, **({} if temperature is None else {"temperature": float(temperature)})}
        return SamplerConfig(max_new_tokens=n, steps=steps, block_length=block, stop_at_eos=True, seed=self.seed,
                             **args)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:

        groups: dict[str, tuple] = {}  # same sampler settings and stop strings
        for i, req in enumerate(requests):
            kwargs = dict(req.args[1] or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = 0.0 if kwargs.get("do_sample") is False else kwargs.get("temperature")
            config = self.sampler_config(kwargs.get("max_gen_toks"), temperature)
            groups.setdefault(repr((config, until)), (config, until, []))[2].append(i)
        outputs: list[str] = [""] * len(requests)
        for config, until, members in groups.values():
            members.sort(key=lambda i: -len(requests[i].args[0]))
            prompts = [self._prompt_ids(requests[i].args[0], config.max_new_tokens) for i in members]
            seeds = [request_seed(self.seed, requests[i].args[0]) for i in members]
            texts = generate(self.model, self.tokenizer, prompts, config, memory=self.memory,
                             seeds=seeds, batch_size=self.batch_size, progress=not disable_tqdm,
                             # fitted to self.limit by _prompt_ids (refused / truncated / counted there)
                             context_overflow="extend")
            for i, text in zip(members, texts):
                outputs[i] = cut_at_stop(text, until)
                self.cache_hook.add_partial("generate_until", requests[i].args, outputs[i])
        return outputs

    def _prompt_ids(self, context: str, new_tokens: int) -> list[int]:
        ids = self._encode(context) or self._prefix()
        if not ids:
            raise ValueError("generate_until got an empty context and the tokenizer has no BOS token")
        return self._fit(ids, new_tokens, "prompt")


def cut_at_stop(text: str, until: list[str]) -> str:
    """``text`` up to the earliest occurrence of any stop string."""
    cut = len(text)
    for stop in until:
        if stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


def _distributed_setup() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) alone; under ``torchrun`` or ``accelerate
    launch`` the process group is started here (gloo on CPUs, nccl on GPUs) so lm-eval can
    split the requests and gather the results (``all_gather`` / ``gather_object``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()
