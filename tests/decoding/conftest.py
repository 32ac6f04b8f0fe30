"""Fixtures of the decoding tests."""
import pytest

from studio.engine.session import ModelSession
from tiny_models import FAMILIES, build_tiny, sample_image


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    """A tiny model of each family in a session, and one prepared image and prompt."""
    model, processor = build_tiny(request.param)
    session = ModelSession(model, processor)
    return session, session.prepare(sample_image(32, 32), "what is this ?")
