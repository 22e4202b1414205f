import pytest

from ml import registry

@pytest.fixture
def method_with_baseline() -> registry.Method:
    """A catalogue method that has at least one baseline."""
    for method in registry.all_methods():
        if method.baselines:
            return method
    pytest.fail("the catalogue has no method with a baseline")
