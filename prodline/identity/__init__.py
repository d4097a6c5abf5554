"""Who decided: documents people sign with their SSH keys, and their verification.

A decision (an approval, a start, an ``app apply``) is a small JSON document in
canonical form, signed in the SSHSIG format ``ssh-keygen -Y sign -n prodline``
produces; the engine verifies the signature against the public keys enrolled
for people and learns who made the decision from the key, never from a flag.

* :mod:`.documents` -- the signed documents and :class:`~.documents.Signed`, the
  (public) pair that travels in Temporal payloads; pydantic only, deterministic
* :mod:`.verify` -- keyrings of enrolled keys and :func:`~.verify.verify`; pure,
  so the release workflow runs it in workflow code with ``workflow.now()``
* :mod:`.signing` -- the client side: signing with a key file or ssh-agent

Nothing is imported here: the CLI needs only :mod:`.documents`, and the other
two pull in ``cryptography``, which ``prodline --help`` must not pay for.
"""
