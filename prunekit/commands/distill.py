"""``prunekit distill``: the ``distill`` stage from the command line (see ``prunekit.stages.train``): a
student (pruned, or built from the teacher's layers) trained against a teacher."""

from __future__ import annotations

import argparse

from prunekit.commands.common import (
    add_checkpoint_dir,
    add_output_arguments,
    preflight,
    print_result,
    run_training_stage,
)
from prunekit.errors import ConfigError
from prunekit.options import add_config_arguments, config_from_args
from prunekit.stages.train import DistillStageConfig


def add_parser(commands) -> None:
    p = commands.add_parser("distill", help="knowledge distillation: a student learns from a fine-tuned teacher")
    p.add_argument("--student", help="student model folder (e.g. a pruned teacher), same tokenizer")
    add_output_arguments(p)
    add_config_arguments(p, DistillStageConfig)
    add_checkpoint_dir(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    if args.teacher is None:
        raise ConfigError("--teacher: required (the fine-tuned teacher model folder)")
    if (args.student is None) == (args.student_layers is None):
        raise ConfigError("pass --student FOLDER or --student-layers K (one of them)")
    preflight(args, {"--teacher": args.teacher, "--student": args.student})
    config = config_from_args(DistillStageConfig, args)
    summary = run_training_stage("distill", args, config, args.student)
    if summary:
        metric = summary["main_metric"]
        print_result(summary, f"teacher {metric}: {summary['teacher_metrics'][metric]:.4f}; saved to {args.out}")
    return summary
