"""Styles (A1111 styles.csv) and dynamic prompts {a|b|c}."""

import pytest

from kolors_app.core.prompt_syntax import check_choice_syntax
from kolors_app.creative import dynamic_prompts
from kolors_app.creative import styles
from kolors_app.core.errors import ValidationError

A1111_CSV = '''name,prompt,negative_prompt
"Wrapped","best quality, {prompt}, masterpiece","lowres"
"Appended","oil painting",""
'''


def test_a1111_file_parses_and_applies():
    parsed = styles.parse_styles(A1111_CSV)
    assert set(parsed) == {"Wrapped", "Appended"}
    prompt, negative = styles.apply_styles("a cat", "blurry", ["Wrapped"], parsed)
    assert prompt == "best quality, a cat, masterpiece"
    assert negative == "blurry, lowres"


def test_several_styles_apply_in_order():
    parsed = styles.parse_styles(A1111_CSV)
    prompt, negative = styles.apply_styles("a cat", "", ["Wrapped", "Appended"], parsed)
    assert prompt == "best quality, a cat, masterpiece, oil painting"
    assert negative == "lowres"


def test_shipped_styles_are_bilingual_and_cover_the_basics():
    shipped = styles.read_styles()
    names = " ".join(shipped)
    for word in ("Photography", "Ink wash", "Anime", "Product", "Poster"):
        assert word in names
    assert all(styles.PLACEHOLDER in style.prompt for style in shipped.values())
    assert any(any("\u4e00" <= c <= "\u9fff" for c in style.prompt) for style in shipped.values())
    prompt, _ = styles.apply_styles("一只猫", "", ["Ink wash / 水墨"], shipped)
    assert "一只猫" in prompt and "水墨" in prompt


def test_user_file_adds_and_overrides(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text(A1111_CSV, encoding="utf-8")
    merged = styles.read_styles(path, tmp_path / "missing.csv")
    assert "Wrapped" in merged and "Anime / 动漫" in merged


def test_unknown_style_names_the_field():
    with pytest.raises(ValidationError, match="styles: unknown style 'nope'"):
        styles.apply_styles("a", "", ["nope"], styles.read_styles())


def test_a_file_without_header_is_refused():
    with pytest.raises(ValueError, match="header"):
        styles.parse_styles("")


def test_choice_follows_the_seed():
    text = "a {red|blue|green} fox in {snow|rain}"
    picks = {dynamic_prompts.resolve(text, seed) for seed in range(40)}
    assert len(picks) > 3
    assert all("{" not in pick for pick in picks)
    assert dynamic_prompts.resolve(text, 7) == dynamic_prompts.resolve(text, 7)


def test_nested_choices_and_placeholders():
    assert dynamic_prompts.resolve("{a|{b|b}}", 1) in {"a", "b"}
    assert dynamic_prompts.resolve("{prompt} stays", 1) == "{prompt} stays"
    assert dynamic_prompts.resolve("红色的{狐狸|猫}", 3) in {"红色的狐狸", "红色的猫"}


def test_unbalanced_braces_are_refused():
    with pytest.raises(ValidationError, match="prompt: has unbalanced"):
        check_choice_syntax("a {red|blue fox")
