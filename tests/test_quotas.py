"""Issue 10: the quota functions every front end calls (work budget, queue quota, login back-off, cache cap)."""

import base64
import dataclasses
import os
import time

import pytest

from kolors_app.core.config import Settings, SettingsError, load_settings
from kolors_app.core.logins import Login
from kolors_app.serving.http_guard import evict_oldest, host_name
from kolors_app.serving.logins import Logins, TooManyAttempts, basic_credentials
from kolors_app.serving.quotas import DEFAULTS, LoginThrottle, QueueQuota, resolve


def test_public_defaults_are_lower(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    local, public = resolve(Settings()), resolve(Settings(share=True))
    assert public.max_work < local.max_work and public.queue_per_session < local.queue_per_session
    assert public.sessions < local.sessions and public.upload_quota_bytes < local.upload_quota_bytes
    assert local.allowed_hosts == ("localhost", "127.0.0.1", "::1", "[::1]") and public.allowed_hosts is None
    assert public.trust_forwarded and not local.trust_forwarded
    monkeypatch.setenv("SPACE_ID", "someone/space")
    assert resolve(Settings()) == public


def test_every_quota_is_a_flag_and_a_variable():
    settings, _ = load_settings(["--max-work", "12.5", "--queue-per-address", "3", "--allowed-hosts", "a.example"],
                                {"KOLORS_SESSIONS": "7"})
    quotas = resolve(settings)
    assert (quotas.max_work, quotas.queue_per_address, quotas.sessions) == (12.5, 3, 7)
    assert quotas.allowed_hosts == ("a.example",)
    assert set(DEFAULTS) <= {f.name for f in dataclasses.fields(Settings)}
    with pytest.raises(SettingsError, match="--sessions: must be at least 1"):
        load_settings(["--sessions", "0"])


def test_queue_quota_per_session_and_address():
    quotas = dataclasses.replace(resolve(Settings()), queue_per_session=2, queue_per_address=3)
    quota = QueueQuota(quotas)
    jobs = [("s1", "1.1.1.1"), ("s1", "1.1.1.1"), ("s2", "1.1.1.1")]
    assert "2 job(s)" in quota.refusal(jobs, "s1", "1.1.1.1")
    assert "address" in quota.refusal(jobs, "s3", "1.1.1.1")
    assert quota.refusal(jobs, "s4", "2.2.2.2") is None


def test_login_back_off_doubles():
    throttle = LoginThrottle(free_attempts=2)
    for _ in range(2):
        assert throttle.reserve(("a",), now=100) == 0
        throttle.settle(("a",), True, now=100)
    assert throttle.wait("a", now=100) == 1.0 and throttle.reserve(("a",), now=100) == 1.0
    assert throttle.reserve(("a",), now=101) == 0
    throttle.settle(("a",), True, now=101)
    assert throttle.wait("a", now=101) == 2.0 and throttle.wait("b", now=101) == 0
    assert throttle.reserve(("b", "a"), now=101) == 2.0 and throttle.wait("b", now=101) == 0  # nothing reserved
    assert throttle.reserve(("a",), now=103) == 0
    throttle.settle(("a",), False)
    assert throttle.wait("a", now=103) == 0


def test_logins_checked_at_once_count_before_their_verdict():
    throttle = LoginThrottle(free_attempts=5)
    reserved = [throttle.reserve(("a",), now=100) for _ in range(60)]
    assert reserved.count(0) == 5  # the other 55 wait: the 5 free attempts are being checked
    for _ in range(5):
        throttle.settle(("a",), None)  # no verdict (a server error): the attempts are given back
    assert throttle.reserve(("a",), now=100) == 0


def test_a_quiet_key_starts_again_with_its_free_attempts():
    throttle = LoginThrottle(free_attempts=1)
    for now in (100, 101, 103, 107):
        assert throttle.reserve(("a",), now=now) == 0
        throttle.settle(("a",), True, now=now)
    assert throttle.wait("a", now=110) == 5.0
    quiet = 107 + LoginThrottle.FORGET_AFTER + 1
    assert throttle.wait("a", now=quiet) == 0 and throttle.reserve(("a",), now=quiet) == 0
    throttle.settle(("a",), True, now=quiet)
    assert throttle.wait("a", now=quiet) == 1.0  # one failure counted, not five


def test_wrong_passwords_count_per_address_and_per_user():
    logins = Logins(2, (Login("alice", "pa,ss"),))
    assert not logins.check_basic("10.0.0.1", "alice", "pa")
    assert not logins.check_basic("10.0.0.2", "alice", "ss")
    with pytest.raises(TooManyAttempts) as refused:  # a third address, the same user
        logins.check_basic("10.0.0.3", "alice", "pa,ss")
    assert refused.value.retry_after == 1 and "try again in 1 s" in str(refused.value)
    for user in ("bob", "carol"):
        assert not logins.check_basic("10.0.0.4", user, "x")
    with pytest.raises(TooManyAttempts):  # the same address, another user
        logins.check_basic("10.0.0.4", "dave", "x")


def test_a_user_who_logged_in_is_not_locked_out_by_guesses_from_elsewhere():
    logins = Logins(2, (Login("alice", "pa,ss"),))
    assert logins.check_basic("10.0.0.1", "alice", "pa,ss")
    for address in ("10.0.0.2", "10.0.0.3"):
        assert not logins.check_basic(address, "alice", "guess")
    with pytest.raises(TooManyAttempts):
        logins.check_basic("10.0.0.9", "alice", "pa,ss")  # a new address waits for the user's back-off
    assert logins.check_basic("10.0.0.1", "alice", "pa,ss")  # where alice logged in, she still may
    with pytest.raises(TooManyAttempts):  # and her logins give the guessers no new free attempts
        logins.check_basic("10.0.0.5", "alice", "guess")


def test_basic_credentials_are_read_as_typed():
    def header(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert basic_credentials(header("alice:pä,ss:x")) == ("alice", "pä,ss:x")
    assert basic_credentials("Basic " + base64.b64encode("bob:pä".encode("latin-1")).decode()) == ("bob", "pä")
    assert basic_credentials(header("no colon")) is None and basic_credentials("Basic %%%") is None
    assert basic_credentials("Bearer x") is None and basic_credentials(None) is None


def test_cache_cap_removes_the_oldest_first(tmp_path):
    for index in range(5):
        path = tmp_path / f"upload{index}" / "file.bin"
        path.parent.mkdir()
        path.write_bytes(b"x" * 1000)
        os.utime(path, (time.time() - 100 + index, time.time() - 100 + index))
    assert evict_oldest(tmp_path, 2500) == 3000
    assert sorted(path.parent.name for path in tmp_path.rglob("*.bin")) == ["upload3", "upload4"]


def test_host_names():
    assert host_name("LocalHost:7860") == "localhost" and host_name("[::1]:7860") == "[::1]"
    assert host_name("evil.example") == "evil.example" and host_name(None) == ""
