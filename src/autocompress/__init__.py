"""autocompress: automatic compression of trained PyTorch models.

The data that flows: ``SearchSpace.from_model`` -> ``Policy`` -> ``apply_policy`` ->
``Evaluator`` (metric and cost) -> ``save`` / ``export`` (``export_onnx``: the fp32 file alone).

``autocompress.export`` is both the export subpackage and, called, its entry point
:func:`autocompress.export.export` (the package is callable), so neither hides the other.
"""

from autocompress import export, search
from autocompress.apply import apply_policy
from autocompress.budget import BudgetError
from autocompress.checks import TaskError
from autocompress.cost import CostReport, LayerCost, count_cost
from autocompress.discovery import LayerInfo
from autocompress.evaluate import EvalResult, Evaluator
from autocompress.export import ExportError, ExportMismatchError, ExportReport, export_onnx
from autocompress.pipeline import compress
from autocompress.policy import InputSpec, LayerGenes, Policy
from autocompress.result import Candidate, CompressResult
from autocompress.saving import load, save
from autocompress.search import Study
from autocompress.search.refine import refine_dense as refine_dense
from autocompress.search.refine_study import sweep_study as sweep_study
from autocompress.space import PolicyError, SearchSpace
from autocompress.task import Task
from autocompress.task.streamed import BatchError
from autocompress.trace import ModelTraceError

__version__ = "0.1.0"

__all__ = [
    "BatchError",
    "BudgetError",
    "Candidate",
    "CompressResult",
    "TaskError",
    "compress",
    "CostReport",
    "EvalResult",
    "Evaluator",
    "ExportError",
    "ExportMismatchError",
    "ExportReport",
    "InputSpec",
    "LayerCost",
    "LayerGenes",
    "LayerInfo",
    "ModelTraceError",
    "Policy",
    "PolicyError",
    "SearchSpace",
    "Study",
    "Task",
    "apply_policy",
    "count_cost",
    "export",
    "export_onnx",
    "load",
    "save",
    "search",
]
