"""``prunekit lottery``: iterative magnitude pruning with rewinding, controls, resumable rounds."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

from prunekit.commands.common import (
    add_data_arguments,
    add_output_arguments,
    add_training_arguments,
    data_kwargs,
    finetune_config,
    preflight,
)
from prunekit.errors import ConfigError
from prunekit.methods.lottery import LotteryConfig
from prunekit.options import add_config_arguments, config_from_args, positive_int

CONFIG_FILE = "lottery_config.json"
TICKET_DIR = "ticket"


def add_parser(commands) -> None:
    p = commands.add_parser("lottery", help="lottery-ticket search: prune, rewind, retrain for R rounds, with controls")
    p.add_argument("--model", default="minilm", help="model folder, 'minilm' (packaged, default), or hub id")
    add_output_arguments(p)
    add_config_arguments(p, LotteryConfig)
    p.add_argument("--steps-per-round", type=positive_int, help="optimizer steps per training (default: --epochs)")
    p.add_argument("--no-controls", action="store_true", help="skip the random-mask and one-shot controls")
    p.add_argument(
        "--lora-rank",
        type=positive_int,
        help="train each round with LoRA of this rank (PEFT) and merge it into the weights; default: full training",
    )
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out after its last round")
    add_data_arguments(p, with_train=True)
    add_training_arguments(p, with_max_steps=False)  # --steps-per-round
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from transformers import set_seed

    from prunekit.data import load_task_data
    from prunekit.evaluation import evaluate_model, make_summary, model_size
    from prunekit.io import atomic_output_dir, replace_dir, staging_dir, work_dir, write_json_atomic
    from prunekit.methods.gradual import SparsityCallback
    from prunekit.methods.lottery import LotteryRun, load_round_weights
    from prunekit.models import load_model
    from prunekit.pruning.masks import MaskSet
    from prunekit.report import plot_lottery
    from prunekit.training import finetune
    from prunekit.training.lora import finetune_lora_merged, lora_config

    started = time.perf_counter()
    config = config_from_args(LotteryConfig, args, controls=not args.no_controls, seed=args.seed)
    if args.lora_rank and config.rewind_step:
        raise ConfigError("--lora-rank: late rewinding (--rewind step:K) needs full training; use --rewind init")
    out = Path(args.out)
    own_result = args.resume and (out / CONFIG_FILE).is_file()  # --resume may replace its own earlier --out
    folder = preflight(args, {"--model": args.model}, replaces_out=own_result)["--model"]
    data = load_task_data(args.data, max_train_samples=args.max_train_samples, seed=args.seed, **data_kwargs(args))
    training = finetune_config(args, train_size=len(data.train), max_steps=args.steps_per_round)
    settings = {
        **asdict(config),
        **asdict(training),
        "model": args.model,
        "data": args.data,
        "max_train_samples": args.max_train_samples,
        "lora_rank": args.lora_rank,
    }
    set_seed(args.seed)  # before the classifier head is initialised: θ0 is reproducible
    model, tokenizer = load_model(args.model, data.task)
    input_masks = MaskSet.load(folder, model)
    # Rounds are written to a staging folder beside --out, which replaces --out only once all is done.
    staging = staging_dir(out, settings, CONFIG_FILE, args.resume, args.overwrite, may_change=("rounds",))

    def train(model, masks, callbacks) -> None:
        with work_dir("lottery") as scratch:
            if args.lora_rank is None:
                hold = SparsityCallback(masks)
                finetune(model, tokenizer, data.train, data.task, training, scratch, [hold, *callbacks])
            else:  # the frozen base keeps its zeros; the masked LoRA update adds none
                lora = lora_config(model, args.lora_rank)
                finetune_lora_merged(model, tokenizer, data.train, data.task, training, scratch, lora, masks=masks)

    def evaluate(model) -> float:
        metrics = evaluate_model(model, tokenizer, data.eval, data.task, max_length=args.max_length, progress=False)
        return metrics[data.task.main_metric]

    search = LotteryRun(model, config, staging, train, evaluate, tokenizer, input_masks)
    rounds = [asdict(r) for r in search.run(resume=args.resume)]
    plot_lottery(rounds, data.task.main_metric, staging / "lottery.png", config.tolerance)

    winner = search.winning_round()
    ticket = None
    if winner is not None:
        load_round_weights(model, search.round_dir(winner.round))
        masks = MaskSet.load(search.round_dir(winner.round), model)
        with atomic_output_dir(staging / TICKET_DIR, overwrite=True) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            masks.save(tmp)
            ticket_summary = make_summary(
                "lottery-ticket",
                args.model,
                data.task.name,
                metrics={data.task.main_metric: winner.ticket},
                main_metric=data.task.main_metric,
                round=winner.round,
                **model_size(model, tmp),
                **masks.report(),
            )
            write_json_atomic(Path(tmp) / "summary.json", ticket_summary)
        ticket = {"round": winner.round, "sparsity": winner.sparsity, "path": str(out / TICKET_DIR)}
    summary = make_summary(
        "lottery",
        args.model,
        data.task.name,
        main_metric=data.task.main_metric,
        dense=rounds[0]["ticket"],
        rounds=rounds,
        winning_ticket=ticket,
        config=asdict(config),
        train={"samples": len(data.train), **asdict(training)},
        eval_samples=len(data.eval),
        search_seconds=round(time.perf_counter() - started, 1),
    )
    write_json_atomic(staging / "summary.json", summary)
    replace_dir(staging, out)
    _print_table(summary)
    return summary


def _print_table(summary: dict) -> None:
    metric = summary["main_metric"]
    print(f"lottery: {summary['model']} on {summary['task']} ({metric}; dense {summary['dense']:.4f})")
    print(f"  {'round':>5} {'sparsity':>9} {'ticket':>8} {'random':>8} {'one-shot':>9}")

    def show(value: float | None) -> str:
        return f"{value:.4f}" if value is not None else "—"

    for r in summary["rounds"]:
        print(
            f"  {r['round']:>5} {r['sparsity']:>9.4f} {show(r['ticket']):>8} "
            f"{show(r['random_mask']):>8} {show(r['one_shot']):>9}"
        )
    ticket = summary["winning_ticket"]
    if ticket:
        print(f"winning ticket: round {ticket['round']} at {ticket['sparsity']:.1%} sparsity -> {ticket['path']}")
    else:
        print("no round within the tolerance of dense: no ticket exported")
