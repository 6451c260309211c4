"""Tier files, durations, API keys and per-request overrides."""

from __future__ import annotations

import pytest

from niyama.qos.config import builtin_tier_config, load_tier_config, parse_tier_config, resolve_tier_config
from niyama.qos.durations import format_duration, parse_duration
from niyama.qos.errors import QosConfigError, SloOverrideError, UnknownTierError
from niyama.qos.tiers import SloTargets, apply_overrides

SECRET = "sk-very-secret-0123"

GOOD = f"""
default = "chat"

[[tiers]]
name = "chat"
kind = "interactive"
ttft = "500ms"
tbt = 0.1
importance = 5
expected_output_tokens = 200

[[tiers]]
name = "jobs"
kind = "batch"
ttlt = "10m"
importance = 1

[[api_keys]]
name = "team-a"
key = "{SECRET}"
tiers = ["jobs"]
default_tier = "jobs"

[[api_keys]]
key = "other-key"
"""


def write(tmp_path, text: str):
    path = tmp_path / "tiers.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (" 250 ms ", 0.25),
        (3, 3.0),
        (0.05, 0.05),
        ("7", 7.0),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, rel=0, abs=1e-12)


@pytest.mark.parametrize("bad", ["5 parsecs", "ms", "", -1, 0, "0s", True, None, [1]])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_duration():
    assert [format_duration(s) for s in (0.05, 6.0, 600.0, 3600.0, 1.5)] == ["50ms", "6s", "10m", "1h", "1.5s"]


def test_load_good_file(tmp_path):
    config = load_tier_config(write(tmp_path, GOOD))
    assert config.names == ("chat", "jobs")
    assert config.default == "chat"
    chat = config.tier("chat")
    assert chat.targets == SloTargets(ttft=0.5, tbt=0.1)
    assert chat.expected_output_tokens == 200 and chat.interactive
    assert config.tier("jobs").targets == SloTargets(ttlt=600.0)
    assert config.tier(None) is chat
    assert config.relegation_ranks() == {"jobs": 0, "chat": 1}


def test_api_key_lookups(tmp_path):
    config = load_tier_config(write(tmp_path, GOOD))
    assert config.requires_api_key
    team_a = config.api_keys.lookup(SECRET)
    assert (team_a.label, team_a.tiers, team_a.default_tier) == ("team-a", ("jobs",), "jobs")
    # Omitted tiers means every tier; omitted default_tier means the file default.
    other = config.api_keys.lookup("other-key")
    assert (other.label, other.tiers, other.default_tier) == ("api_keys[1]", ("chat", "jobs"), "chat")
    assert config.api_keys.lookup("nope") is None and config.api_keys.lookup(None) is None
    assert SECRET not in repr(config) and "team-a" in repr(config)


def test_api_key_default_must_be_allowed(tmp_path):
    with pytest.raises(QosConfigError) as info:
        load_tier_config(write(tmp_path, GOOD.replace('default_tier = "jobs"', 'default_tier = "chat"')))
    assert (
        str(info.value)
        == f"{tmp_path / 'tiers.toml'}: api key 'team-a': field 'default_tier': 'chat' is not among its tiers"
    )


def test_duplicate_key_error_never_shows_the_key(tmp_path):
    text = GOOD.replace('key = "other-key"', f'key = "{SECRET}"')
    with pytest.raises(QosConfigError) as info:
        load_tier_config(write(tmp_path, text))
    message = str(info.value)
    assert SECRET not in message
    assert message.endswith("api key 'api_keys[1]': field 'key': same key as api key 'team-a'")


def test_key_limited_to_other_tiers_needs_its_own_default(tmp_path):
    # team-a may only use "jobs" while the file default is "chat".
    with pytest.raises(
        QosConfigError, match=r"api key 'team-a': field 'default_tier': required, since the file default 'chat'"
    ):
        load_tier_config(write(tmp_path, GOOD.replace('default_tier = "jobs"\n', "")))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (('ttft = "500ms"', 'ttft = "soon"'), "tier 'chat': field 'ttft': expected a duration"),
        (('ttft = "500ms"', ""), "tier 'chat': field 'ttft': required for interactive tiers"),
        (('kind = "batch"', 'kind = "bulk"'), "tier 'jobs': field 'kind': must be \"interactive\" or \"batch\""),
        (('ttlt = "10m"', 'ttlt = "10m"\ntbt = "1s"'), "tier 'jobs': field 'tbt': batch tiers have only ttlt"),
        (("importance = 1", 'importance = "high"'), "tier 'jobs': field 'importance': expected a number"),
        (("expected_output_tokens = 200", "expected_output_tokens = 0"), "tier 'chat': field 'expected_output_tokens'"),
        (("importance = 5", "importance = 5\nttf = 1"), "tier 'chat': unknown field 'ttf'"),
        (('name = "jobs"', 'name = "chat"'), "tier 'chat': field 'name': duplicate tier name"),
        (('default = "chat"', 'default = "gold"'), "field 'default': 'gold' is not a tier"),
        (('default = "chat"', ""), "field 'default': required with more than one tier"),
        (('tiers = ["jobs"]', 'tiers = ["gold"]'), "api key 'team-a': field 'tiers': 'gold' is not a tier"),
        (
            ('tiers = ["jobs"]', "tiers = []"),
            "api key 'team-a': field 'tiers': expected a non-empty list of tier names",
        ),
        (
            ('tiers = ["jobs"]', "tiers = [1]"),
            "api key 'team-a': field 'tiers': expected a non-empty list of tier names",
        ),
        (('key = "other-key"', 'key = ""'), "api key 'api_keys[1]': field 'key': required, a non-empty string"),
        (('name = "team-a"', 'name = ""'), "api_keys[0]: field 'name': expected a non-empty string"),
        (('name = "team-a"', 'name = "team-a"\nrole = "x"'), "api key 'team-a': unknown field 'role'"),
        (('name = "chat"', 'name = " "'), "tiers[0]: field 'name': required, a non-empty string"),
        (('name = "chat"', "name = 3"), "tiers[0]: field 'name': required, a non-empty string"),
        (('kind = "interactive"', ""), "tier 'chat': field 'kind': must be \"interactive\" or \"batch\", got None"),
        (("importance = 5", "importance = true"), "tier 'chat': field 'importance': expected a number, got True"),
        (("importance = 5", 'importance = "5"'), "tier 'chat': field 'importance': expected a number, got '5'"),
        (("expected_output_tokens = 200", "expected_output_tokens = 2.5"), "expected a positive integer, got 2.5"),
        (('ttlt = "10m"', "ttlt = 0"), "tier 'jobs': field 'ttlt': a duration must be positive, got 0"),
        (('default = "chat"', 'default = "chat"\nversion = 2'), "unknown top-level field 'version'"),
        (('default = "chat"', "default = 3"), "field 'default': 3 is not a tier (one of chat, jobs)"),
    ],
)
def test_invalid_files_name_file_tier_and_field(tmp_path, edit, expected):
    old, new = edit
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(QosConfigError) as info:
        load_tier_config(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": ")
    assert expected in message
    assert "\n" not in message


