"""The case model: schema, derived values, cross-field rules, JSON Schema and CSV forms of one case."""

from service.model.validate import validate_case

__all__ = ["validate_case"]
