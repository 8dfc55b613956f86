"""Multi-objective search of compression policies on a persistent study."""

from autocompress.search.config import ConfigError, SearchConfig, load_config
from autocompress.search.objectives import Constraint, Objective, Record
from autocompress.search.runner import search, search_from_config
from autocompress.search.study import Study

__all__ = ["ConfigError", "Constraint", "Objective", "Record", "SearchConfig", "Study", "load_config", "search", "search_from_config"]
