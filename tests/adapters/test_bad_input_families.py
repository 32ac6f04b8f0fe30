"""Bad input of the kinds real models meet, for every family: special tokens typed in a prompt
are refused with one clear message (they would become image slots or turn markers), and an
image of extreme aspect ratio is either mapped and answered or refused clearly."""
import pytest

from studio.engine.errors import InputError, StudioError
from studio.engine.session import ModelSession
from tiny_models import FAMILIES, build_tiny, sample_image


@pytest.fixture(scope="module", params=FAMILIES)
def session(request):
    model, processor = build_tiny(request.param)
    return ModelSession(model, processor)


def test_special_tokens_typed_in_a_prompt_are_refused(session):
    image_token = getattr(session.processor, "image_token", None) or session.tokenizer.convert_ids_to_tokens(
        session.adapter.image_token_id())
    for token in {str(image_token), *session.special_tokens[:3]}:
        with pytest.raises(InputError, match="special token"):
            session.prepare(sample_image(32, 32), f"{token} describe {token} .")
    assert session.prepare(sample_image(32, 32), "describe the image .").token_map.image_positions


@pytest.mark.parametrize("size", [(2000, 20), (20, 2000)])
def test_extreme_aspect_ratios_are_answered_or_refused_clearly(session, size):
    try:
        prepared = session.prepare(sample_image(*size), "what is this ?")
    except StudioError as err:
        assert str(err) and "\n" not in str(err)
        return
    tmap = prepared.token_map
    for index in range(len(tmap.grids)):
        grid = tmap.grids[index]
        assert sorted(tmap.positions_of_grid(index)) == [(r, c) for r in range(grid.rows) for c in range(grid.cols)]
    assert session.generate(prepared, max_new_tokens=2).sequence
