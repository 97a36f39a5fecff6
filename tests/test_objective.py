"""The CALL-aware objective against direct reference computations; DDP global normalisation."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from lacy.train.objective import call_aware_loss, normalise_loss, token_losses, token_terms

CALL = 4


def reference_terms(logits: torch.Tensor, targets: torch.Tensor, call_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Direct definition: drop the <CALL> column and take a softmax over the rest; full softmax for <CALL>."""
    vocab = logits.shape[-1]
    keep = [v for v in range(vocab) if v != call_id]
    remap = torch.full((vocab,), -1, dtype=torch.long)
    remap[keep] = torch.arange(len(keep))
    learn = -torch.log_softmax(logits[..., keep], -1).gather(-1, remap[targets].unsqueeze(-1)).squeeze(-1)
    call = -torch.log_softmax(logits, -1)[..., call_id]
    return learn, call


def random_case(seed: int, batch: int = 3, length: int = 7, vocab: int = 11, scale: float = 3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, length, vocab, generator=g) * scale).to(dtype)
    targets = torch.randint(0, vocab, (batch, length), generator=g)
    targets[targets == CALL] = CALL + 1  # data never contains <CALL> as a target
    return logits, targets, g


def test_terms_match_reference_definition():
    logits, targets, _ = random_case(0)
    terms = token_terms(logits, targets, CALL)
    learn, call = reference_terms(logits, targets, CALL)
    torch.testing.assert_close(terms.learn, learn)
    torch.testing.assert_close(terms.call, call)
    torch.testing.assert_close(token_losses(logits, targets, CALL), learn)


def test_renormalisation_ignores_call_logit():
    """The modified NLL does not depend on the <CALL> logit at all (it is never pushed down)."""
    logits, targets, _ = random_case(1)
    shifted = logits.clone()
    shifted[..., CALL] += 50.0
    torch.testing.assert_close(token_losses(shifted, targets, CALL), token_losses(logits, targets, CALL))
    assert not torch.allclose(token_terms(shifted, targets, CALL).call, token_terms(logits, targets, CALL).call)


def test_stable_when_call_dominates():
    """p(<CALL>) ~ 1: a log(1 - p_call) formulation would give inf; ours stays exact."""
    logits, targets, _ = random_case(2, dtype=torch.float32)
    logits[..., CALL] = 200.0
    terms = token_terms(logits, targets, CALL)
    learn, call = reference_terms(logits.double(), targets, CALL)
    assert torch.isfinite(terms.learn).all() and torch.isfinite(terms.call).all()
    torch.testing.assert_close(terms.learn.double(), learn, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms.call.double(), call, rtol=1e-5, atol=1e-5)


def test_bf16_logits_are_upcast():
    logits, targets, _ = random_case(3, dtype=torch.float32)
    terms = token_terms(logits.bfloat16(), targets, CALL)
    assert terms.learn.dtype == torch.float32
    learn, _ = reference_terms(logits.bfloat16().double(), targets, CALL)
    torch.testing.assert_close(terms.learn.double(), learn, rtol=1e-5, atol=1e-5)


def test_call_target_has_infinite_learn_loss():
    """Under the renormalised softmax <CALL> has probability zero."""
    logits, targets, _ = random_case(4)
    targets[0, 0] = CALL
    assert torch.isinf(token_losses(logits, targets, CALL)[0, 0])


