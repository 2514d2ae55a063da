"""Who may decide a promotion: named approvers, and approvers whose answers carry their signature."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flows.app_config import AppConfigError
from flows.approvals import Approval, fingerprint, private_key, refusal, sign
from flows.apps import parse_registration
from flows.errors import ConfigurationError
from tests.unit.test_apps import REGRESSOR

RUN = uuid.UUID("0b0e4a4e-8f4e-4a53-9d1e-3c1f6d2a7b10")


def keypair() -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return key, line


def signed(key: Ed25519PrivateKey, reviewer: str = "ana", approve: bool = True, comment: str = "ok",
           run: uuid.UUID = RUN) -> Approval:
    return Approval(approve=approve, reviewer=reviewer, comment=comment, signature=sign(key, run, approve, reviewer, comment))


def test_an_approval_must_name_a_reviewer_and_one_of_the_approvers_when_there_are_any():
    assert refusal(Approval(approve=True, reviewer="  "), RUN, [], {}) == "the answer names no reviewer"
    assert refusal(Approval(approve=True, reviewer="ana"), RUN, [], {}) is None
    assert refusal(Approval(approve=True, reviewer="ana"), RUN, ["ana", "ben"], {}) is None
    assert refusal(Approval(approve=False, reviewer="mallory"), RUN, ["ana", "ben"], {}) == \
        "'mallory' is not one of the app's approvers (ana, ben)"


def test_with_approver_keys_only_an_answer_signed_by_the_reviewers_key_for_this_run_decides():
    ana, ana_pub = keypair()
    mallory, mallory_pub = keypair()
    keys = {"ana": ana_pub, "mallory": mallory_pub}
    assert refusal(signed(ana), RUN, [], keys) is None
    assert refusal(signed(ana, approve=False, comment="not yet"), RUN, [], keys) is None
    assert "is not signed" in refusal(Approval(approve=True, reviewer="ana"), RUN, [], keys)
    assert "'eve' is not one of the app's approvers (ana, mallory)" == refusal(signed(ana, reviewer="eve"), RUN, [], keys)
    forged = signed(mallory, reviewer="ana")  # mallory holds the Prefect credential too, and types ana's name
    assert refusal(forged, RUN, [], keys) == \
        f"the signature is not ana's key ({fingerprint(ana_pub)}) over this run, decision and comment"
    # a signature read back from an earlier run's stored input decides nothing else
    assert "signature is not" in refusal(signed(ana), uuid.uuid4(), [], keys)
    turned = signed(ana, approve=False).model_copy(update={"approve": True})
    assert "signature is not" in refusal(turned, RUN, [], keys)
    reworded = signed(ana).model_copy(update={"comment": "ship it, says ana"})
    assert "signature is not" in refusal(reworded, RUN, [], keys)
    assert "signature is not" in refusal(signed(ana).model_copy(update={"signature": "not base64!"}), RUN, [], keys)


def test_the_fingerprint_is_what_ssh_keygen_prints(tmp_path):
    _, line = keypair()
    (tmp_path / "ana.pub").write_text(line + " ana@example\n")
    printed = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "ana.pub")], capture_output=True, text=True, check=True)
    assert printed.stdout.split()[1] == fingerprint(line)


def test_a_key_ssh_keygen_made_signs_and_a_protected_one_asks_for_its_passphrase(tmp_path):
    for name, passphrase in (("plain", ""), ("protected", "correct horse")):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f", str(tmp_path / name)],
                       check=True)
    public = (tmp_path / "plain.pub").read_text().strip()
    assert refusal(signed(private_key(tmp_path / "plain")), RUN, [], {"ana": public}) is None
    with pytest.raises(ConfigurationError, match="protected by a passphrase; set AISHIP_APPROVER_PASSPHRASE"):
        private_key(tmp_path / "protected")
    with pytest.raises(ConfigurationError, match="does not load"):
        private_key(tmp_path / "protected", lambda: "wrong")
    key = private_key(tmp_path / "protected", lambda: "correct horse")
    assert refusal(signed(key), RUN, [], {"ana": (tmp_path / "protected.pub").read_text()}) is None
    with pytest.raises(ConfigurationError, match="cannot read the approver key .*missing"):
        private_key(tmp_path / "missing")
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(tmp_path / "ecdsa")], check=True)
    with pytest.raises(ConfigurationError, match="is not ed25519"):
        private_key(tmp_path / "ecdsa")


def test_a_registration_with_approver_keys_is_checked():
    _, line = keypair()
    registration = parse_registration(f'approver_keys = {{ ana = "{line} ana@example" }}\n' + REGRESSOR, "apps/r.toml")
    assert registration.approver_keys == {"ana": f"{line} ana@example"}
    for text, expected in (
        ('approver_keys = { ana = "ssh-rsa AAAAB3NzaC1yc2E" }\n', "must be an ssh-ed25519 public key line"),
        ('approver_keys = { ana = "ssh-ed25519 AAAA" }\n', "does not parse"),
        (f'approvers = ["ben"]\napprover_keys = {{ ana = "{line}" }}\n', "not both"),
    ):
        with pytest.raises(AppConfigError) as caught:
            parse_registration(text + REGRESSOR, "apps/r.toml")
        assert any(expected in problem for problem in caught.value.problems), caught.value.problems
