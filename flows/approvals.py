"""Who may decide a promotion, and how an answer proves who gave it.

Prefect's server authenticates one API credential, not people: whoever holds it can resume a
paused run with any reviewer name. An app's registration narrows that in one of two ways:

- `approvers`: the names an answer may carry. It keeps honest people from typos and strangers'
  names, not one holder of the credential from typing another's.
- `approver_keys`: each approver's ed25519 public key (the OpenSSH line `ssh-keygen -t ed25519`
  writes). An answer then carries a signature, made with that person's private key, over the
  flow run's id, the decision, the reviewer and the comment; the private key never reaches
  Prefect. A signature decides only the run it names, so one read back from Prefect's stored run
  inputs cannot approve another promotion.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from prefect.input import RunInput

from flows.errors import ConfigurationError

KEY_TYPE = "ssh-ed25519"


class Approval(RunInput):
    """What a reviewer answers in the UI when a promotion waits for approval."""

    approve: bool
    reviewer: str
    comment: str = ""
    signature: str = ""  # base64; needed when the app's registration lists approver_keys


def signed_text(flow_run_id: UUID | str, approve: bool, reviewer: str, comment: str) -> bytes:
    """The bytes an approver signs: one line per field, the decision spelt out."""
    decision = "approve" if approve else "reject"
    return f"aiship-approval/1\n{UUID(str(flow_run_id))}\n{decision}\n{reviewer.strip()}\n{comment}".encode()


def public_key(line: str) -> Ed25519PublicKey:
    """An OpenSSH ed25519 public key line (`ssh-ed25519 AAAA... comment`); ValueError names what is wrong."""
    kind = line.split(maxsplit=1)[0] if line.strip() else ""
    if kind != KEY_TYPE:
        raise ValueError(f"an approver key must be an {KEY_TYPE} public key line (ssh-keygen -t ed25519 writes it to "
                         f"the .pub file); this one starts with {kind or 'nothing'!r}")
    try:
        key = serialization.load_ssh_public_key(line.strip().encode())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the {KEY_TYPE} key line does not parse ({exc}); copy the whole .pub file's line") from None
    return key  # type: ignore[return-value]  # the kind check above makes it an Ed25519PublicKey


def fingerprint(line: str) -> str:
    """The key's fingerprint as `ssh-keygen -lf` prints it (SHA256:...)."""
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def private_key(path: Path, passphrase: Callable[[], str] | None = None) -> Ed25519PrivateKey:
    """An approver's ed25519 private key, OpenSSH or PEM, from `path`; `passphrase` is asked only
    when the key is protected by one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the approver key {path}: {exc.strerror}; give the private key's path "
                                 "(ssh-keygen -t ed25519 -f FILE makes one)") from None
    loader = serialization.load_ssh_private_key if b"OPENSSH PRIVATE KEY" in data else serialization.load_pem_private_key
    try:
        try:
            key = loader(data, None)
        except TypeError:
            if passphrase is None:
                raise ConfigurationError(f"the approver key {path} is protected by a passphrase; set "
                                         "AISHIP_APPROVER_PASSPHRASE, or run from a terminal to be asked") from None
            key = loader(data, passphrase().encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(f"the approver key {path} does not load ({exc}); give an ed25519 private key and "
                                 "its passphrase") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"the approver key {path} is not ed25519; make one with ssh-keygen -t ed25519")
    return key


def sign(key: Ed25519PrivateKey, flow_run_id: UUID | str, approve: bool, reviewer: str, comment: str) -> str:
    """The answer's signature, base64, as the Approval's `signature` field carries it."""
    return base64.b64encode(key.sign(signed_text(flow_run_id, approve, reviewer, comment))).decode()


def refusal(answer: Approval, flow_run_id: UUID | str, approvers: list[str],
            approver_keys: dict[str, str]) -> str | None:
    """Why an answer cannot decide the promotion (None when it can): it must name a reviewer; one of
    the approvers when the registration lists any; and, when it lists keys, be signed by that
    reviewer's key for this run."""
    reviewer = answer.reviewer.strip()
    if not reviewer:
        return "the answer names no reviewer"
    allowed = list(approver_keys) or approvers
    if allowed and reviewer not in allowed:
        return f"{reviewer!r} is not one of the app's approvers ({', '.join(allowed)})"
    if not approver_keys:
        return None
    if not answer.signature:
        return (f"the answer is not signed; the app's approvers sign theirs (aiship approve RUN --reviewer {reviewer} "
                "--key PRIVATE_KEY)")
    try:
        public_key(approver_keys[reviewer]).verify(base64.b64decode(answer.signature, validate=True),
                                                   signed_text(flow_run_id, answer.approve, reviewer, answer.comment))
    except (InvalidSignature, ValueError):
        return (f"the signature is not {reviewer}'s key ({fingerprint(approver_keys[reviewer])}) over this run, "
                "decision and comment")
    return None
