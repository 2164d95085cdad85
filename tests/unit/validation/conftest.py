"""One validator per test session: loading base R4 and the package is the expensive part."""

from __future__ import annotations

import pytest

from service.validation import Validator
from service.validation.definitions import DefinitionsMissing


@pytest.fixture(scope="session")
def validator() -> Validator:
    try:
        return Validator.load()
    except DefinitionsMissing as error:
        pytest.fail(str(error))