ONE = [{"name": "a", "kind": "batch", "ttlt": 1}]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, "src: field 'tiers': at least one [[tiers]] table is required"),
        ({"tiers": []}, "src: field 'tiers': at least one [[tiers]] table is required"),
        ({"tiers": ["x"]}, "src: tiers[0]: expected a [[tiers]] table"),
        ({"tiers": [{"kind": "batch", "ttlt": 1}]}, "src: tiers[0]: field 'name': required, a non-empty string"),
        ({"tiers": ONE, "api_keys": 3}, "src: field 'api_keys': expected [[api_keys]] tables"),
        ({"tiers": ONE, "api_keys": [3]}, "src: api_keys[0]: expected an [[api_keys]] table"),
        ({"tiers": ONE, "api_keys": [{}]}, "src: api key 'api_keys[0]': field 'key': required, a non-empty string"),
    ],
)  # fmt: skip
def test_invalid_structures(data, expected):
    with pytest.raises(QosConfigError) as info:
        parse_tier_config(data, "src")
    assert str(info.value) == expected


def test_unreadable_and_non_toml(tmp_path):
    with pytest.raises(QosConfigError, match="cannot read tier file"):
        load_tier_config(tmp_path / "missing.toml")
    with pytest.raises(QosConfigError, match="not valid TOML"):
        load_tier_config(write(tmp_path, "tiers = [[["))


def test_single_tier_needs_no_default(tmp_path):
    config = load_tier_config(write(tmp_path, '[[tiers]]\nname = "only"\nkind = "batch"\nttlt = "1h"\n'))
    assert config.default == "only" and config.tier("only").importance == 0.0


def test_builtin_configs():
    paper = builtin_tier_config("paper")
    assert paper.names == ("Q1", "Q2", "Q3")
    assert paper.tier("Q1").targets == SloTargets(ttft=6.0, tbt=0.05)
    assert paper.tier("Q2").targets == SloTargets(ttlt=600.0)
    assert paper.tier("Q3").targets == SloTargets(ttlt=1800.0)
    assert paper.relegation_ranks() == {"Q3": 0, "Q2": 1, "Q1": 2}
    default = resolve_tier_config("default")
    assert default.names == ("interactive", "batch") and default.default == "interactive"
    assert default.tier("interactive").targets == SloTargets(ttft=2.0, tbt=0.2)
    assert not default.requires_api_key
    with pytest.raises(UnknownTierError, match="unknown QoS tier 'Q9'; known tiers: Q1, Q2, Q3"):
        paper.tier("Q9")


def test_overrides_tighten_only():
    paper = builtin_tier_config("paper")
    q1, q2 = paper.tier("Q1"), paper.tier("Q2")
    assert apply_overrides(q1, ttft=2.0) == SloTargets(ttft=2.0, tbt=0.05)
    assert apply_overrides(q1, ttft=6.0, tbt=0.02) == SloTargets(ttft=6.0, tbt=0.02)
    assert apply_overrides(q2, ttlt=60.0) == SloTargets(ttlt=60.0)
    assert apply_overrides(q2) is q2.targets
    with pytest.raises(SloOverrideError) as info:
        apply_overrides(q1, ttft=10.0)
    assert str(info.value) == "ttft override 10s is looser than tier 'Q1''s 6s; a request may only tighten its targets"
    with pytest.raises(SloOverrideError, match="tier 'Q2' is batch and has no ttft target"):
        apply_overrides(q2, ttft=1.0)
    with pytest.raises(SloOverrideError, match="must be positive"):
        apply_overrides(q1, tbt=0.0)
