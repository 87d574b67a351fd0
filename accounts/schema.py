"""OpenAPI security schemes for the authentication classes (shown in /api/docs/)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiTokenAuthentication"
    name = "apiToken"
    priority = 1

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "tsk_<lookup>_<secret>",
            "description": (
                "API token (`manage.py createtoken`, `POST /api/v1/tokens/` or a temporary token from "
                "`POST /api/v1/authentication/auth/`) as `Authorization: Bearer tsk_…`. "
                "`Authorization: Token tsk_…` is accepted too (JumpServer private-token style)."
            ),
        }


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.BearerTokenAuthentication"
    name = "bearerToken"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "tsk_<lookup>_<secret>",
            "description": "API token as `Authorization: Bearer tsk_…` (the autossh-compatible paths accept only "
            "`Bearer`, as the original did).",
        }


class SignatureScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.SignatureAuthentication"
    name = "httpSignature"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                'Access key (`POST /api/v1/access-keys/`): `Signature keyId="<id>",algorithm="hmac-sha256",'
                'headers="(request-target) date",signature="<base64>"` (HTTP Signatures draft, as JumpServer). '
                "`Date` within 300 s; each signature is accepted once; with a body, `digest` must be signed and "
                "`Digest: SHA-256=<base64>` must match."
            ),
        }


class LegacyApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.LegacyApiKeyAuthentication"
    name = "legacyApiKey"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "A key from the `API_KEY` environment variable (autossh manager compatibility), acting as the "
                "user named by `TUNNELSITE_API_KEY_USER`."
            ),
        }


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.SessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "Browser session (log in at /login/); unsafe methods need the CSRF token.",
        }
