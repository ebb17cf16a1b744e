"""Lottery-ticket pruning: iterative magnitude pruning with weight rewinding, and its controls.

Round 0 trains the dense model from θ0 (the pretrained weights with a freshly initialised head).
Round r ≥ 1 prunes P of the *remaining* weights by the magnitude of the weights trained in round
r − 1 (masks only grow, so sparsity after round r is ``1 − (1 − P)^r``), rewinds every surviving
weight to θ0 — the pretrained weights, which Chen et al. (2020) found right for BERT — or to θK (the
weights after K steps of round 0, "late rewinding"), and trains again with the mask held.

Controls per round, at the ticket's sparsity: a random mask with the ticket's per-matrix sparsity,
rewound and trained the same way; and one-shot magnitude pruning of the dense trained model,
fine-tuned without rewinding. If the ticket does not beat the random mask, its mask is no ticket.

Everything a round produces is written to ``DIR/round-N/`` in one atomic rename — a model folder
(config, weights, tokenizer, masks) that ``prunekit evaluate`` loads, plus ``metrics.json`` — so a
killed run resumes after its last finished round and loses nothing. A model whose input already had
masks keeps them: they are held in every round and only ever grow.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedTokenizerBase, TrainerCallback

from prunekit.errors import ConfigError, ModelError
from prunekit.io import atomic_output_dir, write_json_atomic
from prunekit.methods.magnitude import MagnitudeConfig, compute_masks
from prunekit.options import check_options, non_negative, option, positive_int, real, same_option
from prunekit.pruning.masks import MaskSet
from prunekit.weights import load_state_dict_strict

REWIND_FILE = "rewind.safetensors"
WEIGHTS_FILE = "model.safetensors"  # round-N/ is a save_pretrained folder
LEGACY_WEIGHTS_FILE = "weights.safetensors"  # bare weights of runs made before rounds were model folders
METRICS_FILE = "metrics.json"


def load_round_weights(model: nn.Module, folder: Path) -> None:
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        path = folder / LEGACY_WEIGHTS_FILE
    try:
        load_state_dict_strict(model, load_file(str(path)))
    except Exception as err:  # truncated file, another model's weights
        raise ModelError(f"{path}: cannot load these weights into the model ({err})") from None


@dataclass
class LotteryConfig:
    """Iterative magnitude pruning with rewinding; each ``option`` field is also a ``prunekit lottery`` flag."""

    rounds: int = option(5, "pruning rounds after the dense round", parse=positive_int)
    prune_per_round: float = option(
        0.2, "fraction of the remaining weights pruned per round", parse=real(0, 1, low_open=True, high_open=True)
    )
    rewind: str = option("init", "'init' (pretrained θ0, default) or 'step:K' (θ after K steps)")
    scope: str | None = same_option(MagnitudeConfig, "scope")
    tolerance: float = option(0.01, "a winning ticket is within this of dense", parse=non_negative)
    controls: bool = True  # the random-mask and one-shot controls (--no-controls)
    seed: int = 42  # the training --seed

    def __post_init__(self) -> None:
        check_options(self)
        self.scope = MagnitudeConfig(scope=self.scope).scope  # None: magnitude's own (global)
        _ = self.rewind_step  # validates --rewind

    @property
    def rewind_step(self) -> int:
        """0 for θ0, K for ``step:K``."""
        if self.rewind == "init":
            return 0
        match = re.fullmatch(r"step:(\d+)", self.rewind)
        if not match or int(match.group(1)) < 1:
            raise ConfigError(f"--rewind {self.rewind}: expected 'init' or 'step:K' with K >= 1")
        return int(match.group(1))

    def sparsity_after(self, round_index: int) -> float:
        return 1.0 - (1.0 - self.prune_per_round) ** round_index

    def magnitude(self, round_index: int) -> MagnitudeConfig:
        return MagnitudeConfig(sparsity=self.sparsity_after(round_index), scope=self.scope)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of every weight (the state a rewind goes back to)."""
    return {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}


@torch.no_grad()
def rewind(model: nn.Module, state: dict[str, torch.Tensor], masks: MaskSet | None) -> None:
    """Every weight back to ``state``; then the pruned ones to zero."""
    model.load_state_dict(state)
    if masks is not None:
        masks.apply(model)


def random_masks_like(masks: MaskSet, seed: int) -> MaskSet:
    """Random masks pruning exactly as many weights in each matrix as ``masks`` does."""
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for name, mask in masks.masks.items():
        pruned = int((~mask).sum())
        keep = torch.ones(mask.numel(), dtype=torch.bool)
        keep[torch.randperm(mask.numel(), generator=generator)[:pruned]] = False
        result[name] = keep.view_as(mask)
    return MaskSet(result)


class CaptureAtStep(TrainerCallback):
    """Keeps a snapshot of the model after optimizer step ``step`` (θK for late rewinding)."""

    def __init__(self, step: int):
        self.step = step
        self.state: dict[str, torch.Tensor] | None = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step and self.state is None:
            self.state = snapshot(model)


