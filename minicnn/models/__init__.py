"""The model zoo: the reports' networks by name, with their training recipes."""
from minicnn.models.summary import format_summary, summary
from minicnn.models.zoo import ModelSpec, Recipe, all_specs, get_spec

__all__ = ["ModelSpec", "Recipe", "all_specs", "get_spec", "summary", "format_summary"]
