"""Password hashing for the test run: Django's own PBKDF2, with fewer iterations.

At Django's 1,000,000 iterations one hash costs a quarter of a second or more, and the suite creates users (each
with a password) by the hundred: that was a third of its set-up time. The hashes made here are ordinary
`pbkdf2_sha256` hashes that carry their iteration count, so a gateway subprocess, which runs with the default
settings, verifies them too (and re-hashes at full strength on that login).
"""

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1_000


def use_quick_hashing() -> None:
    """Make it the hasher new passwords get, in this process (tests/conftest.py calls it before any test runs)."""
    from django.conf import settings
    from django.contrib.auth import hashers

    settings.PASSWORD_HASHERS = [f"{__name__}.QuickPBKDF2PasswordHasher", *settings.PASSWORD_HASHERS]
    hashers.get_hashers.cache_clear()
    hashers.get_hashers_by_algorithm.cache_clear()