Train = Callable[[nn.Module, MaskSet | None, list[TrainerCallback]], None]
Evaluate = Callable[[nn.Module], float]


@dataclass
class RoundResult:
    round: int
    sparsity: float
    ticket: float
    random_mask: float | None = None
    one_shot: float | None = None


class LotteryRun:
    """The rounds of one lottery-ticket search, checkpointed under ``out`` and resumable."""

    def __init__(
        self,
        model: nn.Module,
        config: LotteryConfig,
        out: str | Path,
        train: Train,
        evaluate: Evaluate,
        tokenizer: PreTrainedTokenizerBase | None = None,
        masks: MaskSet | None = None,
    ):
        self.model, self.config, self.out = model, config, Path(out)
        self.train, self.evaluate = train, evaluate
        self.tokenizer = tokenizer  # saved into each round folder, so it is a loadable model folder
        self.results: list[RoundResult] = []
        self.masks = masks  # the input model's own masks, if any

    def round_dir(self, index: int) -> Path:
        return self.out / f"round-{index}"

    def finished_rounds(self) -> list[int]:
        return sorted(
            int(path.name.split("-")[1])
            for path in self.out.glob("round-*")
            if re.fullmatch(r"round-\d+", path.name) and (path / METRICS_FILE).is_file()
        )

    def run(self, resume: bool = False) -> list[RoundResult]:
        self.out.mkdir(parents=True, exist_ok=True)
        done = self.finished_rounds() if resume else []
        if done:
            self._restore(done[-1])
        else:
            self._dense_round()
        for index in range(len(self.results), self.config.rounds + 1):
            self._round(index)
        return self.results

    def _dense_round(self) -> None:
        theta0 = snapshot(self.model)
        capture = CaptureAtStep(self.config.rewind_step) if self.config.rewind_step else None
        self.train(self.model, self.masks, [capture] if capture else [])
        rewind_state = theta0
        if capture is not None:
            if capture.state is None:
                raise ConfigError(f"--rewind {self.config.rewind}: round 0 ended before step {capture.step}")
            rewind_state = capture.state
        save_file(rewind_state, str(self.out / REWIND_FILE))
        self._save_round(RoundResult(0, 0.0, self.evaluate(self.model)))

    def _round(self, index: int) -> None:
        config, rewind_state = self.config, load_file(str(self.out / REWIND_FILE))
        self.masks = compute_masks(self.model, config.magnitude(index), current=self.masks)
        result = RoundResult(index, self.masks.sparsity(), 0.0)
        if config.controls:
            result.random_mask = self._train_control(rewind_state, random_masks_like(self.masks, config.seed + index))
            dense = copy.deepcopy(self.model)
            load_round_weights(dense, self.round_dir(0))
            one_shot = compute_masks(dense, config.magnitude(index), current=self._input_masks())
            result.one_shot = self._train_control(None, one_shot, dense)
        rewind(self.model, rewind_state, self.masks)
        self.train(self.model, self.masks, [])
        result.ticket = self.evaluate(self.model)
        self._save_round(result)

    def _train_control(self, state: dict | None, masks: MaskSet, model: nn.Module | None = None) -> float:
        model = model if model is not None else copy.deepcopy(self.model)
        if state is not None:
            rewind(model, state, masks)
        else:
            masks.apply(model)
        self.train(model, masks, [])
        return self.evaluate(model)

    def _save_round(self, result: RoundResult) -> None:
        with atomic_output_dir(self.round_dir(result.round), overwrite=True) as tmp:
            self.model.save_pretrained(tmp)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(tmp)
            if self.masks is not None:
                self.masks.save(tmp)
            write_json_atomic(tmp / METRICS_FILE, asdict(result))  # last: marks the round finished
        self.results.append(result)
        print(json.dumps(asdict(result)), flush=True)

    def _restore(self, last: int) -> None:
        if not (self.out / REWIND_FILE).is_file():
            raise ModelError(f"--resume: {self.out / REWIND_FILE} is missing; start again without --resume")
        for index in range(last + 1):
            self.results.append(RoundResult(**json.loads((self.round_dir(index) / METRICS_FILE).read_text())))
        load_round_weights(self.model, self.round_dir(last))
        self.masks = MaskSet.load(self.round_dir(last), self.model)

    def _input_masks(self) -> MaskSet | None:
        """The masks the dense round trained with (the input model's own, if any)."""
        return MaskSet.load(self.round_dir(0), self.model)

    def winning_round(self) -> RoundResult | None:
        """The sparsest round whose ticket is within ``tolerance`` of the dense metric."""
        dense = self.results[0].ticket
        winners = [r for r in self.results[1:] if r.ticket >= dense - self.config.tolerance]
        return max(winners, key=lambda r: r.sparsity) if winners else None
