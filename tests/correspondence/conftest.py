"""Fixtures for the correspondence tests."""
import pytest


@pytest.fixture(scope="session")
def make_pair():
    """``make_pair(size) -> (a, b, b_to_a)``: a real image (skimage astronaut) and its
    affine-warped, colour-remapped copy, with the true map from b's points to a's."""
    from fmdepth.correspondence.synthetic import affine_colour_pair

    return lambda size, **kw: affine_colour_pair(size, **kw)
