"""The CALL-aware training objective (paper §4).

At positions selected for delegation the target becomes ``<CALL>`` and is learned with the ordinary
softmax over the whole vocabulary. At every other counted position the model learns the original
token with a *modified NLL*: the softmax is renormalised with ``<CALL>`` excluded, so the ``<CALL>``
logit receives no gradient where ``<CALL>`` was not the target (it is never pushed down there).

Both terms come from one fused ``log_softmax`` over the logits with ``<CALL>`` masked to ``-inf``
(the same cost as ordinary cross-entropy). With ``z`` the logits, ``lse_nc`` the log-sum-exp of the
logits without ``<CALL>`` and ``y`` the target (never ``<CALL>`` in the data):

- modified NLL of ``y``:  ``lse_nc - z_y``  (the masked log-softmax at ``y``), so ``lse_nc = z_y + NLL``;
- NLL of ``<CALL>`` under the full softmax:  ``log(exp(lse_nc) + exp(z_call)) - z_call
  = softplus(lse_nc - z_call)``.

Both are exact and stable for any logits. The tempting ``log p(y) - log(1 - p_call)`` from one
ordinary softmax is not: when ``p_call`` rounds to one (a model that learned to call) it is ``inf``.

The gate ablation (``model.call_head=gate``, Co-LLM: Shen et al., 2024, "Learning to Decode
Collaboratively with Multiple Language Models") replaces the ``<CALL>`` token by a deferral head: one
logit ``g`` per position. The model writes it into the ``<CALL>`` column as ``g + lse_nc``
(:func:`gated_call_logits`), so the full softmax gives ``P(<CALL>) = sigmoid(g)`` and everything that
reads ``P(<CALL>)`` (the cascade, calibration) reads the gate. Its loss is :func:`gate_loss_sum`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable


class TokenTerms(NamedTuple):
    """Per-token loss terms, both ``[B, T]`` (float32, or float64 for float64 logits).

    ``learn``: NLL of the target under the softmax renormalised without ``<CALL>`` (``inf`` where the
    target is ``<CALL>`` itself, which has probability zero there). ``call``: NLL of ``<CALL>`` under
    the ordinary softmax.
    """

    learn: Tensor
    call: Tensor


def without_call(logits: Tensor, call_id: int) -> Tensor:
    """A copy of ``logits`` ``[..., V]`` with the ``<CALL>`` column at ``-inf``.

    What the model would predict among real tokens: every greedy choice, top-k list and mismatch
    that compares a prediction with a data target (where ``<CALL>`` never occurs) masks it first.
    """
    return logits.index_fill(-1, torch.tensor([call_id], device=logits.device), float("-inf"))


CPU_CHUNK_ELEMENTS = 1 << 21
"""Vocabulary rows are processed in chunks of at most this many elements on CPU (8 MiB of float32):
glibc serves allocations of 32 MiB and more (one [32, 128, 2048] float32 tensor) with fresh ``mmap``
pages every step, and the page faults cost more than the arithmetic. Chunks are recycled instead
(measured 2.7x faster loss forward + backward on the cpu profile)."""


def _chunk_rows(flat: Tensor) -> int:
    return max(1, CPU_CHUNK_ELEMENTS // flat.shape[1]) if flat.device.type == "cpu" else flat.shape[0]


def _masked_log_softmax(flat: Tensor, call_id: int, rows: int) -> list[Tensor]:
    """Row chunks of ``log_softmax`` over ``flat`` ``[N, V]`` with the ``<CALL>`` column at ``-inf``."""
    compute_dtype = torch.promote_types(flat.dtype, torch.float32)
    chunks = []
    for chunk in flat.split(rows):
        masked = chunk.to(compute_dtype, copy=True)  # the upcast under bf16 autocast; masked in place
        masked[:, call_id] = float("-inf")
        chunks.append(torch.log_softmax(masked, dim=-1))
    return chunks


class _CallAwareTerms(torch.autograd.Function):
    """Both terms with a hand-written backward: autograd's generic one (gathers, a column select, an
    upcast) materialises several ``[B, T, V]`` gradients and sums them; this one writes one. With
    ``p`` the softmax without ``<CALL>`` and ``s = sigmoid(lse_nc - z_call) = 1 - p_call``:
    ``dL/dz_j = (g_learn + g_call * s) * p_j - g_learn * [j = y]`` and ``dL/dz_call = -g_call * s``.
    The first backward turns the saved log-probabilities into the gradient in place; a repeated
    backward (``retain_graph=True``) recomputes them from the saved logits.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, targets: Tensor, call_id: int) -> tuple[Tensor, Tensor]:
        flat = logits.reshape(-1, logits.shape[-1])
        index = targets.reshape(-1, 1)
        rows = _chunk_rows(flat)
        log_probs = _masked_log_softmax(flat, call_id, rows)
        nll = torch.cat([-chunk.gather(1, idx).squeeze(1) for chunk, idx in zip(log_probs, index.split(rows))])
        lse_without_call = flat.gather(1, index).squeeze(1).to(nll.dtype) + nll
        gap = lse_without_call - flat[:, call_id].to(nll.dtype)
        ctx.save_for_backward(logits, index, gap)
        ctx.log_probs, ctx.rows, ctx.call_id = log_probs, rows, call_id
        return nll.view(targets.shape), F.softplus(gap).view(targets.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_learn: Tensor | None, grad_call: Tensor | None) -> tuple[Tensor, None, None]:
        logits, index, gap = ctx.saved_tensors
        flat_grad = torch.empty_like(logits).view(-1, logits.shape[-1])
        log_probs = ctx.log_probs
        if log_probs is None:  # a second backward through the same graph
            log_probs = _masked_log_softmax(logits.reshape(-1, logits.shape[-1]), ctx.call_id, ctx.rows)
        ctx.log_probs = None
        grad_learn = torch.zeros_like(gap) if grad_learn is None else grad_learn.reshape(-1)
        grad_call = torch.zeros_like(gap) if grad_call is None else grad_call.reshape(-1)
        keep = torch.sigmoid(gap)
        coef = grad_learn + grad_call * keep
        for i, chunk in enumerate(log_probs):
            rows = slice(i * ctx.rows, i * ctx.rows + chunk.shape[0])
            chunk.exp_().mul_(coef[rows, None])  # softmax without <CALL> (0 at <CALL>), scaled
            chunk.scatter_add_(1, index[rows], -grad_learn[rows, None])
            chunk[:, ctx.call_id] = -grad_call[rows] * keep[rows]
            flat_grad[rows].copy_(chunk)
        return flat_grad.view(logits.shape), None, None


