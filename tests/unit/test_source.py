"""flows.source on a real git repository made in a temporary folder (git only, no services)."""

from __future__ import annotations

import os
import subprocess

import pytest

from flows.errors import ConfigurationError
from flows.source import check_ref, checkout, is_ancestor

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": "/dev/null"}


def commit(repo, message: str) -> str:
    (repo / "f").write_text(message)
    subprocess.run(["git", "add", "f"], cwd=repo, check=True, env=GIT_ENV)
    subprocess.run(["git", "commit", "-qm", message], cwd=repo, check=True, env=GIT_ENV)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, env=GIT_ENV, capture_output=True, text=True).stdout.strip()


def test_is_ancestor_answers_from_the_checked_out_history(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True, env=GIT_ENV)
    first, second = commit(repo, "one"), commit(repo, "two")
    tree = checkout(str(repo), "main", workdir=tmp_path)
    assert tree.sha == second
    assert is_ancestor(tree, first, second) and not is_ancestor(tree, second, first)
    assert not is_ancestor(tree, second, second) and not is_ancestor(tree, "f" * 40, second)


@pytest.mark.parametrize("ref", ["main", "v1.2", "feature/x", "0123456789abcdef0123456789abcdef01234567"])
def test_branches_tags_and_shas_are_refs(ref):
    assert check_ref(ref) == ref


@pytest.mark.parametrize("ref", ["", "-x", "--upload-pack=touch /tmp/p", "a..b", "feature x", "main~1^", "refs/heads/x.lock"])
def test_what_cannot_name_a_commit_is_refused_before_cloning(ref):
    with pytest.raises(ConfigurationError, match="is not a branch, tag or commit SHA"):
        check_ref(ref)


def test_a_ref_that_is_not_there_leaves_no_clone_behind(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True, env=GIT_ENV)
    commit(repo, "one")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ConfigurationError, match="'no-such-branch' not found"):
        checkout(str(repo), "no-such-branch", workdir=work)
    assert not list(work.iterdir())
