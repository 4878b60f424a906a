"""Issue 10, finding 9: the smaller findings, each refused with an error naming the field."""

import json

import orjson
import pytest

from kolors_app.core.config import Limits
from kolors_app.outputs.history import make_entry, validate_entry
from kolors_app.metadata.infotext import parse_parameters
from kolors_app.metadata.png_chunks import read_image_parameters
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import GenerationRequest
from kolors_app.core.validation import validate


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_lone_surrogate_is_refused_naming_the_field(field):
    with pytest.raises(ValidationError, match=f"^{field}: holds an invalid character at position 1"):
        validate(GenerationRequest(**{"prompt": "a fox", field: "a\ud800b"}), Limits())


def test_a1111_numbers_beyond_64_bits_are_dropped_with_a_note():
    found = parse_parameters("a fox\nSteps: 99999999999999999999999, Sampler: Euler, CFG scale: 5, Seed: "
                             + "9" * 5000 + ", Size: " + "9" * 30 + "x512")
    orjson.dumps(found.parameters)  # what gradio does with the PNG info answer; it failed before
    assert "num_inference_steps" not in found.parameters and "seed" not in found.parameters
    assert any("Steps" in note for note in found.warnings)


def test_history_ids_with_a_trailing_newline_are_refused():
    entry = make_entry({"mode": "text_to_image", "prompt": "a fox", "seed": 1}, [1])
    validate_entry(entry)
    with pytest.raises(ValidationError):
        validate_entry({**entry, "id": entry["id"] + "\n"})


def test_png_info_errors_name_no_server_path(tmp_path):
    path = tmp_path / "upload-folder" / "notes.png"
    path.parent.mkdir()
    path.write_text("not an image")
    with pytest.raises(ValidationError) as caught:
        read_image_parameters(str(path))
    assert str(tmp_path) not in str(caught.value) and "upload-folder" not in str(caught.value)
    assert json.dumps(str(caught.value)).startswith('"image:')
