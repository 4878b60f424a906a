"""Issue 10: the quota functions every front end calls (work budget, queue quota, login back-off, cache cap)."""

import dataclasses
import os
import time

import pytest

from kolors_app.core.config import Settings, SettingsError, load_settings
from kolors_app.serving.http_guard import evict_oldest, host_name
from kolors_app.core.errors import ValidationError
from kolors_app.core.request import GenerationRequest
from kolors_app.serving.quotas import DEFAULTS, LoginThrottle, QueueQuota, check_work, resolve, work_of


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


def test_work_budget_names_the_field():
    # 2048 x 2048 x 8 images x 150 steps: 5,033 megapixel-steps, hours on a CPU.
    assert work_of(2048, 2048, 8, 150) == pytest.approx(4 * 8 * 150)
    request = GenerationRequest(prompt="a fox", width=2048, height=2048, num_images=8, num_inference_steps=150)
    with pytest.raises(ValidationError) as caught:
        check_work(request, resolve(Settings(share=True)))
    assert str(caught.value).startswith("num_inference_steps:") and "300 allowed" in str(caught.value)
    check_work(GenerationRequest(prompt="a fox", width=1024, height=1024, num_inference_steps=50), 300)


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
        assert throttle.wait("a", now=100) == 0
        throttle.failed("a", now=100)
    assert throttle.wait("a", now=100) == 1.0
    throttle.failed("a", now=100)
    assert throttle.wait("a", now=100) == 2.0 and throttle.wait("b", now=100) == 0
    throttle.succeeded("a")
    assert throttle.wait("a", now=100) == 0


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
