"""``prunekit merge``: fold a LoRA adapter (PEFT format) into its base model's weights.

The base's masks (if it is a pruned model) are applied after merging, so a sparse base stays exactly
as sparse. With ``--data`` the metric is reported before and after the merge (they must agree).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prunekit.commands.common import (
    add_data_arguments,
    add_output_arguments,
    load_data_for_model,
    preflight,
    print_result,
)
from prunekit.errors import ModelError, first_line
from prunekit.evaluation.summary import evaluation_fields


def add_parser(commands) -> None:
    p = commands.add_parser("merge", help="merge a LoRA adapter into its base model (masks of the base kept)")
    p.add_argument("--model", required=True, help="the base model the adapter was trained on (folder or alias)")
    p.add_argument("--adapter", required=True, help="PEFT adapter folder, e.g. DIR/adapter of `finetune --lora`")
    add_output_arguments(p)
    add_data_arguments(p, with_train=False)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from peft import PeftModel

    from prunekit.evaluation import make_summary, model_size
    from prunekit.io import atomic_output_dir, write_json_atomic
    from prunekit.models import is_causal_lm, load_config, load_tokenizer, load_weights, model_class
    from prunekit.pruning.masks import MaskSet
    from prunekit.training.lora import merge_lora

    adapter = Path(args.adapter)
    folders = preflight(args, {"--model": args.model})
    if not (adapter / "adapter_config.json").is_file():
        raise ModelError(f"--adapter {adapter}: no adapter_config.json; expected a PEFT adapter folder")
    if not (adapter / "config.json").is_file():
        raise ModelError(f"--adapter {adapter}: no config.json with the task head's labels (written by prunekit)")
    config = load_config(str(adapter), "--adapter")  # the fine-tuned head: labels, problem type
    # a classifier's head comes from the adapter folder (its config holds the head's labels)
    base = load_weights(model_class(config), folders["--model"], config, f"--model {args.model}",
                        relabel=not is_causal_lm(config), new_head_from="--adapter",
                        saved_architectures=load_config(folders["--model"]).architectures)  # fmt: skip
    try:
        masks = MaskSet.load(folders["--model"], base)  # checked against the plain model, before wrapping
        model = PeftModel.from_pretrained(base, str(adapter))
    except ModelError:
        raise
    except Exception as err:  # peft/transformers raise many types for a mismatched adapter
        raise ModelError(f"--adapter {adapter}: does not fit --model {args.model} ({first_line(err)})") from None
    tokenizer = load_tokenizer(folders["--model"])
    data = load_data_for_model(args, str(adapter), text=True) if args.data or args.eval_file else None
    before = evaluation_fields(args, model, tokenizer, data)
    merged = merge_lora(model, masks)
    with atomic_output_dir(args.out, args.overwrite) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if masks is not None:
            masks.save(tmp)
        fields = evaluation_fields(args, merged, tokenizer, data)
        if fields:
            fields["metrics_before_merge"] = before["metrics"]
        summary = make_summary(
            "merge",
            args.model,
            data.task.name if data else None,
            adapter=str(adapter),
            **fields,
            **model_size(merged, tmp),
            **(masks.report() if masks is not None else {}),
        )
        write_json_atomic(tmp / "summary.json", summary)
    print_result(summary, f"saved to {args.out}")
    return summary
