"""Settings: defaults, then KOLORS_* variables, then flags; bad values are refused naming where they came from."""

from pathlib import Path

import pytest

from kolors_app.core.logins import Login
from kolors_app.core.config import Limits, Settings, SettingsError, build_parser, load_settings
from kolors_app.core.settings_table import settings_table


def test_defaults_without_flags_or_variables():
    settings, args = load_settings([], {})
    assert settings == Settings()
    assert not args.check
    assert (settings.host, settings.port, settings.share, settings.offload) == ("127.0.0.1", 7860, False, "auto")


@pytest.mark.parametrize("name, env, flag, expected_env, expected_flag", [
    ("model", "some/repo", "tiny", "some/repo", "tiny"),
    ("port", "9000", "8000", 9000, 8000),
    ("offload", "model", "sequential", "model", "sequential"),
    ("text_encoder", "cpu", "8bit", "cpu", "8bit"),
    ("share", "true", "false", True, False),
    ("save_outputs", "false", "auto", False, None),
    ("outputs_dir", "/tmp/a", "/tmp/b", Path("/tmp/a"), Path("/tmp/b")),
    ("queue_size", "3", "5", 3, 5),
])
def test_variables_beat_defaults_and_flags_beat_variables(name, env, flag, expected_env, expected_flag):
    environ = {f"KOLORS_{name.upper()}": env}
    assert getattr(load_settings([], environ)[0], name) == expected_env
    flags = ["--" + name.replace("_", "-"), flag]
    assert getattr(load_settings(flags, environ)[0], name) == expected_flag


@pytest.mark.parametrize("name, env, flag, expected_env, expected_flag", [
    ("max_size", "1536", "1024", 1536, 1024),
    ("max_steps", "60", "40", 60, 40),
    ("max_images", "2", "4", 2, 4),
    ("max_guidance", "12.5", "9", 12.5, 9.0),
])
def test_limits_follow_the_same_precedence(name, env, flag, expected_env, expected_flag):
    environ = {f"KOLORS_{name.upper()}": env}
    assert getattr(load_settings([], environ)[0].limits, name) == expected_env
    flags = ["--" + name.replace("_", "-"), flag]
    settings = load_settings(flags, environ)[0]
    assert getattr(settings.limits, name) == expected_flag
    assert settings.limits.min_size == Limits().min_size


def test_a_bare_boolean_flag_means_true():
    assert load_settings(["--share"], {"KOLORS_SHARE": "false"})[0].share is True
    assert load_settings(["--preload"], {})[0].preload is True


def test_environment_is_read_only_from_the_mapping_given(monkeypatch):
    monkeypatch.setenv("KOLORS_PORT", "1234")
    assert load_settings([], {})[0].port == 7860
    assert load_settings([])[0].port == 1234


def test_spaces_and_gradio_server_variables_set_the_defaults():
    assert load_settings([], {"SPACE_ID": "user/app"})[0].host == "0.0.0.0"
    assert load_settings([], {"GRADIO_SERVER_NAME": "10.0.0.1", "GRADIO_SERVER_PORT": "7000"})[0].port == 7000
    settings = load_settings(["--port", "7001"], {"GRADIO_SERVER_PORT": "7000", "KOLORS_HOST": "127.0.0.2",
                                                  "GRADIO_SERVER_NAME": "10.0.0.1"})[0]
    assert (settings.host, settings.port) == ("127.0.0.2", 7001)


