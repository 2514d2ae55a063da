"""The pure decisions inside the flows: the delivery guard, what the watcher announces, which
release a rollback picks, how app-test failures are named, and which platform parts are known."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.app_tests import failing_tests
from flows.deliver import skip_reason
from flows.environments import ServingVersion
from flows.errors import ConfigurationError, PlatformError
from flows.local_platform import PARTS, check_parts
from flows.promote import pick_release, promotable
from flows.release import ModelId, Release
from flows.watch import to_announce

SHA_A, SHA_B = "a" * 40, "b" * 40
M1, M2 = "1" * 64, "2" * 64  # model sha256s


def release(version: int, model_sha: str = M2, name: str = "iris", git_sha: str = SHA_A) -> Release:
    return Release(app="aiship-app", git_sha=git_sha, model=ModelId(name=name, version=version, sha256=model_sha))


def serving(version: int, git_sha: str = SHA_A, model_sha: str = M1, name: str = "iris", digest: str = "sha256:" + "1" * 64) -> ServingVersion:
    pinned = release(version, model_sha, name, git_sha).pinned(f"127.0.0.1:5000/aiship-app@{digest}")
    return ServingVersion("staging", "aiship-staging", pinned, "2026-11-25T00:00:00Z", 2, 2, "http://127.0.0.1:16180")


def test_nothing_serving_never_skips():
    assert skip_reason(None, release(1), by_event=True) is None


def test_the_same_inputs_already_serving_are_skipped_whoever_asks():
    for by_event in (True, False):
        assert "already serves" in skip_reason(serving(3, model_sha=M2), release(3, M2), by_event)


def test_the_same_inputs_left_unfinished_by_a_dead_run_are_rolled_out_again():
    from dataclasses import replace

    assert skip_reason(replace(serving(3, model_sha=M2), complete=False), release(3, M2), by_event=True) is None


def test_promote_refuses_a_digest_whose_rollout_is_unfinished():
    from dataclasses import replace

    from flows.errors import RolloutError

    now = serving(3)
    assert promotable(now, "aiship-app", "staging") == now.release
    with pytest.raises(RolloutError, match="has not completed") as caught:
        promotable(replace(now, complete=False), "aiship-app", "staging")
    assert caught.value.reason == "RolloutUnfinished"
    with pytest.raises(ConfigurationError, match="deliver there first"):
        promotable(None, "aiship-app", "staging")


def test_an_event_never_moves_an_environment_to_an_older_commit_but_a_redeploy_may():
    history = {(SHA_A, SHA_B)}  # SHA_A is an ancestor of SHA_B, which serves
    older = lambda a, b: (a, b) in history  # noqa: E731
    reason = skip_reason(serving(3, git_sha=SHA_B), release(3), by_event=True, is_ancestor=older)
    assert reason and "older than" in reason and f"git_ref={SHA_A}" in reason
    assert skip_reason(serving(3, git_sha=SHA_B), release(3), by_event=False, is_ancestor=older) is None
    assert skip_reason(serving(3, git_sha=SHA_A), release(3, git_sha=SHA_B), by_event=True, is_ancestor=older) is None


def test_an_event_never_replaces_a_newer_version_of_the_same_model():
    reason = skip_reason(serving(5), release(4), by_event=True)
    assert reason and "newer" in reason and "model_version=4" in reason


def test_a_pinned_redeploy_from_the_ui_may_go_back():
    assert skip_reason(serving(5), release(4), by_event=False) is None


def test_an_event_for_a_newer_version_or_new_code_goes_ahead():
    assert skip_reason(serving(4), release(5), by_event=True) is None
    assert skip_reason(serving(4, git_sha=SHA_B, model_sha=M2), release(4, M2), by_event=True) is None


def test_another_model_serving_does_not_block_an_event():
    assert skip_reason(serving(9, name="digits"), release(1), by_event=True) is None


def test_first_watch_announces_only_the_newest_of_each_model():
    assert to_announce({"iris": [1, 2, 3], "digits": [1], "empty": []}, None) == {"iris": [3], "digits": [1]}


def test_later_watches_announce_every_version_above_the_highest_seen_once():
    published = {"iris": [1, 2, 3, 4, 5], "digits": [1, 2]}
    assert to_announce(published, {"iris": 3, "digits": 2}) == {"iris": [4, 5]}
    assert to_announce(published, {"iris": 5, "digits": 2}) == {}
    assert to_announce({"new": [1]}, {"iris": 5}) == {"new": [1]}


def test_rollback_picks_the_previous_release_or_the_named_digest():
    older, oldest = serving(2, digest="sha256:" + "2" * 64), serving(1, digest="sha256:" + "3" * 64)
    assert pick_release([older, oldest], None, "staging") is older
    assert pick_release([older, oldest], "3" * 64, "staging") is oldest
    assert pick_release([older, oldest], "sha256:" + "3" * 64, "staging") is oldest


def test_rollback_to_a_digest_that_never_served_names_the_ones_that_did():
    with pytest.raises(ConfigurationError, match="never served in staging.*sha256:2222"):
        pick_release([serving(2, digest="sha256:" + "2" * 64)], "f" * 64, "staging")
    with pytest.raises(ConfigurationError, match="nothing to roll back to"):
        pick_release([], None, "staging")


def test_failing_app_tests_are_named_from_the_junit_report(tmp_path: Path):
    report = tmp_path / "junit.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="app.tests.test_api" name="test_ok"/>'
        '<testcase classname="app.tests.test_api" name="test_broken"><failure message="boom"/></testcase>'
        '<testcase classname="app.tests.test_api" name="test_error"><error message="oops"/></testcase>'
        '<testcase classname="app.tests.test_api" name="test_skip"><skipped/></testcase>'
        "</testsuite></testsuites>"
    )
    passed, failed = failing_tests(report)
    assert passed == 1
    assert failed == ("app.tests.test_api::test_broken", "app.tests.test_api::test_error")


def test_parts_are_known_and_ordered():
    assert check_parts([]) == list(PARTS)
    assert check_parts(["kubernetes", "docker"]) == ["docker", "kubernetes"]
    with pytest.raises(PlatformError, match="unknown part 'dockr'.*docker"):
        check_parts(["dockr"])


def test_a_malformed_manifest_is_skipped_once_and_never_stops_the_other_models(tmp_path):
    from flows.model_store import LocalModelStore
    from flows.watch import announce_versions
    from tests.fixtures.models import good_model

    store = LocalModelStore(tmp_path / "store")
    store.publish(good_model(tmp_path / "a"), "iris")
    store.publish(good_model(tmp_path / "b"), "digits")
    broken = tmp_path / "store" / "models" / "digits" / "2"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"name": "digits", "version": 2, "written": "by hand"}')
    emitted, remembered = [], []
    announced, skipped = announce_versions(store, {"digits": [1, 2], "iris": [1]}, {}, emitted.append,
                                           lambda memory: remembered.append(dict(memory)))
    assert announced == {"digits": [1], "iris": [1]} and [(r.name, r.version) for r in emitted] == [("digits", 1), ("iris", 1)]
    assert len(skipped) == 1 and skipped[0].startswith("digits v2: ") and "is not a valid manifest" in skipped[0]
    assert remembered[-1] == {"digits": 2, "iris": 1}  # remembered: the next watch does not report it again
