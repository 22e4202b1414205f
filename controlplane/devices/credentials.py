"""Secrets handed to agents and users: generated here, stored only as a SHA-256 digest.

The secrets are 256-bit random strings, so a plain (unsalted, fast) digest is enough: there is
nothing to brute-force, and a digest lets the server find the device by its credential.
"""
import hashlib
import secrets


def new_secret() -> str:
    """A fresh secret of 256 bits, in hex: a URL-safe one starts with '-' once in 64 draws,
    and a command line (``--token SECRET``) then reads it as an option."""
    return secrets.token_hex(32)


def digest(secret: str) -> str:
    """The hex SHA-256 of ``secret``: what the database stores."""
    return hashlib.sha256(secret.encode()).hexdigest()
