"""Fixtures shared by several test files."""
import pytest


@pytest.fixture(scope="session")
def digits_model():
    """The seed's TinyCNN trained on scikit-learn digits (cached): (model, (x_train, y_train, x_test, y_test))."""
    from minquant.data.zoo import tiny_cnn_digits
    return tiny_cnn_digits()
