"""One-shot pruning layer by layer with calibration data (SparseGPT, and Wanda per row / matrix / N:M).

The calibration batches run through the embeddings once and stop at the first transformer layer; from
then on each layer in turn (1) runs over the captured inputs to gather its projections' input
statistics, (2) is pruned, (3) runs again to produce the next layer's inputs — so layer i is scored on
what the already-pruned layers before it produce, and only one layer's statistics are in memory.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from prunekit.adapters import get_adapter
from prunekit.devices import model_device, to_device
from prunekit.errors import ConfigError
from prunekit.importance.weights import wanda_scores
from prunekit.pruning.masks import MaskSet
from prunekit.pruning.owl import outlier_ratio, owl_sparsities
from prunekit.pruning.select import monotone, parse_nm, select_layerwise, select_n_m, select_rows
from prunekit.pruning.sparsegpt import sparsegpt_prune

logger = logging.getLogger(__name__)

Inputs = list[tuple[tuple, dict]]  # per calibration batch: a layer's positional and keyword arguments
HESSIAN_ROWS = 1024  # rows of x xᵀ added to a Hessian at a time
HIDDEN_KEYWORDS = ("hidden_states", "hidden_state", "x")  # where a layer takes its input when not positional


class StopForward(Exception):
    """Raised by a hook to end a forward pass early: the rest of it is not needed."""


@torch.no_grad()
def first_layer_inputs(
    model: nn.Module, first_layer: nn.Module, batches: Iterable[dict], device: torch.device | None = None
) -> Inputs:
    """The arguments the first transformer layer is called with, for every calibration batch (moved to
    ``device``, default: where the model's weights are)."""
    captured: Inputs = []

    def grab(_module, args, kwargs):
        captured.append((args, kwargs))
        raise StopForward

    handle = first_layer.register_forward_pre_hook(grab, with_kwargs=True)
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False  # a KV cache passed to every layer would grow on each replay
    try:
        device = device or model_device(model)
        for batch in tqdm(batches, desc="calibration inputs", leave=False):
            try:
                model(**to_device(batch, device))
            except StopForward:
                pass
    finally:
        handle.remove()
        model.config.use_cache = use_cache
    if not captured:
        raise ConfigError("--calibration-samples: no calibration batch was given")
    return captured


def _gather(layer: nn.Module, inputs: Inputs, last: nn.Module, reference: Reference | None = None) -> None:
    """Run ``layer`` over every captured input only as far as ``last`` (statistics' hooks see what they
    need; the rest of the layer is not computed). With a ``reference``, its dense layer first runs as far
    on the matching dense input, before each call."""

    def stop(_module, _inputs, _output):
        raise StopForward

    calls = [(layer, inputs, last)]
    if reference is not None:
        calls.insert(0, (reference.layer, reference.inputs, reference.linear(layer, last)))
    handles = [end.register_forward_hook(stop) for _, _, end in calls]
    try:
        for index in range(len(inputs)):
            for module, arguments, _ in calls:
                args, kwargs = arguments[index]
                try:
                    module(*args, **kwargs)
                except StopForward:
                    pass
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Reference:
    """The dense side of an asymmetric fit (``LayerPruning.fit_to == "dense"``): an unpruned copy of the
    layer being pruned and the dense model's inputs to it."""

    layer: nn.Module | None
    inputs: Inputs
    advance_inputs: bool = True  # false for the last layer: no next layer needs its outputs

    def release(self) -> None:
        """Advance the dense inputs past the dense layer (unless not wanted) and drop the copy, once its
        last statistics are gathered: it is not held through the last group's pruning."""
        if self.advance_inputs:
            advance(self.layer, self.inputs)
        self.layer = None

    def linear(self, pruned_layer: nn.Module, linear: nn.Module) -> nn.Module:
        """The copy's module that corresponds to ``linear`` of ``pruned_layer``."""
        name = next(n for n, m in pruned_layer.named_modules() if m is linear)
        return self.layer.get_submodule(name)

    def counterparts(self, pruned_layer: nn.Module, linears: dict[str, nn.Linear]) -> dict[str, nn.Module]:
        """``linears`` (of ``pruned_layer``) mapped to the copy's modules."""
        return {name: self.linear(pruned_layer, linear) for name, linear in linears.items()}


def advance(layer: nn.Module, inputs: Inputs) -> None:
    """Run ``layer`` over every captured input and replace each input's hidden states by the layer's
    output in place (the next layer's inputs; one copy of the activations lives at a time)."""
    for index, (args, kwargs) in enumerate(inputs):
        output = layer(*args, **kwargs)
        hidden = output[0] if isinstance(output, tuple) else output
        if args:
            inputs[index] = ((hidden, *args[1:]), kwargs)
        else:
            key = next(k for k in HIDDEN_KEYWORDS if k in kwargs)
            inputs[index] = (args, {**kwargs, key: hidden})


class _InputStatistics:
    """Per Linear: the sum of x xᵀ over calibration tokens (SparseGPT's Hessian, ``full``) or of x²
    per input channel (Wanda's squared norms). Linears that read the very same input tensor (Llama's
    q/k/v, gate/up) share one sum: ``shared`` maps each to the Linear that accumulates for it.

    ``reference``: the same Linears in the dense copy of the layer, run on the dense model's inputs just
    before each pruned-side call: the sum of (x_dense − x) xᵀ, the drift of the inputs, is kept beside
    x xᵀ (``take`` returns both). Summed directly, not as x_dense xᵀ − x xᵀ: no cancellation, so float32
    does (half the memory of the widest n x n)."""

    def __init__(
        self,
        linears: dict[str, nn.Linear],
        full: bool,
        shared: dict[str, str],
        reference: dict[str, nn.Linear] | None = None,
    ):
        owners = {name: linear for name, linear in linears.items() if name not in shared}
        shape = (lambda n: (n, n)) if full else (lambda n: (n,))
        self.sums = {  # on the layer's device: a GPU accumulates its own activations
            name: torch.zeros(shape(linear.in_features), dtype=torch.float64, device=linear.weight.device)
            for name, linear in owners.items()
        }
        drift_owners = self.sums if reference else {}  # the published fit and Wanda allocate nothing more
        self.drifts = {name: torch.zeros_like(total, dtype=torch.float32) for name, total in drift_owners.items()}
        self.dense: dict[str, torch.Tensor] = {}  # the dense side's input of the current call, per owner
        self.tokens = dict.fromkeys(owners, 0)
        self.users = {owner: 1 + sum(1 for of in shared.values() if of == owner) for owner in owners}
        self.full, self.shared = full, shared
        self.handles = [linear.register_forward_hook(self._hook(name)) for name, linear in owners.items()]
        for name in self.drifts:
            self.handles.append(reference[name].register_forward_hook(self._keep_dense(name)))

    def _keep_dense(self, name: str):
        def keep(_module, inputs, _output):
            self.dense[name] = _rows(inputs[0])

        return keep

    def _hook(self, name: str):
        def accumulate(_module, inputs, _output):
            x = _rows(inputs[0])
            total = self.sums[name]
            if not self.full:
                total.add_((x * x).sum(0))
            drift = self.dense.pop(name) - x if self.drifts else None  # not in place: it may be a layer input
            for start in range(0, total.shape[0] if self.full else 0, HESSIAN_ROWS):  # no n x n temporary
                total[start : start + HESSIAN_ROWS].add_(x[:, start : start + HESSIAN_ROWS].T @ x)
                if drift is not None:
                    self.drifts[name][start : start + HESSIAN_ROWS].add_(drift[:, start : start + HESSIAN_ROWS].T @ x)
            self.tokens[name] += x.shape[0]

        return accumulate

    def of(self, name: str) -> torch.Tensor:
        """The mean statistic of Linear ``name`` over the calibration tokens."""
        owner = self.shared.get(name, name)
        return self.sums[owner] / max(self.tokens[owner], 1)

    def take(self, name: str) -> list[torch.Tensor | None]:
        """``[of(name), the mean of (x_dense − x) xᵀ or None]``. The last Linear that shares the sums gets them
        divided in place and dropped from here: a Hessian is n x n float64, and the widest one must not
        be held twice."""
        owner = self.shared.get(name, name)
        self.users[owner] -= 1
        tokens, last = max(self.tokens[owner], 1), not self.users[owner]
        if not last:
            return [None if total is None else total / tokens for total in (self.sums[owner], self.drifts.get(owner))]
        return [
            None if total is None else total.div_(tokens)
            for total in (self.sums.pop(owner), self.drifts.pop(owner, None))
        ]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A Linear's input as (tokens, features) in float32 (float32 products, float64 sums)."""
    return x.detach().reshape(-1, x.shape[-1]).float()


@torch.no_grad()
def _input_groups(layer: nn.Module, linears: dict[str, nn.Linear], args: tuple, kwargs: dict) -> list[list[str]]:
    """``linears`` grouped by the input tensor they read, in the order one call of ``layer`` first reaches
    them (Llama: q/k/v, o, gate/up, down). The tensors are held while the call runs, so an id is never
    reused by another tensor."""
    groups: dict[int, tuple[torch.Tensor, list[str]]] = {}

    def record(name: str):
        def hook(_module, inputs, _output):
            group = groups.setdefault(id(inputs[0]), (inputs[0], []))[1]
            if name not in group:
                group.append(name)

        return hook

    handles = [linear.register_forward_hook(record(name)) for name, linear in linears.items()]
    try:
        layer(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return [names for _, names in groups.values()]


def _shared(groups: list[list[str]]) -> dict[str, str]:
    """``{linear: the first linear of its group}``: where ``_InputStatistics`` takes its shared sum from."""
    return {name: group[0] for group in groups for name in group[1:]}


def layer_targets(model: nn.Module, targets: dict[str, nn.Module]) -> list[dict[str, nn.Linear]]:
    """The targets (``{weight name: module}``) grouped by transformer layer; all must be Linears inside one."""
    prefixes = get_adapter(model).layer_prefixes()
    groups = [{n: m for n, m in targets.items() if n.startswith(prefix)} for prefix in prefixes]
    outside = [n for n, m in targets.items() if not isinstance(m, nn.Linear) or not any(n in g for g in groups)]
    if outside:
        raise ConfigError(
            f"--targets: layer-by-layer pruning (sparsegpt, wanda) works on the Linear projections inside the "
            f"transformer layers; these are not: {', '.join(outside[:4])}"
        )
    return groups


@dataclass(frozen=True)
class LayerPruning:
    """How each transformer layer is pruned (see ``prune_sequentially``): ``importance`` ``magnitude``
    (the layer's own weights, no data), ``wanda`` or ``sparsegpt``; ``nm`` an N:M pattern or None."""

    importance: str
    scope: str
    nm: tuple[int, int] | None = None
    block_size: int = 128
    dampening: float = 0.01
    sequential: bool = False
    fit_to: str = "dense"

    @property
    def calibrated(self) -> bool:
        return self.importance != "magnitude"

    @property
    def asymmetric(self) -> bool:
        """Each matrix refit to the dense model's outputs (needs the dense side's activations too)."""
        return self.importance == "sparsegpt" and self.fit_to == "dense"


@torch.no_grad()
def prune_layer(
    layer: nn.Module,
    group: dict[str, nn.Linear],
    inputs: Inputs | None,
    sparsity: float,
    how: LayerPruning,
    current: Callable[[str], torch.Tensor | None] = lambda name: None,
    reference: Reference | None = None,
) -> dict[str, torch.Tensor]:
    """Prune ``group`` (``{weight name: Linear}``, the targets inside ``layer``) in place; returns its
    masks (each merged with ``current(name)``, the mask it had). A calibrated method gathers its input
    statistics by running ``layer`` over ``inputs``; ``layer`` is not advanced here. SparseGPT with a
    ``reference`` fits each matrix to the dense layer's outputs on the dense inputs."""
    masks: dict[str, torch.Tensor] = {}
    if not group:
        return masks
    if not how.calibrated:
        for key, module in group.items():
            masks[key] = _selected(key, module.weight.detach().abs(), sparsity, how, current(key))
            module.weight.mul_(masks[key])
        return masks
    linears = {name.removesuffix(".weight"): module for name, module in group.items()}
    in_order = _input_groups(layer, linears, *inputs[0])
    parts = in_order if how.sequential else [[name for names in in_order for name in names]]
    for part in parts:
        own = {name: linears[name] for name in part}
        statistics = _InputStatistics(own, how.importance == "sparsegpt",
                                      _shared([names for names in in_order if names[0] in part]),
                                      reference and reference.counterparts(layer, own))  # fmt: skip
        try:
            _gather(layer, inputs, linears[part[-1]], reference)
        finally:
            statistics.close()
        if reference is not None and part is parts[-1]:
            reference.release()
        for name in part:
            module, key = linears[name], f"{name}.weight"
            old = current(key)
            if how.importance == "sparsegpt":
                taken = statistics.take(name)  # popped into the call: SparseGPT frees each once used
                masks[key] = sparsegpt_prune(module.weight, taken.pop(0), sparsity=sparsity, pattern=how.nm,
                                             block_size=how.block_size, dampening=how.dampening, keep=old,
                                             overwrite_hessian=True, input_drift=taken.pop())  # fmt: skip
            else:  # Wanda's norms: the scale of a mean does not change any ranking
                norms = statistics.take(name)[0].sqrt().float()
                scores = wanda_scores({key: module.weight}, {key: norms})[key]()
                masks[key] = _selected(key, scores, sparsity, how, old)
                module.weight.mul_(masks[key])
    return masks


@torch.no_grad()
def prune_and_advance(
    layer: nn.Module,
    group: dict[str, nn.Linear],
    inputs: Inputs | None,
    dense_inputs: Inputs | None,
    sparsity: float,
    how: LayerPruning,
    current: Callable[[str], torch.Tensor | None] = lambda name: None,
    advance_inputs: bool = True,
) -> dict[str, torch.Tensor]:
    """``prune_layer``, then (``advance_inputs``) run the pruned layer over ``inputs`` and, for an
    asymmetric fit, the dense layer over ``dense_inputs`` (in place: the next layer's inputs; the dense
    copy advances them inside ``prune_layer``, as soon as it is done with it)."""
    reference = Reference(copy.deepcopy(layer), dense_inputs, advance_inputs) if how.asymmetric and group else None
    masks = prune_layer(layer, group, inputs, sparsity, how, current, reference)
    if advance_inputs and how.calibrated:
        advance(layer, inputs)
        if how.asymmetric and reference is None:  # no targets here: the layer is still the dense one
            advance(layer, dense_inputs)
    return masks


@torch.no_grad()
def prune_sequentially(
    model: nn.Module,
    targets: dict[str, nn.Module],
    batches: Iterable[dict],
    *,
    importance: str,
    sparsity: float,
    scope: str,
    pattern: str | None,
    block_size: int = 128,
    dampening: float = 0.01,
    owl: tuple[float, float] | None = None,
    sequential: bool = False,
    fit_to: str = "dense",
    current: MaskSet | None = None,
) -> MaskSet:
    """Prune ``targets`` of ``model`` in place, layer by layer; returns the masks (merged with ``current``).

    ``importance``: ``sparsegpt`` (weights of each matrix updated to reconstruct its outputs) or
    ``wanda`` (|W|·‖X‖, selected per row, per matrix or N:M). ``scope`` ``row`` / ``layer``. ``owl``
    (threshold, spread): each layer's sparsity set by its outlier ratio on the dense model, averaging
    to ``sparsity`` (``prunekit.pruning.owl``); without it every layer gets ``sparsity``. ``sequential``:
    inside each layer too, each group of projections that read one input (q/k/v, o, gate/up, down) is
    scored on what the groups before it, already pruned, produce (SparseGPT's "true sequential"); else
    all of a layer's projections are scored from one pass over its input. ``fit_to`` (SparseGPT):
    ``pruned`` refits each matrix to reproduce its dense weights' outputs on the pruned model's inputs;
    ``dense`` to reproduce the dense model's outputs, so the error of the layers before is corrected
    too (GPTAQ's asymmetric calibration, Li et al. 2025; a dense copy of each layer and of the
    activations is kept alongside).
    """
    how = LayerPruning(importance, scope, parse_nm(pattern) if pattern is not None else None, block_size, dampening,
                       sequential, fit_to)  # fmt: skip
    was_training = model.training
    model.eval()
    layers = get_adapter(model).layer_list()
    groups = layer_targets(model, targets)
    inputs = first_layer_inputs(model, layers[0], batches)
    dense_inputs = list(inputs) if how.asymmetric else None  # entries are replaced, never the tensors changed
    sparsities = [sparsity] * len(layers)
    if owl is not None:
        sparsities = owl_layer_sparsities(layers, groups, inputs, sparsity, *owl)
    old = (lambda name: None) if current is None else current.masks.get
    masks: dict[str, torch.Tensor] = {}
    progress = tqdm(list(zip(layers, groups, sparsities)), desc=f"{importance} layer by layer", leave=False)
    for layer, group, layer_sparsity in progress:
        masks.update(prune_and_advance(layer, group, inputs, dense_inputs, layer_sparsity, how, old))
    model.train(was_training)
    new = MaskSet(masks)
    return current.merged_with(new) if current is not None else new


def owl_layer_sparsities(
    layers: list[nn.Module],
    groups: list[dict[str, nn.Linear]],
    inputs: Inputs,
    target: float,
    threshold: float,
    spread: float,
    resident: Callable[[int], AbstractContextManager] = lambda index: nullcontext(),
) -> list[float]:
    """OWL's layer sparsities: a pass over the dense layers (on a copy of the inputs list; the captured
    tensors themselves are never changed) scores each layer's targets by Wanda's |W|·‖X‖ and counts its
    outliers. Layers without targets keep ``target`` and take no part in the mean. ``resident(index)``:
    a context in which layer ``index`` has its weights (a streamed pass loads and frees each)."""
    inputs = list(inputs)
    ratios: dict[int, float] = {}
    for index, (layer, group) in enumerate(zip(layers, groups)):
        with resident(index):
            ratio = _outlier_ratio(layer, group, inputs, threshold)
        if ratio is not None:
            ratios[index] = ratio
    chosen = dict(zip(ratios, owl_sparsities(list(ratios.values()), target, spread)))
    sparsities = [chosen.get(index, target) for index in range(len(layers))]
    logger.info("OWL outlier ratios %s -> layer sparsities %s", [round(r, 4) for r in ratios.values()],
                [round(s, 3) for s in sparsities])  # fmt: skip
    return sparsities


def _outlier_ratio(layer: nn.Module, group: dict[str, nn.Linear], inputs: Inputs, threshold: float) -> float | None:
    """The share of ``group``'s weights whose Wanda score is an outlier (None without targets); advances
    ``inputs`` past ``layer``."""
    statistics = None
    if group:
        linears = {name.removesuffix(".weight"): module for name, module in group.items()}
        statistics = _InputStatistics(linears, False, _shared(_input_groups(layer, linears, *inputs[0])))
    try:
        advance(layer, inputs)
    finally:
        if statistics is not None:
            statistics.close()
    if statistics is None:
        return None
    scores = (
        module.weight.detach().abs().float() * statistics.of(name.removesuffix(".weight")).sqrt().float()
        for name, module in group.items()
    )
    return outlier_ratio(scores, threshold)


def _selected(
    name: str, scores: torch.Tensor, sparsity: float, how: LayerPruning, old: torch.Tensor | None
) -> torch.Tensor:
    """The keep-mask of one matrix from its scores: N:M, per row or per matrix; never keeps what ``old``
    pruned."""
    scores = monotone({name: lambda: scores}, None if old is None else {name: old})[name]()
    if how.nm is not None:
        keep = select_n_m(scores, *how.nm, name)
    elif how.scope == "row":
        keep = select_rows(scores, sparsity)
    else:
        keep = select_layerwise({name: lambda: scores}, sparsity)[name]
    return keep if old is None else keep & old