def token_terms(logits: Tensor, targets: Tensor, call_id: int) -> TokenTerms:
    """Both per-token terms of the CALL-aware objective from one pass over ``logits`` ``[B, T, V]``.

    Computed in at least float32 (bf16 autocast produces bf16 logits; float64 stays float64).
    Differentiable with respect to ``logits`` (once: no double backward), by the chunked kernel with
    a hand-written backward (:class:`_CallAwareTerms`).
    """
    learn, call = _CallAwareTerms.apply(logits, targets, call_id)
    return TokenTerms(learn=learn, call=call)


def token_losses(logits: Tensor, targets: Tensor, call_id: int) -> Tensor:
    """Per-token NLL ``[B, T]`` of ``targets`` under the softmax renormalised without ``<CALL>``.

    This is the model's *current loss* that the selection rules rank (paper §4); detach it there.
    """
    return token_terms(logits, targets, call_id).learn


def masked_loss_sum(terms: TokenTerms, call_mask: Tensor, learn_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Sum of the ``<CALL>`` term over ``call_mask`` and the modified NLL over ``learn_mask``.

    Returns ``(loss_sum, n_counted)`` with ``n_counted = call_mask.sum() + learn_mask.sum()``.
    Positions in neither mask (ignored tokens, padding) contribute nothing, not even a NaN gradient:
    ``torch.where`` routes a zero gradient to the unselected branch.
    """
    if torch.any(call_mask & learn_mask):
        raise ValueError("call_mask and learn_mask overlap: a position is either a <CALL> target or learned, not both")
    zero = terms.learn.new_zeros(())
    per_token = torch.where(call_mask, terms.call, zero) + torch.where(learn_mask, terms.learn, zero)
    n_counted = call_mask.sum() + learn_mask.sum()
    return per_token.sum(), n_counted


def gated_call_logits(logits: Tensor, gate: Tensor, call_id: int) -> Tensor:
    """``logits`` ``[..., V]`` with the ``<CALL>`` column replaced by ``gate + lse_nc`` (``gate`` ``[...]``).

    ``lse_nc`` is the log-sum-exp of the logits without ``<CALL>`` (detached), so under the full softmax
    ``P(<CALL>) = sigmoid(gate)`` exactly and every other token keeps its probability without ``<CALL>``,
    scaled by ``1 - sigmoid(gate)``. The column's gradient reaches the gate (and through it the shared
    hidden state), never the other logits. Computed in float32 and stored in the logits' dtype (under
    bf16 autocast the column is rounded to bf16: a ~1% error of ``P(<CALL>)`` in training; inference in
    float32 is exact).
    """
    lse_without_call = torch.logsumexp(without_call(logits, call_id).float(), dim=-1).detach()
    column = (gate.float() + lse_without_call).to(logits.dtype)
    return logits.index_copy(-1, torch.tensor([call_id], device=logits.device), column.unsqueeze(-1))


def gate_logits_from(logits: Tensor, targets: Tensor, terms: TokenTerms, call_id: int) -> Tensor:
    """The gate logit ``g`` ``[B, T]`` that :func:`gated_call_logits` wrote into ``logits``, differentiable
    with respect to the ``<CALL>`` column only: ``z_call - lse_nc``, with ``lse_nc = z_y + terms.learn``
    (the modified NLL is ``lse_nc - z_y``) detached, so the gate's loss does not reach the LM's logits.
    It does reach the transformer through the gate's input, the final hidden state: the gate and the LM
    share one trunk and are trained jointly, as Co-LLM trains its deferral head with the model."""
    dtype = terms.learn.dtype
    z_target = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).to(dtype)
    return logits[..., call_id].to(dtype) - (z_target + terms.learn).detach()


def gate_loss_sum(terms: TokenTerms, gate: Tensor, call_mask: Tensor, learn_mask: Tensor) -> tuple[Tensor, Tensor]:
    """The gate ablation's loss before normalisation: ``(loss_sum, n_counted)``, Co-LLM style.

    Every counted position (``call_mask | learn_mask``) learns its original target with the softmax
    renormalised without ``<CALL>`` (Co-LLM trains the LM on all tokens; the deferral decision is the
    gate's alone), plus the binary cross-entropy of the gate logit ``gate`` (:func:`gate_logits_from`):
    label 1 at ``call_mask``, 0 at ``learn_mask``. Ignored positions and padding contribute nothing.
    Divide with :func:`normalise_loss`: the mean of LM loss + BCE over counted positions.
    """
    if torch.any(call_mask & learn_mask):
        raise ValueError("call_mask and learn_mask overlap: a position is either a <CALL> target or learned, not both")
    counted = call_mask | learn_mask
    bce = torch.where(call_mask, F.softplus(-gate), F.softplus(gate))
    per_token = torch.where(counted, terms.learn + bce, terms.learn.new_zeros(()))
    return per_token.sum(), counted.sum()


def call_aware_loss(logits: Tensor, targets: Tensor, call_mask: Tensor, learn_mask: Tensor, call_id: int) -> tuple[Tensor, Tensor]:
    """The LaCy loss (paper §4) before normalisation: ``(loss_sum, n_counted)``.

    ``call_mask`` positions learn ``<CALL>`` with the ordinary softmax; ``learn_mask`` positions learn
    their original target with the softmax renormalised without ``<CALL>``; all other positions are
    ignored. Divide with :func:`normalise_loss`.
    """
    return masked_loss_sum(token_terms(logits, targets, call_id), call_mask, learn_mask)


def normalise_loss(loss_sum: Tensor, n_counted: Tensor, sync: bool = True) -> Tensor:
    """Mean loss per counted token over the *global* batch (all data-parallel ranks).

    Each rank holds a different number of counted tokens (selection and padding vary), so dividing
    by the local count and letting DDP average gradients weights tokens unequally across ranks. We
    all-reduce the count (when ``torch.distributed`` is initialised and ``sync``) and return
    ``loss_sum * world_size / global_count``: after DDP divides the summed gradients by
    ``world_size`` the gradient is exactly that of one process on the whole global batch
    (third-party Rho-1 code divides by the local count instead). The count carries no gradient. An
    empty batch gives 0, not NaN.
    """
    count = n_counted.detach().to(loss_sum.dtype)
    world_size = 1
    if sync and dist.is_available() and dist.is_initialized():
        world_size = dist.get_world_size()
        count = count.clone()
        dist.all_reduce(count, op=dist.ReduceOp.SUM)
    return loss_sum * world_size / count.clamp_min(1.0)
