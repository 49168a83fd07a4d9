"""Signing keys and CDS client JWTs for tests, made the way a CDS client makes them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@dataclass
class Signer:
    """One key pair of a CDS client: signs tokens, exports its public JWK."""

    alg: str
    kid: str
    private_key: object

    @classmethod
    def es384(cls, kid: str | None = None) -> Signer:
        return cls("ES384", kid or f"ec-{uuid.uuid4()}", ec.generate_private_key(ec.SECP384R1()))

    @classmethod
    def rs384(cls, kid: str | None = None) -> Signer:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls("RS384", kid or f"rsa-{uuid.uuid4()}", key)

    def jwk(self) -> dict:
        """The public key as a JWK, as a client publishes it."""
        algorithm = jwt.get_algorithm_by_name(self.alg)
        jwk = algorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(
        self,
        aud,
        iss: str,
        *,
        lifetime: int = 300,
        iat: int | None = None,
        drop: tuple[str, ...] = (),
        header: dict | None = None,
        alg: str | None = None,
        **claims,
    ) -> str:
        """A signed JWT with the claims the CDS Hooks spec asks for; override any of them."""
        iat = int(time.time()) if iat is None else iat
        payload = {
            "iss": iss,
            "aud": aud,
            "iat": iat,
            "exp": iat + lifetime,
            "jti": str(uuid.uuid4()),
            **claims,
        }
        for name in drop:
            payload.pop(name, None)
        headers = {"kid": self.kid, "typ": "JWT", **(header or {})}
        # Signed as raw JSON, so a test can send claims PyJWT itself would refuse to encode.
        return jwt.api_jws.encode(
            json.dumps(payload).encode(),
            self.private_key,
            algorithm=alg or self.alg,
            headers=headers,
        )


def jwks(*signers: Signer) -> dict:
    return {"keys": [signer.jwk() for signer in signers]}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict, payload: dict, secret: bytes | None = None) -> str:
    """A token PyJWT would refuse to make: alg none, or HS256 keyed with a public key PEM."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    if secret is None:
        return signing_input + "."
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"
