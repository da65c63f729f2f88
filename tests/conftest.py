import jax
import pytest

# Equivalence needs exact float32 matmuls on every backend.
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def toy_data():
    from tests.toy import random_dataset

    return random_dataset()