def test_saving_is_off_for_share_links_and_spaces_unless_asked(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert Settings().saving_enabled()
    assert not Settings(share=True).saving_enabled()
    assert Settings(share=True, save_outputs=True).saving_enabled()
    monkeypatch.setenv("SPACE_ID", "user/app")
    assert not Settings().saving_enabled()


@pytest.mark.parametrize("argv, environ, message", [
    ([], {"KOLORS_OFFLOAD": "lots"}, r"KOLORS_OFFLOAD: 'lots' is not one of auto, none, model, sequential"),
    ([], {"KOLORS_PORT": "http"}, r"KOLORS_PORT: expected a number, got 'http'"),
    (["--port", "70000"], {}, r"--port: must be from 1 to 65535, got 70000"),
    (["--queue-size", "0"], {}, r"--queue-size: must be at least 1"),
    ([], {"KOLORS_SHARE": "maybe"}, r"KOLORS_SHARE: expected true/false, got 'maybe'"),
    (["--auth", "admin"], {}, r"--auth: expected user:password"),
    (["--auth", " alice:pw"], {}, r"--auth: the user name 'alice' has spaces around it"),
    ([], {"KOLORS_API_AUTH": "robot:pw\nbroken"}, r"KOLORS_API_AUTH: line 2: expected user:password"),
    (["--auth", "a:1", "--auth", "a:2"], {}, r"--auth: the user 'a' is given more than once"),
    ([], {"KOLORS_AUTH_FILE": "/no/such/file"}, r"KOLORS_AUTH_FILE: cannot read /no/such/file"),
    (["--max-size", "1001"], {}, r"--max-size: must be a multiple of 8"),
    (["--min-size", "1024", "--max-size", "512"], {}, r"--min-size: is above max_size"),
    ([], {"KOLORS_MAX_IMAGES": "0"}, r"KOLORS_MAX_IMAGES: must be at least 1"),
    ([], {"GRADIO_SERVER_PORT": "0"}, r"GRADIO_SERVER_PORT: must be from 1 to 65535"),
    (["--lora-hub-allow", "me/style,a/.."], {}, r"--lora-hub-allow: 'a/\.\.' is not a Hub repo id"),
    ([], {"KOLORS_LORA_MAX_MB": "0"}, r"KOLORS_LORA_MAX_MB: must be at least 1"),
])
def test_bad_values_are_refused_naming_their_source(argv, environ, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(argv, environ)


def test_help_lists_every_setting_with_its_variable():
    text = " ".join(build_parser().format_help().split())
    names = [name for name in vars(load_settings([], {})[1]) if name != "check"]
    for name in names:
        assert "--" + name.replace("_", "-") in text
        assert f"KOLORS_{name.upper()}" in text.replace("- ", "-").replace(" _", "_")
    assert "--check" in text


def test_readme_table_has_a_row_per_setting():
    table = settings_table()
    rows = [line for line in table.splitlines() if line.startswith("| `--")]
    assert len(rows) == len(vars(load_settings([], {})[1]))
    assert "| `--offload` | `KOLORS_OFFLOAD` | `auto` |" in table
    assert "| `--max-images` | `KOLORS_MAX_IMAGES` | `8` |" in table


def logins(settings_logins) -> list[tuple[str, str]]:
    return [login.as_pair() for login in settings_logins]


def test_a_password_is_taken_as_typed_commas_and_colons_included():
    settings = load_settings(["--auth", "alice:pa,ss", "--api-auth", "bob:pa,x:y"], {})[0]
    assert logins(settings.auth) == [("alice", "pa,ss")] and logins(settings.api_auth) == [("bob", "pa,x:y")]
    assert logins(load_settings(["--auth", "alice:pa,mallory:x"], {})[0].auth) == [("alice", "pa,mallory:x")]
    assert "pa,ss" not in repr(settings) and "Login(user='alice')" in repr(settings)


def test_several_users_repeat_the_flag_or_take_a_line_each(tmp_path):
    flags = load_settings(["--auth", "alice:pa,ss", "--auth", "bob:x"], {"KOLORS_AUTH": "ignored:1"})[0]
    assert logins(flags.auth) == [("alice", "pa,ss"), ("bob", "x")]
    # A Spaces secret holds several lines; Windows line ends, blank lines and # comments are fine.
    lines = load_settings([], {"KOLORS_API_AUTH": "# robots\r\nrobot:se,cret\r\n\ncarol: c o l \n"})[0]
    assert logins(lines.api_auth) == [("robot", "se,cret"), ("carol", " c o l ")]
    assert logins(load_settings([], {"KOLORS_AUTH": "alice:pa,ss"})[0].auth) == [("alice", "pa,ss")]  # as before
    file = tmp_path / "users.txt"
    file.write_text("dave:d:a,v e\n# a comment\nerin:pw\n")
    from_file = load_settings(["--auth", "alice:x"], {"KOLORS_AUTH_FILE": str(file)})[0]
    assert logins(from_file.auth) == [("alice", "x"), ("dave", "d:a,v e"), ("erin", "pw")]
    assert logins(load_settings(["--api-auth-file", str(file)], {})[0].api_auth) == [("dave", "d:a,v e"),
                                                                                      ("erin", "pw")]
    with pytest.raises(SettingsError, match=r"KOLORS_AUTH and --auth-file: the user 'dave' is given more"):
        load_settings(["--auth-file", str(file)], {"KOLORS_AUTH": "dave:other"})
    assert Settings(auth=(Login("a", "b"),)).auth[0].as_pair() == ("a", "b")


def test_api_keys_come_from_repeated_flags_a_variable_or_a_file(tmp_path):
    assert Settings().api_key == () and "api_key" not in repr(Settings(api_key=("sk-secret-1",)))
    assert load_settings(["--api-key", "sk-first-1", "--api-key", "sk-second-2"], {})[0].api_key == (
        "sk-first-1", "sk-second-2")
    # A Spaces secret holds one key a line; the flags win over it.
    environ = {"KOLORS_API_KEY": "sk-first-1\n\n  sk-second-2  \n"}
    assert load_settings([], environ)[0].api_key == ("sk-first-1", "sk-second-2")
    assert load_settings(["--api-key", "sk-flag-key-3"], environ)[0].api_key == ("sk-flag-key-3",)
    keys = tmp_path / "keys.txt"
    keys.write_text("sk-from-file-1\nsk-from-file-2\n")
    assert load_settings([], {"KOLORS_API_KEY_FILE": str(keys)})[0].api_key == ("sk-from-file-1", "sk-from-file-2")


@pytest.mark.parametrize("argv, environ, message", [
    (["--api-key", "short"], {}, r"--api-key: each key needs at least 8 characters and no spaces"),
    ([], {"KOLORS_API_KEY": "sk-has space"}, r"KOLORS_API_KEY: each key needs at least 8 characters"),
    (["--api-key", "sk-same-key", "--api-key", "sk-same-key"], {}, r"--api-key: a key is given twice"),
    ([], {"KOLORS_API_KEY_FILE": "/no/such/file"}, r"KOLORS_API_KEY_FILE: cannot read it"),
    ([], {"KOLORS_API_KEY_FILE": "/etc/hostname", "KOLORS_API_KEY": "sk-first-1"},
     r"KOLORS_API_KEY_FILE: give the keys one way, not also with KOLORS_API_KEY"),
    (["--api", "--share"], {}, r"--api: on a share link or a Space the REST APIs need --api-auth"),
])
def test_bad_api_keys_are_refused_naming_their_source(argv, environ, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(argv, environ)


def test_an_api_key_alone_meets_the_public_rule_for_the_openai_routes():
    settings = load_settings(["--api", "--api-key", "sk-public-key-1"], {"SPACE_ID": "user/app"})[0]
    assert settings.api and settings.api_key == ("sk-public-key-1",) and not settings.api_auth