def masks(g: torch.Generator, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    valid = torch.rand(shape, generator=g) < 0.8
    call = valid & (torch.rand(shape, generator=g) < 0.3)
    learn = valid & ~call & (torch.rand(shape, generator=g) < 0.8)
    return valid, call, learn


def test_call_aware_loss_matches_reference_and_gradient():
    logits, targets, g = random_case(5)
    valid, call, learn = masks(g, targets.shape)
    loss_sum, n = call_aware_loss(logits, targets, call, learn, CALL)
    ref_learn, ref_call = reference_terms(logits, targets, CALL)
    assert n == int(call.sum() + learn.sum())
    torch.testing.assert_close(loss_sum, ref_call[call].sum() + ref_learn[learn].sum())

    leaf = logits.clone().requires_grad_(True)
    torch.autograd.gradcheck(lambda x: call_aware_loss(x, targets, call, learn, CALL)[0], (leaf,))
    # The analytic gradient equals the gradient of the direct definition.
    call_aware_loss(leaf, targets, call, learn, CALL)[0].backward()
    ref_leaf = logits.clone().requires_grad_(True)
    rl, rc = reference_terms(ref_leaf, targets, CALL)
    (rc[call].sum() + rl[learn].sum()).backward()
    torch.testing.assert_close(leaf.grad, ref_leaf.grad)
    # <CALL> gets no gradient at learn positions.
    assert torch.all(leaf.grad[learn][:, CALL] == 0)


def test_repeated_backward_gives_the_same_gradient():
    """The first backward reuses saved buffers in place; a second one (retain_graph) recomputes them."""
    logits, targets, g = random_case(8, dtype=torch.float32)
    _, call, learn = masks(g, targets.shape)
    leaf = logits.clone().requires_grad_(True)
    loss_sum, _ = call_aware_loss(leaf, targets, call, learn, CALL)
    first = torch.autograd.grad(loss_sum, leaf, retain_graph=True)[0]
    second = torch.autograd.grad(loss_sum, leaf)[0]
    torch.testing.assert_close(first, second)


def test_chunked_cpu_path_matches_reference(monkeypatch):
    """Rows are processed in chunks on CPU; chunk edges must not change anything."""
    import lacy.train.objective as objective

    logits, targets, g = random_case(9, batch=3, length=5, vocab=11)
    _, call, learn = masks(g, targets.shape)
    monkeypatch.setattr(objective, "CPU_CHUNK_ELEMENTS", 4 * 11)  # 4 rows per chunk: 15 rows -> 4 chunks
    leaf = logits.clone().requires_grad_(True)
    call_aware_loss(leaf, targets, call, learn, CALL)[0].backward()
    ref_leaf = logits.clone().requires_grad_(True)
    rl, rc = reference_terms(ref_leaf, targets, CALL)
    (rc[call].sum() + rl[learn].sum()).backward()
    torch.testing.assert_close(leaf.grad, ref_leaf.grad)


def test_uncounted_positions_contribute_nothing():
    """Padding / ignored positions: no loss and no gradient, even where their terms are infinite."""
    logits, targets, g = random_case(6)
    valid, call, learn = masks(g, targets.shape)
    uncounted = ~(call | learn)
    assert uncounted.any() and (~valid).any()
    targets = targets.clone()
    targets[~valid] = CALL  # an infinite modified NLL at padding must not leak
    leaf = logits.clone().requires_grad_(True)
    loss_sum, n = call_aware_loss(leaf, targets, call, learn, CALL)
    loss_sum.backward()
    assert torch.isfinite(loss_sum) and torch.isfinite(leaf.grad).all()
    assert torch.all(leaf.grad[uncounted] == 0)
    ref_learn, ref_call = reference_terms(logits, targets.where(valid, 0), CALL)
    torch.testing.assert_close(loss_sum, ref_call[call].sum() + ref_learn[learn].sum())


def test_overlapping_masks_are_refused():
    logits, targets, _ = random_case(7)
    both = torch.zeros(targets.shape, dtype=torch.bool)
    both[0, 0] = True
    with pytest.raises(ValueError, match="overlap"):
        call_aware_loss(logits, targets, both, both, CALL)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 3), length=st.integers(1, 6), vocab=st.integers(6, 12),
       scale=st.floats(0.1, 30.0))
def test_property_loss_is_sum_of_reference_terms(seed, batch, length, vocab, scale):
    logits, targets, g = random_case(seed, batch, length, vocab, scale)
    valid, call, learn = masks(g, targets.shape)
    loss_sum, n = call_aware_loss(logits, targets, call, learn, CALL)
    ref_learn, ref_call = reference_terms(logits, targets, CALL)
    torch.testing.assert_close(loss_sum, ref_call[call].sum() + ref_learn[learn].sum())
    assert int(n) == int(call.sum()) + int(learn.sum())
    assert loss_sum >= 0


def test_normalise_single_process_is_mean_and_empty_is_zero():
    assert normalise_loss(torch.tensor(6.0), torch.tensor(4)).item() == pytest.approx(1.5)
    assert normalise_loss(torch.tensor(0.0), torch.tensor(0)).item() == 0.0


# ---- DDP: 2 gloo processes give the gradient of 1 process on the global batch ---------------------

def _ddp_case():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 9, dtype=torch.float64)
    x = torch.randn(4, 6, 5, dtype=torch.float64)
    targets = torch.randint(0, 9, (4, 6))
    targets[targets == CALL] = 0
    # Deliberately unbalanced counts between the two halves of the batch.
    call = torch.zeros(4, 6, dtype=torch.bool)
    call[0, :3] = True
    learn = torch.ones(4, 6, dtype=torch.bool) & ~call
    learn[2:, 4:] = False
    learn[3, :] = False
    return model, x, targets, call, learn


def _global_gradient(model, x, targets, call, learn):
    model.zero_grad()
    loss_sum, n = call_aware_loss(model(x), targets, call, learn, CALL)
    normalise_loss(loss_sum, n).backward()
    return [p.grad.clone() for p in model.parameters()]


def _ddp_worker(rank: int, world_size: int, port: int, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        model, x, targets, call, learn = _ddp_case()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        shard = slice(rank * 2, rank * 2 + 2)
        loss_sum, n = call_aware_loss(ddp(x[shard]), targets[shard], call[shard], learn[shard], CALL)
        normalise_loss(loss_sum, n).backward()  # DDP averages gradients across ranks
        results[rank] = [p.grad.clone() for p in model.parameters()]
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gradient_equals_single_process_global_batch():
    expected = _global_gradient(*_ddp_case())
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_ddp_worker, args=(2, _free_port(), results), nprocs=2, join=True)
        per_rank = [results[0], results[1]]
    for grads in per_rank:
        for got, want in zip(grads, expected):
            torch.testing.assert_close(got, want)
    # Normalising by the local count instead (the common mistake) gives a different gradient here.
    model, x, targets, call, learn = _ddp_case()
    local = []
    for shard in (slice(0, 2), slice(2, 4)):
        model.zero_grad()
        loss_sum, n = call_aware_loss(model(x[shard]), targets[shard], call[shard], learn[shard], CALL)
        (loss_sum / n).backward()
        local.append(model.weight.grad.clone())
    assert not torch.allclose((local[0] + local[1]) / 2, expected[0])
