"""Data: tasks, file readers, tokenisation and official metrics."""

from prunekit.data.encoding import EncodedSplit, encode_batches, make_collator
from prunekit.data.metrics import compute_metrics
from prunekit.data.readers import Split, TaskData, load_task_data
from prunekit.data.tasks import GLUE_TASKS, TaskSpec, glue_task

__all__ = [
    "GLUE_TASKS",
    "EncodedSplit",
    "Split",
    "TaskData",
    "TaskSpec",
    "compute_metrics",
    "encode_batches",
    "glue_task",
    "load_task_data",
    "make_collator",
]
