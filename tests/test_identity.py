"""Signed documents: signing with SSH keys, verification, and each way a signature is refused.

Interop is checked against the real ssh-keygen both ways, since people sign with
their own OpenSSH tools and git's allowed_signers files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from prodline.errors import InvalidInput
from prodline.identity.documents import DecisionDocument, Document, SignatureRefused, Signed, StartDocument
from prodline.identity.signing import SigningError, generate, public_key, sign
from prodline.identity.verify import Keyring, Signer, fingerprint, key_problem, load_allowed_signers, verify

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


def decision(by: str = "", now: datetime = NOW, valid_for: timedelta = timedelta(minutes=10)) -> DecisionDocument:
    return DecisionDocument.issue(
        now=now,
        valid_for=valid_for,
        by=by,
        release="payments-42",
        run="run-1",
        environment="prod",
        verdict="approve",
        comment="looks good",
        plans={"terraform": "sha256:aaa"},
        bundle="sha256:bbb",
        revision=3,
    )


def ssh_keygen(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ssh-keygen", *args], input=stdin, capture_output=True, env=env, check=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    paths = {name: folder / f"id_{name}" for name in ("alice", "bob")}
    for name, path in paths.items():
        generate(path, comment=f"{name}@example.com")
    rsa = folder / "id_carol_rsa"  # made by ssh-keygen: its own RSA key format, read in-process
    assert ssh_keygen("-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "carol", "-f", str(rsa)).returncode == 0
    paths["carol"] = rsa
    return paths


@pytest.fixture(scope="module")
def keyring(keys: dict[str, Path]) -> Keyring:
    return Keyring.of({name: [public_key(path)] for name, path in keys.items()})


def signed(document: Document, key: Path) -> Signed:
    return Signed(document=document.text(), signature=sign(document.text(), key))


def refused(
    signed_document: Signed, keyring: Keyring, kind: type[Document] = DecisionDocument, now: datetime = NOW
) -> str:
    with pytest.raises(SignatureRefused) as caught:
        verify(signed_document, kind, keyring, now)
    return caught.value.reason


# --- signing and verifying -----------------------------------------------------------------


def test_a_signed_decision_verifies_as_its_signer_with_ssh_keygens_fingerprint(keys, keyring):
    document = decision(by="alice")
    verified, signer = verify(signed(document, keys["alice"]), DecisionDocument, keyring, NOW)

    printed = ssh_keygen("-lf", f"{keys['alice']}.pub").stdout.decode().split()[1]
    assert signer == Signer(person="alice", fingerprint=printed)
    assert verified == document
    assert fingerprint(public_key(keys["alice"])) == printed


def test_an_rsa_key_signs_and_verifies(keys, keyring):
    _, signer = verify(signed(decision(), keys["carol"]), DecisionDocument, keyring, NOW)
    assert signer.person == "carol"
    assert signer.fingerprint == ssh_keygen("-lf", f"{keys['carol']}.pub").stdout.decode().split()[1]


@pytest.mark.parametrize("person", ["alice", "carol"])
def test_in_process_signature_is_byte_for_byte_what_ssh_keygen_makes(keys, person):
    # ed25519 and RSA PKCS#1 v1.5 are deterministic: same key, same message, same armor.
    text = decision().text()
    made = ssh_keygen("-Y", "sign", "-n", "prodline", "-f", str(keys[person]), stdin=text.encode())
    assert made.returncode == 0, made.stderr
    assert sign(text, keys[person]) == made.stdout.decode()


def test_a_signature_made_by_ssh_keygen_verifies(keys, keyring):
    text = decision(by="bob").text()
    made = ssh_keygen("-Y", "sign", "-n", "prodline", "-f", str(keys["bob"]), stdin=text.encode())
    _, signer = verify(Signed(document=text, signature=made.stdout.decode()), DecisionDocument, keyring, NOW)
    assert signer.person == "bob"


def test_ssh_keygen_verifies_our_signature_in_the_prodline_namespace_only(keys, tmp_path):
    text = decision().text()
    (tmp_path / "sig").write_text(sign(text, keys["alice"]))
    (tmp_path / "allowed_signers").write_text(f"alice {public_key(keys['alice'])}\n")
    common = ["-f", str(tmp_path / "allowed_signers"), "-I", "alice", "-s", str(tmp_path / "sig")]

    assert ssh_keygen("-Y", "verify", "-n", "prodline", *common, stdin=text.encode()).returncode == 0
    assert ssh_keygen("-Y", "verify", "-n", "git", *common, stdin=text.encode()).returncode != 0


def test_a_key_in_ssh_agent_signs_through_its_pub_file(keys, tmp_path, monkeypatch):
    key = tmp_path / "id_agent"
    generate(key)
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-a", str(sock), "-D"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not sock.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.01)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        added = subprocess.run(["ssh-add", str(key)], env=env, capture_output=True, check=False)
        assert added.returncode == 0, added.stderr
        key.unlink()  # only the agent holds the private key now
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))

        document = decision()
        signature = sign(document.text(), tmp_path / "id_agent.pub", prompt=False)
    finally:
        agent.terminate()
        agent.wait(5)
    agent_ring = Keyring.of({"dora": [public_key(tmp_path / "id_agent.pub")]})
    assert (
        verify(Signed(document=document.text(), signature=signature), DecisionDocument, agent_ring, NOW)[1].person
        == "dora"
    )


def test_a_passphrase_protected_key_without_a_terminal_is_a_signing_error_naming_the_file(tmp_path):
    key = tmp_path / "id_locked"
    assert ssh_keygen("-q", "-t", "ed25519", "-N", "secret", "-f", str(key)).returncode == 0
    started = time.monotonic()
    with pytest.raises(SigningError) as caught:
        sign("{}", key, prompt=False)
    assert time.monotonic() - started < 5  # fails, does not wait for a passphrase
    assert str(key) in str(caught.value)
    assert "passphrase" in str(caught.value)
    assert caught.value.exit_code == InvalidInput.exit_code
    # Its public half is still readable, from the .pub next to it.
    assert public_key(key) == (tmp_path / "id_locked.pub").read_text().strip()


def test_a_missing_key_file_is_a_signing_error_naming_it(tmp_path):
    with pytest.raises(SigningError, match="id_nothing does not exist"):
        sign("{}", tmp_path / "id_nothing")


def test_an_ecdsa_key_is_refused_when_signing_not_later(tmp_path):
    key = tmp_path / "id_ecdsa"
    assert ssh_keygen("-q", "-t", "ecdsa", "-N", "", "-f", str(key)).returncode == 0
    with pytest.raises(SigningError, match="only ssh-ed25519 and ssh-rsa keys can be verified"):
        sign("{}", key)


def test_generate_never_overwrites_a_key(tmp_path):
    key = tmp_path / "id"
    generate(key)
    assert key.stat().st_mode & 0o777 == 0o600
    before = key.read_bytes()
    with pytest.raises(SigningError, match="already exists"):
        generate(key)
    assert key.read_bytes() == before


# --- refusals ----------------------------------------------------------------------------


def test_an_unknown_key_is_refused_with_its_fingerprint(keys):
    only_bob = Keyring.of({"bob": [public_key(keys["bob"])]})
    reason = refused(signed(decision(), keys["alice"]), only_bob)
    assert reason == f"key {fingerprint(public_key(keys['alice']))} is not enrolled"


def test_a_tampered_document_is_refused(keys, keyring):
    genuine = signed(decision(), keys["alice"])
    tampered = genuine.model_copy(update={"document": genuine.document.replace('"prod"', '"prof"')})
    assert tampered.document != genuine.document
    assert refused(tampered, keyring) == "the signature does not match the signed document"


def test_a_signature_for_another_namespace_is_refused(keys, keyring):
    # A git commit signature made with an enrolled key is not an approval.
    text = decision().text()
    made = ssh_keygen("-Y", "sign", "-n", "git", "-f", str(keys["alice"]), stdin=text.encode())
    reason = refused(Signed(document=text, signature=made.stdout.decode()), keyring)
    assert "namespace 'git', not 'prodline'" in reason


def test_a_listed_name_with_another_persons_key_is_refused(keys, keyring):
    assert refused(signed(decision(by="alice"), keys["bob"]), keyring) == "signed with bob's key, not alice's"


def test_an_expired_document_is_refused(keys, keyring):
    document = signed(decision(), keys["alice"])
    assert (
        verify(document, DecisionDocument, keyring, NOW + timedelta(minutes=10))[1].person == "alice"
    )  # the last valid moment
    reason = refused(document, keyring, now=NOW + timedelta(minutes=10, seconds=1))
    assert reason == "the signed decision expired at 2026-12-02 03:10:00Z"


def test_a_document_issued_in_the_future_is_refused_beyond_the_clock_skew(keys, keyring):
    slightly_ahead = signed(decision(now=NOW + timedelta(minutes=4)), keys["alice"])
    assert verify(slightly_ahead, DecisionDocument, keyring, NOW)[1].person == "alice"
    far_ahead = signed(decision(now=NOW + timedelta(minutes=6)), keys["alice"])
    assert "issued in the future" in refused(far_ahead, keyring)


def test_a_document_valid_for_more_than_a_day_is_refused(keys, keyring):
    reason = refused(signed(decision(valid_for=timedelta(hours=25)), keys["alice"]), keyring)
    assert "valid for more than 24h" in reason


def test_a_signed_start_is_not_a_decision(keys, keyring):
    start = StartDocument.issue(now=NOW, release="payments-42", application="payments", service="api", version="1.2.3")
    reason = refused(signed(start, keys["alice"]), keyring)
    assert (
        reason
        == "the signed document is not a prodline decision: its kind is 'prodline.start/v1', not 'prodline.decision/v1'"
    )


def test_a_document_with_a_key_twice_is_refused_even_when_signed(keys, keyring):
    # A reader might see the first "verdict", a parser the last: such a text is no document.
    text = decision().text().replace('"verdict":"approve"', '"verdict":"approve","verdict":"reject"')
    reason = refused(Signed(document=text, signature=sign(text, keys["alice"])), keyring)
    assert reason == "the signed document is not a prodline decision: the key 'verdict' appears twice"


@pytest.mark.parametrize(
    "garbage", ["", "approved!", "-----BEGIN SSH SIGNATURE-----\n!!!!\n-----END SSH SIGNATURE-----\n"]
)
def test_garbage_armor_is_refused(keyring, garbage):
    reason = refused(Signed(document=decision().text(), signature=garbage), keyring)
    assert reason == "the signature is not an SSH signature (ssh-keygen -Y sign -n prodline)"


# --- enrolment ---------------------------------------------------------------------------


def test_allowed_signers_enrols_only_keys_for_the_prodline_namespace(keys, tmp_path):
    alice, bob = public_key(keys["alice"]), public_key(keys["bob"])
    path = tmp_path / "allowed_signers"
    path.write_text(
        "# admins\n"
        "\n"
        f'alice@example.com namespaces="git" {alice}\n'
        f'bob@example.com,bob@corp.example namespaces="git,prodline" {bob}\n'
    )
    admins = load_allowed_signers(path)
    assert len(admins) == 1
    assert refused(signed(decision(), keys["alice"]), admins).endswith("is not enrolled")
    assert verify(signed(decision(), keys["bob"]), DecisionDocument, admins, NOW)[1].person == "bob@example.com"

    path.write_text(f"alice@example.com {alice}\n")  # no namespaces option: every namespace
    assert (
        verify(signed(decision(), keys["alice"]), DecisionDocument, load_allowed_signers(path), NOW)[1].person
        == "alice@example.com"
    )


def test_a_bad_allowed_signers_line_names_file_and_line(keys, tmp_path):
    path = tmp_path / "allowed_signers"
    path.write_text(f"# admins\nalice {public_key(keys['alice'])}\nbob ssh-ed25519 AAAAnot-a-key\n")
    with pytest.raises(InvalidInput, match=f"^{path}:3: not an OpenSSH public key"):
        load_allowed_signers(path)


def test_one_key_for_two_people_is_refused(keys):
    line = public_key(keys["alice"])
    with pytest.raises(InvalidInput, match=r"^bob\[0\]: the key SHA256:\S+ is already alice's"):
        Keyring.of({"alice": [line], "bob": [line]})


def test_key_problem_explains_unusable_keys(keys, tmp_path):
    ecdsa = tmp_path / "id_ecdsa"
    assert ssh_keygen("-q", "-t", "ecdsa", "-N", "", "-f", str(ecdsa)).returncode == 0
    assert key_problem(public_key(ecdsa)) == "ecdsa-sha2-nistp256: only ssh-ed25519 and ssh-rsa keys can be verified"
    assert key_problem("hello").startswith("not an OpenSSH public key")
    assert key_problem("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDamaged").startswith("not an OpenSSH public key")
    assert key_problem(public_key(keys["alice"])) == ""
    assert key_problem(public_key(keys["carol"])) == ""


def test_canonical_text_does_not_depend_on_field_order():
    one = DecisionDocument.issue(
        now=NOW, release="r", run="1", environment="prod", verdict="approve", plans={"a": "1", "b": "2"}
    )
    other = DecisionDocument.issue(
        plans={"b": "2", "a": "1"}, verdict="approve", environment="prod", run="1", release="r", now=NOW
    )
    assert one.text() == other.text()
    assert DecisionDocument.parse(one.text()) == one
    assert one.text().startswith('{"bundle":"","by":"","comment":""')


def test_times_are_utc_in_the_signed_text():
    later = DecisionDocument.issue(
        now=NOW.astimezone(timezone(timedelta(hours=2))), release="r", run="1", environment="prod", verdict="approve"
    )
    assert '"issued_at":"2026-12-02T03:00:00Z"' in later.text()
