"""The LightningModule for selective-token pretraining (paper §4): a thin wrapper around pure parts.

One training step: forward → per-token current loss (detached) → the method's selection rule
(:mod:`lacy.train.selection`) → CALL-aware loss (:mod:`lacy.train.objective`) normalised by the
global number of counted tokens. Validation reports the NLL of the real targets under the softmax
renormalised without ``<CALL>`` — the quantity every method is compared on — over all valid tokens,
fact tokens and non-fact tokens.

A model with a deferral gate (``model.call_head=gate``) trains the LM on every counted position and
the gate with binary cross-entropy on the selection instead (:func:`lacy.train.objective.gate_loss_sum`).
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Any, Mapping

import lightning as L
import torch
from torch import Tensor

from lacy.profiles import TrainConfig
from lacy.train.compile import ForwardTerms, forward_terms
from lacy.train.model import call_gate
from lacy.train.objective import gate_logits_from, gate_loss_sum, masked_loss_sum, normalise_loss, token_losses
from lacy.train.selection import Judge, Selection, get_method

ADAM_BETAS = (0.9, 0.95)  # the usual choice for LM pretraining (GPT-3, nanoGPT)


def lr_multiplier(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only, not on norms, biases or embeddings.

    Embeddings are excluded because with tied weights the output layer is the embedding: decaying
    it would shrink rare tokens' vectors toward zero between their (rare) updates.
    """
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, no_decay = [], []
    for param in model.parameters():  # shared (tied) parameters are yielded once
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or id(param) in embedding_ids else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class LacyLM(L.LightningModule):
    """Pretrains ``model`` (a Hugging Face causal LM) with the token-selection ``method``.

    What the method needs is declared by its :class:`lacy.train.selection.Method` record: ``judge``
    computes the ``unacceptable`` mask for methods that need one (the corpus's judge,
    :data:`lacy.train.selection.JUDGES`); methods that need reference losses read ``ref_loss`` from the
    batches. ``seed`` drives stochastic rules (``random``), whose draw at each step depends only on
    (seed, global step, rank), so resumed and distributed runs stay reproducible. ``compile=True`` runs
    the model's forward of training steps through ``torch.compile``
    (:mod:`lacy.train.compile`); validation stays eager.
    """

    def __init__(self, model: torch.nn.Module, method: str, call_id: int, train_cfg: TrainConfig,
                 judge: Judge | None = None, seed: int = 0, compile: bool = False):
        super().__init__()
        self.spec = get_method(method)
        if self.spec.needs_judge and judge is None:
            raise ValueError(f"method={method!r} needs a judge: one of lacy.train.selection.JUDGES "
                             "(the corpus's own: lacy.data.corpora.get_corpus(name).judge)")
        self.model = model
        self.method = method
        self.call_id = call_id
        gate = call_gate(model)
        if gate is not None and gate.call_id != call_id:
            raise ValueError(f"the model's deferral gate writes the <CALL> column {gate.call_id} but training uses "
                             f"call_id={call_id}; build the model with build_slm(..., call_id={call_id})")
        self.gated = gate is not None
        self.cfg = train_cfg
        self.judge = judge
        self.seed = seed
        self.compile = compile
        self._forward_terms: ForwardTerms | None = None  # built at the first step (compiled functions do not pickle)
        # [call, counted, valid] target tokens over the whole run (for the summary); kept as a plain
        # tensor, not a buffer, because DDP broadcasts buffers from rank 0.
        self.token_totals = torch.zeros(3, dtype=torch.long)
        self._val_sums = torch.zeros(6, dtype=torch.float64)
        self._last_step_time: float | None = None
        self.start_step = 0  # global step this session started from (> 0 when resumed)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.model(input_ids=input_ids).logits

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_forward_terms"] = None
        return state

    def setup(self, stage: str) -> None:
        # Spawn-style strategies pass this module to worker processes with its tensors in shared
        # memory; the run totals must be private to each process.
        self.token_totals = self.token_totals.clone()

    # ---- training ---------------------------------------------------------------------------
    def _selection_generator(self, rank: int) -> torch.Generator | None:
        if not self.spec.stochastic:
            return None
        return torch.Generator().manual_seed(hash((self.seed, self.global_step, rank)) % 2**63)

    def _gathers_selection(self) -> bool:
        """Per-batch selection under data parallelism ranks the *global* batch, as one process would."""
        return self.cfg.granularity == "batch" and self._trainer is not None and self.trainer.world_size > 1

    def select(self, current: Tensor, batch: Mapping[str, Tensor], logits: Tensor) -> Selection:
        """Apply the method's rule; with several ranks and per-batch granularity, to the global batch.

        Every rank all-gathers the rule's inputs, selects on the concatenated batch (identically, with a
        rank-independent generator) and keeps its own rows, so a 2-process run selects exactly what one
        process selects on the same global batch.
        """
        inputs = self.spec.rule_inputs(current, batch, logits, self.call_id, self.judge)
        gather = self._gathers_selection()
        if gather:
            inputs = {k: None if v is None else self._gather_rows(v) for k, v in inputs.items()}
        selection = self.spec.select(inputs, fraction=self.cfg.call_fraction, granularity=self.cfg.granularity,
                                     generator=self._selection_generator(0 if gather else self.global_rank),
                                     threshold=self.call_threshold())
        if gather:
            rows = slice(self.global_rank * current.shape[0], (self.global_rank + 1) * current.shape[0])
            selection = Selection(call=selection.call[rows], learn=selection.learn[rows])
        return selection

    def call_threshold(self) -> float:
        """``lacy_adaptive``'s threshold at this step: ``inf`` (delegate nothing) during the first
        ``train.call_warmup`` of ``train.max_steps``, then ``train.call_threshold``. A function of the global
        step only, so resumed and data-parallel runs agree."""
        return self.cfg.call_threshold if self.global_step >= self.cfg.call_warmup * self.cfg.max_steps else math.inf

    def _gather_rows(self, tensor: Tensor) -> Tensor:
        """``[B, T]`` on each rank → ``[world_size * B, T]`` in rank order (bool via uint8 for gloo)."""
        gathered = self.all_gather(tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor)
        gathered = gathered.flatten(0, 1)
        return gathered.bool() if tensor.dtype == torch.bool else gathered

    def compute_loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of one batch and per-step statistics (local to this rank)."""
        if self._forward_terms is None:
            self._forward_terms = forward_terms(self.model, self.call_id, self.compile)
        logits, terms = self._forward_terms(batch["input_ids"], batch["targets"])
        current = terms.learn.detach()
        valid = batch["valid"]
        selection = self.select(current, batch, logits)
        if self.gated:
            gate = gate_logits_from(logits, batch["targets"], terms, self.call_id)
            loss_sum, n_counted = gate_loss_sum(terms, gate, selection.call, selection.learn)
        else:
            loss_sum, n_counted = masked_loss_sum(terms, selection.call, selection.learn)
        n_call, n_learn = selection.call.sum(), selection.learn.sum()
        selected = valid & ~selection.learn  # taken out of learning: <CALL> targets or ignored
        n_selected = selected.sum()
        stats = {
            "n_call": n_call, "n_counted": n_counted, "n_valid": valid.sum(),
            "learn_loss": torch.where(selection.learn, current, 0.0).sum() / n_learn.clamp_min(1),
            "call_fraction": n_call / n_counted.clamp_min(1),
            "selected_loss": torch.where(selected, current, 0.0).sum() / n_selected if n_selected else current.new_tensor(math.nan),
        }
        return normalise_loss(loss_sum, n_counted), stats

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        loss, stats = self.compute_loss(batch)
        if not torch.isfinite(loss):
            raise RuntimeError(
                f"non-finite training loss ({loss.item()}) at global step {self.global_step}, batch index "
                f"{batch_idx} (method {self.method!r}); training stopped. Lower train.lr, raise "
                f"train.warmup_steps, or use train.precision=32")
        totals = torch.stack([stats["n_call"], stats["n_counted"], stats["n_valid"]]).cpu()
        self.token_totals += totals
        now = time.perf_counter()
        metrics = {
            "train/loss": stats["learn_loss"], "train/call_fraction": stats["call_fraction"],
            "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
        }
        if self.spec.effect != "none":
            metrics["train/selected_loss"] = stats["selected_loss"]
        if self._last_step_time is not None:
            tokens = batch["input_ids"].numel() * self.trainer.world_size
            metrics["train/tokens_per_s"] = tokens / (now - self._last_step_time)
        self._last_step_time = now
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=batch["input_ids"].shape[0])
        self.log("train/objective", loss.detach(), on_step=True, on_epoch=False, prog_bar=True,
                 batch_size=batch["input_ids"].shape[0])
        return loss

    def on_train_start(self) -> None:
        self._last_step_time = None
        self.start_step = self.global_step

    def on_train_end(self) -> None:
        # callback_metrics is what Lightning hands back to the main process after spawn-style
        # strategies (ddp_spawn, ddp_notebook), so the run summary can be written there.
        totals = self.global_token_totals()
        self.trainer.callback_metrics.update({
            "run/call_tokens": totals[0], "run/counted_tokens": totals[1], "run/valid_tokens": totals[2],
            "run/start_step": torch.tensor(self.start_step), "run/end_step": torch.tensor(self.global_step),
        })

    # ---- validation -------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(6, dtype=torch.float64, device=self.device)
        self._last_step_time = None  # keep validation time out of train/tokens_per_s

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        nll = token_losses(self(batch["input_ids"]), batch["targets"], self.call_id).double()
        valid, fact = batch["valid"], batch["fact"]
        parts = []
        for mask in (valid, valid & fact, valid & ~fact):
            parts += [torch.where(mask, nll, 0.0).sum(), mask.sum().double()]
        self._val_sums += torch.stack(parts)

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self._val_sums.clone(), reduce_op="sum")
        loss, loss_fact, loss_nonfact = (sums[i] / sums[i + 1] if sums[i + 1] > 0 else sums.new_tensor(math.nan) for i in (0, 2, 4))
        # Already global (token-weighted over all ranks); sync_dist only averages identical values.
        self.log_dict({"val/loss": loss.float(), "val/loss_fact": loss_fact.float(), "val/loss_nonfact": loss_nonfact.float()},
                      on_step=False, on_epoch=True, sync_dist=True)

    # ---- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.cfg
        optimizer = torch.optim.AdamW(parameter_groups(self.model, cfg.weight_decay), lr=cfg.lr, betas=ADAM_BETAS)
        schedule = partial(lr_multiplier, warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps, min_lr_ratio=cfg.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- run totals survive resumption ------------------------------------------------------
    def global_token_totals(self) -> Tensor:
        """``[call, counted, valid]`` target tokens trained so far, summed over ranks (collective)."""
        # A copy: DDP's reduce is an in-place all_reduce.
        return self.trainer.strategy.reduce(self.token_totals.to(self.device, copy=True), reduce_op="sum").cpu()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lacy_token_totals"] = self.global_token_totals().tolist()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = torch.tensor(checkpoint.get("lacy_token_totals", [0, 0, 0]), dtype=torch.long)
        # The saved totals are global; keep them on one rank so the next global sum counts them once.
        self.token_totals = saved if self.global_rank == 0 else torch.zeros_like(saved)
