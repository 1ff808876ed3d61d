"""The local stack's own token issuer: a signing key generated at run time, never committed.

``DevIssuer.create(directory)`` writes a fresh RSA key and a self-signed certificate into a
gitignored folder, in the shape of Google's securetoken certificate map (``kid -> PEM``),
so the same verifier code serves production and the local stack. Tokens it mints carry
exactly the claims of a Firebase ID token.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

PRIVATE_KEY_FILE = "signing-key.pem"
CERTS_FILE = "certs.json"
KID_FILE = "kid"


@dataclass(frozen=True)
class DevIssuer:
    directory: Path
    project_id: str

    @property
    def certs_url(self) -> str:
        return (self.directory / CERTS_FILE).resolve().as_uri()

    @classmethod
    def ensure(cls, directory: Path, project_id: str) -> DevIssuer:
        """Reuse the key in ``directory`` or generate one there."""
        issuer = cls(directory, project_id)
        if not (directory / PRIVATE_KEY_FILE).exists():
            issuer._generate()
        return issuer

    def _generate(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "circadia local token issuer")])
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        kid = secrets.token_hex(20)
        key_path = self.directory / PRIVATE_KEY_FILE
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (self.directory / KID_FILE).write_text(kid)
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        (self.directory / CERTS_FILE).write_text(json.dumps({kid: pem}, indent=2))

    def mint(self, user_id: str, *, ttl: int = 3600, now: float | None = None) -> str:
        """A Firebase-shaped ID token for ``user_id``, valid for ``ttl`` seconds."""
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": f"https://securetoken.google.com/{self.project_id}",
            "aud": self.project_id,
            "sub": user_id,
            "user_id": user_id,
            "iat": issued,
            "auth_time": issued,
            "exp": issued + ttl,
            "firebase": {"sign_in_provider": "custom", "identities": {}},
        }
        return self.sign(claims)

    def sign(self, claims: dict, *, kid: str | None = None, algorithm: str = "RS256") -> str:
        key, current_kid = _signing_key(self.directory / PRIVATE_KEY_FILE, self.directory / KID_FILE)
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid if kid is not None else current_kid})


@functools.lru_cache(maxsize=16)
def _signing_key(key_file: Path, kid_file: Path) -> tuple[rsa.RSAPrivateKey, str]:
    """Parse the PEM once per key file (parsing costs tens of milliseconds, signing one)."""
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):  # the issuer only ever writes RSA keys
        raise TypeError(f"{key_file}: expected an RSA private key, found {type(key).__name__}")
    return key, kid_file.read_text()
