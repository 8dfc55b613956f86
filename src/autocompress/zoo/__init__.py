"""Bundled models and datasets for demos, tests and benchmarks (offline, seeded)."""

from autocompress.zoo.datasets import list_tasks, load_task
from autocompress.zoo.registry import ZooModel, list_zoo, load_zoo

__all__ = ["ZooModel", "list_tasks", "list_zoo", "load_task", "load_zoo"]
