"""An OpenID Connect relying party (Authlib) signing in through our provider, as Grafana would.

Usage: oidc_rp.py ISSUER CLIENT_ID CLIENT_SECRET REDIRECT_URI COOKIE AUTH_METHOD

Fetches the discovery document, builds an authorization URL with PKCE S256, state and nonce,
calls authorize with the PepeunitGrafana cookie (the browser's part), checks the redirect's
state (Authlib does), exchanges the code (AUTH_METHOD: client_secret_basic or
client_secret_post), validates the id_token's RS256 signature against the JWKS and its claims
(iss, aud, exp, iat, nonce) with authlib.jose, calls userinfo, and prints one JSON line:
{"userinfo", "id_token", "token", "kid"}. Any failed check raises (exit status 1).
"""

import json
import sys
import warnings

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

with warnings.catch_warnings():
    # authlib.jose is deprecated in favour of joserfc; it is the API Authlib 1.x documents
    warnings.simplefilter("ignore")
    from authlib.jose import JsonWebKey, JsonWebToken
    from authlib.oidc.core import CodeIDToken


def main():
    issuer, client_id, client_secret, redirect_uri, cookie, auth_method = sys.argv[1:7]
    http = requests.Session()
    http.trust_env = False  # loopback only: no proxy

    discovery = http.get(issuer + "/.well-known/openid-configuration", timeout=10)
    discovery.raise_for_status()
    meta = discovery.json()
    assert meta["issuer"] == issuer, meta
    assert "S256" in meta["code_challenge_methods_supported"], meta
    assert auth_method in meta["token_endpoint_auth_methods_supported"], meta

    client = OAuth2Session(
        client_id,
        client_secret,
        scope="openid profile email",
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method=auth_method,
    )
    client.trust_env = False
    verifier = generate_token(64)
    nonce = generate_token(24)
    url, state = client.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )

    # the browser: the cookie goes along, the redirect is not followed (Grafana is not here)
    answer = http.get(
        url, cookies={"PepeunitGrafana": cookie}, allow_redirects=False, timeout=10
    )
    assert answer.status_code in (302, 303, 307), (answer.status_code, answer.text)
    location = answer.headers["Location"]
    assert location.startswith(redirect_uri + "?"), location
    assert "error=" not in location, location

    # raises MismatchingStateException unless the redirect carries our state
    token = client.fetch_token(
        meta["token_endpoint"],
        authorization_response=location,
        state=state,
        code_verifier=verifier,
    )
    assert token["token_type"].lower() == "bearer", token

    jwks = http.get(meta["jwks_uri"], timeout=10)
    jwks.raise_for_status()
    keys = JsonWebKey.import_key_set(jwks.json())
    claims = JsonWebToken(["RS256"]).decode(
        token["id_token"],
        keys,
        claims_cls=CodeIDToken,
        claims_options={
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": client_id},
        },
        claims_params={"nonce": nonce, "client_id": client_id},
    )
    claims.validate()  # iss, sub, aud, exp, iat, nonce (and azp, at_hash when present)
    assert claims["nonce"] == nonce, claims

    info = client.get(meta["userinfo_endpoint"], timeout=10)
    info.raise_for_status()
    print(
        json.dumps(
            {
                "userinfo": info.json(),
                "id_token": dict(claims),
                "kid": claims.header["kid"],
                "token": {
                    "token_type": token["token_type"],
                    "expires_in": token["expires_in"],
                    "scope": token.get("scope"),
                },
                "state": state,
            }
        )
    )


if __name__ == "__main__":
    main()
