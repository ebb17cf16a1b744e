"""Task specifications: where the text and label live, and which metric is official."""

from __future__ import annotations

from dataclasses import dataclass

from prunekit.errors import ConfigError

Column = str | int  # a header name, or a 0-based index for headerless files


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: its columns (for its file layout), labels and official metrics."""

    name: str
    text_columns: tuple[Column, ...]
    label_column: Column
    label_names: tuple[str, ...] | None  # None: regression
    metrics: tuple[str, ...]
    main_metric: str
    has_header: bool = True
    eval_files: tuple[str, ...] = ("dev",)
    causal_lm: bool = False  # language modelling on plain text (no labels; metric: perplexity)

    @property
    def is_regression(self) -> bool:
        """A labelled task with one real-valued output (language modelling has no label names either)."""
        return self.label_names is None and not self.causal_lm

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)


_BINARY = ("0", "1")
_ENTAILMENT = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("sst2", ("sentence",), "label", _BINARY, ("accuracy",), "accuracy"),
        TaskSpec("mrpc", ("#1 String", "#2 String"), "Quality", _BINARY, ("f1", "accuracy"), "f1"),
        TaskSpec("stsb", ("sentence1", "sentence2"), "score", None, ("pearson", "spearman"), "pearson"),
        # CoLA ships without a header: source, label, original mark, sentence.
        TaskSpec("cola", (3,), 1, _BINARY, ("matthews_correlation",), "matthews_correlation", has_header=False),
        TaskSpec("rte", ("sentence1", "sentence2"), "label", _ENTAILMENT, ("accuracy",), "accuracy"),
        TaskSpec("qnli", ("question", "sentence"), "label", _ENTAILMENT, ("accuracy",), "accuracy"),
        TaskSpec(
            "mnli",
            ("sentence1", "sentence2"),
            "gold_label",
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            "accuracy",
            eval_files=("dev_matched", "dev"),
        ),
        TaskSpec("qqp", ("question1", "question2"), "is_duplicate", _BINARY, ("f1", "accuracy"), "f1"),
        TaskSpec("wnli", ("sentence1", "sentence2"), "label", _BINARY, ("accuracy",), "accuracy"),
    )
}


#: Language modelling on a plain-text corpus (see prunekit.data.text).
LM_TASK = TaskSpec("lm", (), "", None, ("perplexity",), "perplexity", causal_lm=True)


def normalise_task_name(name: str) -> str:
    """``SST-2``, ``sst_2`` and ``sst2`` all name the same task."""
    return name.lower().replace("-", "").replace("_", "")


def glue_task(name: str) -> TaskSpec:
    """The GLUE task called ``name`` (any spelling of the folder name), or a ConfigError."""
    key = normalise_task_name(name)
    if key not in GLUE_TASKS:
        raise ConfigError(f"--task {name!r}: unknown task; expected one of {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def custom_task(
    text_columns: tuple[Column, ...],
    label_column: Column,
    label_names: tuple[str, ...] | None,
    has_header: bool = True,
) -> TaskSpec:
    """A user's own classification (``label_names`` given) or regression task."""
    if label_names is None:
        return TaskSpec(
            "custom", text_columns, label_column, None, ("pearson", "spearman", "mse"), "pearson", has_header
        )
    return TaskSpec("custom", text_columns, label_column, label_names, ("accuracy", "macro_f1"), "accuracy", has_header)
