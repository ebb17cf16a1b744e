"""``prunekit distill``: train a student (pruned, or built from the teacher's layers) against a teacher."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from prunekit.commands.common import (
    add_data_arguments,
    add_lora_arguments,
    add_output_arguments,
    add_training_arguments,
    data_kwargs,
    finetune_config,
    load_text_training_data,
    lora_settings,
    preflight,
    print_result,
    training_dir,
)
from prunekit.errors import ConfigError
from prunekit.evaluation.summary import evaluation_fields
from prunekit.options import add_config_arguments, config_from_args, positive_int
from prunekit.training.distill_config import DistillConfig


def add_parser(commands) -> None:
    p = commands.add_parser("distill", help="knowledge distillation: a student learns from a fine-tuned teacher")
    p.add_argument("--teacher", required=True, help="fine-tuned teacher model folder")
    student = p.add_mutually_exclusive_group(required=True)
    student.add_argument("--student", help="student model folder (e.g. a pruned teacher), same tokenizer")
    student.add_argument(
        "--student-layers", type=positive_int, help="build the student from the teacher: keep K evenly spaced layers"
    )
    add_output_arguments(p)
    add_config_arguments(p.add_argument_group("distillation loss"), DistillConfig)
    add_data_arguments(p, with_train=True)
    add_training_arguments(p)
    add_lora_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from transformers import set_seed

    from prunekit.data import load_task_data
    from prunekit.data.text import is_text_corpus
    from prunekit.evaluation import make_summary, model_size, peak_memory_mb
    from prunekit.io import atomic_output_dir, write_json_atomic
    from prunekit.methods.stage import save_stage, train_stage
    from prunekit.models import load_model, task_label_names
    from prunekit.pruning.masks import MaskSet
    from prunekit.training.distill import (
        check_teacher,
        masks_of_kept_layers,
        student_from_teacher,
    )

    folders = preflight(args, {"--teacher": args.teacher, "--student": args.student})
    distill_config = config_from_args(DistillConfig, args)
    teacher, tokenizer = load_model(args.teacher, flag="--teacher")
    if is_text_corpus(args.data, args.train_file, args.eval_file):
        data, train_size = load_text_training_data(args, folders["--teacher"], flag="--teacher")
    else:
        regression = args.regression or teacher.config.problem_type == "regression" or None
        data = load_task_data(
            args.data,
            max_train_samples=args.max_train_samples,
            seed=args.seed,
            label_names=task_label_names(teacher.config),
            **{**data_kwargs(args), "regression": regression},
        )
        train_size = len(data.train)
    config = finetune_config(args, train_size=train_size)
    set_seed(args.seed)
    if args.student_layers:
        student, kept = student_from_teacher(teacher, args.student_layers)
        masks = masks_of_kept_layers(MaskSet.load(folders["--teacher"], teacher), teacher, student, kept)
        origin = {"student_from_teacher_layers": kept}
    else:
        student, student_tokenizer = load_model(args.student, flag="--student")
        _check_same_tokenizer(tokenizer, student_tokenizer, args.student)
        if student.config.num_labels != teacher.config.num_labels and not data.task.causal_lm:
            raise ConfigError(
                f"--student {args.student}: {student.config.num_labels} labels, the teacher has "
                f"{teacher.config.num_labels}"
            )
        masks = MaskSet.load(folders["--student"], student)  # a sparse student stays sparse
        origin = {}
    check_teacher(teacher, student, data.task, f"--teacher {args.teacher}")

    def evaluate(model) -> dict:
        return evaluation_fields(args, model, tokenizer, data)

    with training_dir(args, "distill") as scratch:
        result = train_stage(
            student,
            tokenizer,
            data,
            config,
            scratch,
            lora=lora_settings(args, student),
            masks=masks,
            teacher=teacher,
            kd=distill_config,
            evaluate=lambda model: evaluate(model)["metrics"],
        )
        if not result.is_main:
            return {}
        teacher_metrics = evaluate(teacher)["metrics"]
        with atomic_output_dir(args.out, args.overwrite) as tmp:
            student, masks = result.model, result.masks
            evaluation = evaluate(student)
            save_stage(result, tokenizer, tmp)
            summary = make_summary(
                "distill",
                args.student or f"{args.teacher} ({args.student_layers} layers)",
                data.task.name,
                **evaluation,
                **model_size(student, tmp),
                **(masks.report() if masks is not None else {}),
                teacher=args.teacher,
                teacher_metrics=teacher_metrics,
                distill={k: v for k, v in asdict(distill_config).items() if k != "pairs"}
                | {"layer_pairs": distill_config.pairs},
                **origin,
                train={
                    "samples": train_size,  # text corpus: blocks of max_length tokens
                    **asdict(config),
                    **result.train_record(),
                    "peak_rss_mb": peak_memory_mb(),
                },
                **({"lora": {**result.lora, "targets": args.lora_targets}} if result.lora else {}),
            )
            write_json_atomic(Path(tmp) / "summary.json", summary)
    print_result(
        summary, f"teacher {data.task.main_metric}: {teacher_metrics[data.task.main_metric]:.4f}; saved to {args.out}"
    )
    return summary


def _check_same_tokenizer(teacher_tokenizer, student_tokenizer, student: str) -> None:
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise ConfigError(
            f"--student {student}: its tokenizer differs from the teacher's (e.g. after vocabulary pruning); "
            "distillation feeds both the same token ids, so they need the same vocabulary"
        )
