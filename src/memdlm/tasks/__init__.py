"""Synthetic long-context tasks, generated offline and deterministically.

Every task builds a prompt whose length is counted in the model's own tokens,
hides its facts ("needles") in a haystack, and splits its keys, values and names
into disjoint train / eval sets by a stable hash. The same generators feed
training data and evaluation. ``get_task(name)`` looks a task up by name.
"""

from memdlm.tasks.base import Sample, Task, get_task, register_task, task_names

__all__ = ["Sample", "Task", "get_task", "register_task", "task_names"]
