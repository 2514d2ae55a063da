#!/usr/bin/env bash
# The local git repository: a bare repository whose post-receive hook sends each push, as a signed
# GitHub `push` delivery, to the webhook receiver (local/webhooks.sh) - the path a GitHub push takes.
#
#   local/git.sh up|down|status
#
# Nothing runs: `up` creates the repository (once) and (re)installs the hook from local/git/;
# `down` leaves the repository and its commits alone (data, not a process); `status` is `ready`
# when the repository and its hook are in place. Push to it from a work tree with:
#   git remote add local <path printed by status>  &&  git push local main
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO="$PART_DIR/aiship.git"
HOOK="$REPO/hooks/post-receive"
TEMPLATE="$AISHIP_ROOT/local/git/post-receive"
WEBHOOK_PORT="${AISHIP_WEBHOOK_PORT:-8700}"
# Where local/webhooks.sh leaves the hook's copy of the secret (its own state folder).
SECRET_FILE="${AISHIP_WEBHOOK_SECRET_FILE:-$STATE_DIR/webhooks/secret}"
# owner/repo as GitHub would name it (the event's resource id is aiship.repo.<owner/repo>).
FULL_NAME="${AISHIP_GIT_REPO_NAME:-local/aiship}"

git_version() { git --version 2>/dev/null | awk '{print "git", $3}' || echo -; }

install_hook() {
    local python="/usr/bin/env python3" tmp="$HOOK.tmp.$$"
    [[ -x "$VENV_BIN/python" ]] && python="$VENV_BIN/python"
    [[ -f "$TEMPLATE" ]] || die "the hook template $TEMPLATE is missing; restore it from the aiship repository"
    # The shebang names a python that exists here; the hook itself uses only the standard library.
    { echo "#!$python"; tail -n +2 "$TEMPLATE"; } >"$tmp"
    chmod 755 "$tmp" && mv "$tmp" "$HOOK"
}

part_up() {
    command -v git >/dev/null || apt_install git
    # ssh-keygen makes approvers' ed25519 keys (docs/getting-started-app-developer.md, the tests)
    command -v ssh-keygen >/dev/null || apt_install openssh-client
    if [[ ! -f "$REPO/HEAD" ]]; then
        log "creating the bare repository $REPO"
        local tmp="$REPO.tmp.$$"
        rm -rf "$tmp"
        git init --quiet --bare --initial-branch=main "$tmp" >"$PART_DIR/init.log" 2>&1 \
            || { rm -rf "$tmp"; die "git init --bare failed (log: $PART_DIR/init.log); check that $PART_DIR is writable"; }
        mv "$tmp" "$REPO"
    fi
    git --git-dir="$REPO" config aiship.url "http://127.0.0.1:$WEBHOOK_PORT/github"
    git --git-dir="$REPO" config aiship.secretFile "$SECRET_FILE"
    git --git-dir="$REPO" config aiship.repository "$FULL_NAME"
    install_hook
    # Seed `main` with this checkout's HEAD once, by fetching into the bare repository: a fetch runs
    # no receive hook, so seeding delivers nothing. Later code arrives by `git push local main`.
    if ! git --git-dir="$REPO" rev-parse --verify --quiet refs/heads/main >/dev/null; then
        git --git-dir="$REPO" fetch --quiet "$AISHIP_ROOT" "HEAD:refs/heads/main" >>"$PART_DIR/init.log" 2>&1 \
            || log "note: could not seed main from $AISHIP_ROOT (log: $PART_DIR/init.log); push to it instead"
    fi
    [[ -s "$SECRET_FILE" ]] || log "note: $SECRET_FILE is missing; pushes are kept but not delivered until \`aiship local up webhooks\`"
    log "ready at $REPO; push to it with: git remote add local $REPO && git push local main"
}

part_down() { :; }

part_status() {
    if [[ -f "$REPO/HEAD" && -x "$HOOK" ]]; then
        log "push to it with: git remote add local $REPO && git push local main"
        status_line ready "$REPO" "" "$(git_version)"
    else
        status_line stopped "$REPO" "" "$(git_version)"
    fi
}

dispatch "$@"
