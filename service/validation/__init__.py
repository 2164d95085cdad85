"""Local FHIR R4 profile validation from profiles/ and HAPI's base R4 definitions (docs/validation.md)."""

from service.validation.validator import Validator

__all__ = ["Validator"]
