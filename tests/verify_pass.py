"""Verifies an anteroom pass the way an app would: with PyJWT, against the
keys anteroom publishes at /.well-known/jwks.json. Prints the session id.

usage: verify_pass.py JWKS_URL TOKEN ROOM
"""
import sys

import jwt

jwks_url, token, room = sys.argv[1:4]
key = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(token)
claims = jwt.decode(
    token,
    key.key,
    algorithms=["RS256"],
    audience=room,
    issuer="anteroom",
    options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub"]},
)
assert claims["kind"] == "pass", claims
print(claims["sub"])
