"""Adaptive structured pruning during fine-tuning (full or LoRA): heads and FFN neurons are scored as
training goes, removed gradually, and the allocation across layers follows the scores.

- **Scores**: every attention head and FFN neuron has a multiplicative gate on its output
  (``pruning.gates.UnitGates``); after each backward pass ``|∂L/∂gate|`` — the first-order (Taylor)
  estimate of the loss change if the unit were removed — is folded into an exponential moving average
  (``beta``). Gates are not model parameters, so this works on a frozen LoRA base too; under
  ``torchrun`` the gate gradients are summed over processes, so every process prunes the same units.
  ``score="lora"`` (LoRAPrune, Zhang et al. 2023) scores from the LoRA factors instead: the frozen
  weight's gradient is estimated as ``ĝ = s·(∂L/∂B·A + B·∂L/∂A)`` and a unit's score is the sum of
  ``|(W + s·B·A) ⊙ ĝ|`` over its rows / columns in every adapted projection.
- **Amount**: every ``every`` steps the keep fraction follows the cubic schedule (Zhu & Gupta) from 1
  at ``start`` to the target at ``end`` (default: 2/3 of the run's real optimizer steps).
- **Allocation**: ``global`` ranks the EMA scores of all layers together (layers end up with different
  widths), ``uniform`` keeps the same fraction per layer; FFN widths are rounded to ``round_to``
  (default 32: on CPUs widths in multiples of 32 ran ~10 % faster) and heads spread evenly over KV
  groups. A pruned unit's gate is 0 and stays 0.
- **Targets**: keep fractions for heads and/or neurons, or a parameter budget met by one keep
  fraction (solved from the current scores at each step).
- **End**: ``remove_pruned_units`` cuts the gated-off units out of the model (``pruning.surgery``); a
  gate of 0 and a removed unit compute the same function, so the pruned model is the trained one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import TrainerCallback

from prunekit.adapters import get_adapter
from prunekit.errors import ConfigError
from prunekit.methods.structured import UnitTargets, allocate, keep_fractions
from prunekit.options import option, real, same_option
from prunekit.pruning.gates import UnitGates
from prunekit.pruning.schedules import CubicSchedule, keep_fraction_at
from prunekit.pruning.surgery import prune_heads, prune_neurons
from prunekit.pruning.units import select_top

SCORES = ("gate", "lora")


@dataclass
class AdaptiveConfig(UnitTargets):
    """Adaptive pruning: ``UnitTargets`` reached on the cubic schedule's timing, scored as training goes."""

    beta: float = option(0.85, "EMA factor of the scores", parse=real(0, 1, high_open=True), flag="--score-ema")
    score: str = option(
        "gate",
        "gate (|dL/dgate| per unit) or lora (LoRAPrune: |W . grad| estimated from the LoRA factors; needs --lora)",
        choices=SCORES,
        flag="--adaptive-score",
    )
    start: int = same_option(CubicSchedule, "start")  # gradual magnitude pruning's timing flags
    end: int | None = same_option(CubicSchedule, "end")
    every: int = same_option(CubicSchedule, "every")

    def __post_init__(self) -> None:
        super().__post_init__()
        if all(v is None for v in (self.heads, self.ffn, self.params_budget, self.flops_budget)):
            raise ConfigError("--prune adaptive: pass --heads, --ffn, --params-budget or --flops-budget (what to keep)")


@dataclass
class _State:
    """The EMA scores per layer (which units are alive is in the gates), and what each pruning step kept."""

    head_scores: list[torch.Tensor]
    neuron_scores: list[torch.Tensor]
    history: list[dict] = field(default_factory=list)


