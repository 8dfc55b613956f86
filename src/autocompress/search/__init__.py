"""Multi-objective search of compression policies on a persistent study.

``autocompress.search`` is also callable: ``ac.search(model, task, ...)`` is
:func:`autocompress.search.runner.search`.
"""

import sys
import types

from autocompress.search.config import ConfigError, SearchConfig, load_config
from autocompress.search.confirm import confirm
from autocompress.search.objectives import Constraint, Objective, Record
from autocompress.search.runner import search, search_from_config
from autocompress.search.study import Study


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["ConfigError", "confirm", "Constraint", "Objective", "Record", "SearchConfig", "Study", "load_config", "search", "search_from_config"]
