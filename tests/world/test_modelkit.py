import numpy as np
from transformers import AutoModelForImageTextToText, AutoProcessor

from studio.world.modelkit import (
    IMAGE_TOKEN,
    WorldModelSize,
    build_model,
    build_processor,
)
from studio.world.render import IMAGE_SIZE, render
from studio.world.scenes import sample_scene


def test_processor_expands_one_token_per_patch_and_round_trips(tmp_path):
    processor = build_processor()
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}],
        add_generation_prompt=True)
    inputs = processor(images=render(sample_scene(0)), text=text, return_tensors="pt")
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert int((inputs["input_ids"] == image_id).sum()) == (IMAGE_SIZE // 8) ** 2 >= 64
    model = build_model(processor.tokenizer, WorldModelSize(32, 1, 2, 64, 32, 1, 2, 64))
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["model.safetensors"]
    again = AutoProcessor.from_pretrained(tmp_path)
    same = again(images=render(sample_scene(0)), text=text, return_tensors="pt")
    assert same["input_ids"].tolist() == inputs["input_ids"].tolist()
    assert np.array_equal(same["pixel_values"].numpy(), inputs["pixel_values"].numpy())
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert type(reloaded).__name__ == "LlavaForConditionalGeneration"


def test_tokenizer_decodes_what_it_encodes():
    tok = build_processor().tokenizer
    text = "a large red heart , a small blue ring ."
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text