class AdaptivePruningCallback(TrainerCallback):
    """Scores, gates and prunes heads / neurons of the model being trained (see module docstring)."""

    def __init__(self, config: AdaptiveConfig):
        self.config = config
        self.schedule: CubicSchedule | None = None
        self.gates: UnitGates | None = None
        self.state: _State | None = None
        self.adapter = None

    # -------------------------------------------------------------- training hooks

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wraps it
        self.adapter = get_adapter(base)
        if self.config.score == "lora" and not _lora_layers(self.adapter.layers()[0]):
            raise ConfigError("--adaptive-score lora scores from LoRA factors: train with --lora")
        self.gates = UnitGates(self.adapter, requires_grad=True).__enter__()
        self.state = _State(
            [torch.zeros_like(g, requires_grad=False) for g in self.gates.heads],
            [torch.zeros_like(g, requires_grad=False) for g in self.gates.neurons],
        )
        config = self.config
        # only the schedule's timing is used (progress_at); keep fractions are interpolated from it
        timing = CubicSchedule(0.0, config.start, config.end, config.every)
        self.schedule = timing.for_training(state.max_steps)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        beta = self.config.beta
        if self.config.score == "lora":  # LoRA gradients are already averaged over processes by DDP
            heads, neurons = lora_unit_scores(self.adapter)
            for scores, new in ((self.state.head_scores, heads), (self.state.neuron_scores, neurons)):
                for score, value in zip(scores, new):
                    score.mul_(beta).add_(value.to(score.device), alpha=1 - beta)
        for gates, scores in (
            (self.gates.heads, self.state.head_scores),
            (self.gates.neurons, self.state.neuron_scores),
        ):
            for gate, score in zip(gates, scores):
                if gate.grad is None:
                    continue
                grad = gate.grad.detach()
                gate.grad = None
                if self.config.score != "gate":
                    continue
                if dist.is_available() and dist.is_initialized():
                    dist.all_reduce(grad)  # same scores, so the same units pruned, in every process
                score.mul_(beta).add_(grad.abs(), alpha=1 - beta)

    def on_step_end(self, args, state, control, **kwargs):
        if self.schedule.is_pruning_step(state.global_step):
            self._prune(state.global_step)

    # -------------------------------------------------------------- pruning

    def _targets(self, progress: float) -> tuple[float | None, float | None]:
        """Keep fractions for heads and neurons at this point of the schedule."""
        heads, ffn, _ = keep_fractions(self.adapter, self.config, self._counts)
        return keep_fraction_at(heads, progress), keep_fraction_at(ffn, progress)

    def _alive_scores(self, scores: list[torch.Tensor], gates: list[torch.Tensor]) -> list[torch.Tensor]:
        """Scores with pruned units at -inf, so they are never chosen again."""
        return [
            torch.where(gate.detach() > 0, score, torch.full_like(score, -torch.inf))
            for score, gate in zip(scores, gates)
        ]

    def _counts(self, heads: float | None, ffn: float | None) -> tuple[list[int], list[int]]:
        head_scores = self._alive_scores(self.state.head_scores, self.gates.heads)
        neuron_scores = self._alive_scores(self.state.neuron_scores, self.gates.neurons)
        groups = self.adapter.head_groups()
        return allocate(head_scores, neuron_scores, heads, ffn, self.config, groups, exact=True)

    @torch.no_grad()
    def _prune(self, step: int) -> None:
        progress = self.schedule.progress_at(step)
        head_counts, neuron_counts = self._counts(*self._targets(progress))
        head_scores = self._alive_scores(self.state.head_scores, self.gates.heads)
        neuron_scores = self._alive_scores(self.state.neuron_scores, self.gates.neurons)
        for gates, kept in (
            (self.gates.heads, select_top(head_scores, head_counts, self.adapter.head_groups())),
            (self.gates.neurons, select_top(neuron_scores, neuron_counts)),
        ):
            for gate, keep in zip(gates, kept):
                alive = torch.zeros_like(gate, dtype=torch.bool)
                alive[keep] = True
                gate.masked_fill_(~alive, 0.0)
        self.state.history.append({"step": step, "heads": sum(head_counts), "ffn": sum(neuron_counts)})

    # -------------------------------------------------------------- the result

    def kept(self) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
        """Per layer, the heads and neurons whose gates are still open."""
        heads = {i: torch.nonzero(g.detach() > 0).flatten().tolist() for i, g in enumerate(self.gates.heads)}
        neurons = {i: torch.nonzero(g.detach() > 0).flatten().tolist() for i, g in enumerate(self.gates.neurons)}
        return heads, neurons

    def report(self) -> dict:
        """The summary's ``adaptive`` record: settings, the resolved schedule, kept counts per pruning step."""
        schedule = {"start": self.schedule.start, "end": self.schedule.end, "every": self.schedule.every}
        return {**asdict(self.config), "schedule": schedule, "history": self.state.history}


def remove_pruned_units(model: nn.Module, callback: AdaptivePruningCallback) -> list[dict[str, int]]:
    """Cut the units ``callback`` gated off out of ``model`` (the trained model, LoRA merged) and
    remove the gates; returns the new per-layer structure. Until then the gates stay on, so the model
    evaluated after training (also unmerged) is the pruned one."""
    callback.gates.__exit__()
    adapter = get_adapter(model)
    heads, neurons = callback.kept()
    prune_heads(adapter, heads)
    prune_neurons(adapter, neurons)
    return adapter.describe()


def _lora_layers(layer) -> list[LoraLayer]:
    attn, ffn = layer.attention, layer.ffn
    linears = [attn.query, attn.key, attn.value, attn.output, ffn.up, ffn.down, ffn.gate]
    return [linear for linear in linears if isinstance(linear, LoraLayer)]


@torch.no_grad()
def lora_weight_importance(linear: LoraLayer) -> torch.Tensor | None:
    """``|(W + s·B·A) ⊙ ĝ|`` with ``ĝ = s·(∂L/∂B·A + B·∂L/∂A)``, the estimate of the frozen weight's
    gradient from the LoRA factors' gradients (LoRAPrune); None before any gradient."""
    total = None
    for name in linear.active_adapters:
        if name not in linear.lora_A:
            continue
        a, b = linear.lora_A[name].weight, linear.lora_B[name].weight
        if a.grad is None or b.grad is None:
            continue
        scale = linear.scaling[name]
        estimate = scale * (b.grad @ a + b @ a.grad)
        weight = linear.base_layer.weight + scale * (b @ a)
        value = (weight * estimate).abs()
        total = value if total is None else total + value
    return total


def lora_unit_scores(adapter) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, LoRAPrune scores of the heads (query rows, output columns, and K/V rows without
    grouped-query attention) and FFN neurons (up / gate rows, down columns); zeros where a projection
    has no adapter or gradient."""
    heads, neurons = [], []
    for layer in adapter.layers():
        attn, ffn = layer.attention, layer.ffn
        n, d = attn.num_heads, attn.head_dim
        head = torch.zeros(n)
        sources = [(attn.query, 1), (attn.output, 0)]
        if not attn.grouped:
            sources += [(attn.key, 1), (attn.value, 1)]
        for linear, reduce_dim in sources:
            value = lora_weight_importance(linear) if isinstance(linear, LoraLayer) else None
            if value is not None:
                head += value.sum(reduce_dim).view(n, d).sum(1).float().cpu()
        neuron = torch.zeros(ffn.num_neurons)
        for linear, reduce_dim in ((ffn.up, 1), (ffn.gate, 1), (ffn.down, 0)):
            value = lora_weight_importance(linear) if isinstance(linear, LoraLayer) else None
            if value is not None:
                neuron += value.sum(reduce_dim).float().cpu()
        heads.append(head)
        neurons.append(neuron)
    return heads, neurons
