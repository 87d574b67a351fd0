"""Shapes and OpenAPI declarations of ``/api/v1/ssh-keys/`` (views in ``tunnels.api.keys``).

Responses never carry private key material: no serializer here has a field for it.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers

from tunnels import sshkeys
from tunnels.models import SshKey
from tunnels.services_keys import RSA_MAX_BITS
from tunnelsite.schema import BAD_REQUEST, COMMON_ERRORS, NOT_FOUND, UNSUPPORTED_MEDIA_TYPE, error


class SshKeySerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    algorithm = serializers.CharField(read_only=True, help_text="ssh key type: `ssh-ed25519`, `ssh-rsa`, `ecdsa-…`.")
    public_key = serializers.CharField(read_only=True, help_text="`type base64`, as in a `.pub` file.")
    fingerprint = serializers.CharField(read_only=True, help_text="SHA256, as `ssh-keygen -l` prints it.")
    tunnel_count = serializers.SerializerMethodField(help_text="Tunnels that authenticate with this key.")

    class Meta:
        model = SshKey
        fields = [
            "id",
            "name",
            "owner",
            "algorithm",
            "bits",
            "public_key",
            "fingerprint",
            "comment",
            "tunnel_count",
            "created_at",
            "last_used_at",
            "expires_at",
        ]
        read_only_fields = fields

    def get_tunnel_count(self, key: SshKey) -> int:
        # Lists annotate the count; a key just created has no tunnels.
        return getattr(key, "tunnel_count", 0)


class SshKeyCreateSerializer(serializers.Serializer):
    """Request body (documentation only: ``tunnels.services_keys`` validates)."""

    name = serializers.CharField(max_length=100, help_text="Letters, digits, `._-@+`; unique among your keys.")
    algorithm = serializers.ChoiceField(
        choices=[sshkeys.ED25519, sshkeys.RSA], required=False, help_text="Generate: `ed25519` (default) or `rsa`."
    )
    bits = serializers.IntegerField(
        required=False,
        min_value=sshkeys.RSA_MIN_GENERATED_BITS,
        max_value=RSA_MAX_BITS,
        help_text=f"RSA only (default {sshkeys.RSA_DEFAULT_BITS}).",
    )
    private_key = serializers.CharField(
        required=False,
        help_text="Upload instead of generate: an OpenSSH or PEM private key (ed25519, ecdsa, RSA >= 2048 bits).",
    )
    passphrase = serializers.CharField(
        required=False, help_text="The uploaded key's passphrase; the key is stored re-encrypted under our own secret."
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True, help_text="Optional; in the future.")


class AuthorizedKeysSerializer(serializers.Serializer):
    line = serializers.CharField(help_text="Append it to `~/.ssh/authorized_keys` on your SSH server.")
    tunnels = serializers.ListField(child=serializers.CharField(), help_text="Names of the tunnels it permits.")


KEY_EXAMPLE = {
    "id": "0d4f2c8e-3b1a-4e6f-9c2d-7a8b9c0d1e2f",
    "name": "laptop",
    "owner": "alice",
    "algorithm": "ssh-ed25519",
    "bits": 256,
    "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk0bWd0b3Bsb3Rlc3RrZXlmb3Jkb2NzMDAwMDAwMDAw",
    "fingerprint": "SHA256:8n3k1cQe6u2mYyW3YQF6m0m0sVYk0m1Q0bq0o4l3kQ4",
    "comment": "tunnelsite:alice:laptop",
    "tunnel_count": 2,
    "created_at": "2026-06-01T12:00:00Z",
    "last_used_at": None,
    "expires_at": None,
}
LINE_EXAMPLE = {
    "line": 'restrict,port-forwarding,permitopen="localhost:5432",permitlisten="localhost:8022" '
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk0bWd0b3Bsb3Rlc3RrZXlmb3Jkb2NzMDAwMDAwMDAw tunnelsite:alice:laptop",
    "tunnels": ["db", "home-ssh"],
}
KEY_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The key's id.")
FORMAT_PARAM = OpenApiParameter(
    "format",
    str,
    enum=["json", "text"],
    description="`text`: the line alone as text/plain (with a newline), for `curl … >> ~/.ssh/authorized_keys`.",
)
FROM_PARAM = OpenApiParameter(
    "from",
    str,
    description="Comma-separated addresses, CIDR networks or host patterns the key may log in from "
    "(sshd's `from=`), e.g. `203.0.113.7,10.0.0.0/8`.",
)
KEY_CONFLICT = error("A key with this name or fingerprint exists, or (delete) tunnels still use the key.")
KEY_FORBIDDEN = error("The credential lacks the scope, or you already have MAX_SSH_KEYS keys.")

ssh_key_schema = extend_schema_view(
    list=extend_schema(
        summary="List SSH keys",
        description="Your SSH keys (public halves only); staff with the admin scope see everyone's.",
        responses={200: SshKeySerializer(many=True), 400: BAD_REQUEST, **COMMON_ERRORS},
        examples=[OpenApiExample("one page", value=KEY_EXAMPLE, response_only=True, status_codes=["200"])],
    ),
    retrieve=extend_schema(
        summary="Get an SSH key",
        parameters=[KEY_ID],
        responses={200: SshKeySerializer, 404: NOT_FOUND, **COMMON_ERRORS},
        examples=[OpenApiExample("ed25519", value=KEY_EXAMPLE, response_only=True)],
    ),
    create=extend_schema(
        summary="Generate or upload an SSH key",
        description="With `name` alone: generates an ed25519 key (`algorithm: rsa` and `bits` for RSA). With "
        "`private_key` (and `passphrase` if it has one): stores that key. The private key is kept encrypted and "
        "never shown again; the response has the public key to install on your SSH server "
        "(see `authorized-keys`).",
        request=SshKeyCreateSerializer,
        responses={
            201: SshKeySerializer,
            400: BAD_REQUEST,
            403: KEY_FORBIDDEN,
            409: KEY_CONFLICT,
            415: UNSUPPORTED_MEDIA_TYPE,
            401: COMMON_ERRORS[401],
            429: COMMON_ERRORS[429],
        },
        examples=[
            OpenApiExample("generate ed25519", value={"name": "laptop"}, request_only=True),
            OpenApiExample(
                "generate RSA", value={"name": "legacy", "algorithm": "rsa", "bits": 4096}, request_only=True
            ),
            OpenApiExample(
                "upload",
                value={"name": "workstation", "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\n…\n"},
                request_only=True,
            ),
            OpenApiExample(
                "created", value={**KEY_EXAMPLE, "tunnel_count": 0}, response_only=True, status_codes=["201"]
            ),
        ],
    ),
    destroy=extend_schema(
        summary="Delete an SSH key",
        description="Refused (409, naming them) while tunnels use the key: attach another key to them first.",
        parameters=[KEY_ID],
        responses={204: None, 404: NOT_FOUND, 409: KEY_CONFLICT, **COMMON_ERRORS},
    ),
)

authorized_keys_schema = extend_schema(
    summary="The authorized_keys line for a key",
    description="The line to append to `~/.ssh/authorized_keys` on your SSH server: `restrict` plus exactly the "
    "forwards your tunnels using this key need (`permitopen` for ssh -L targets, `permitlisten` for ssh -R listen "
    "addresses). With no tunnel using the key, the line permits nothing. Fetch it again after changing tunnels.",
    parameters=[KEY_ID, FORMAT_PARAM, FROM_PARAM],
    responses={
        (200, "application/json"): OpenApiResponse(AuthorizedKeysSerializer),
        (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="With `format=text`: the line."),
        # Errors are JSON whatever ``format`` asked for.
        **{
            (code, "application/json"): response
            for code, response in {
                400: BAD_REQUEST,
                404: NOT_FOUND,
                409: error("A tunnel using the key has a target that cannot be written into the line."),
                **COMMON_ERRORS,
            }.items()
        },
    },
    examples=[OpenApiExample("-L and -R", value=LINE_EXAMPLE, response_only=True, status_codes=["200"])],
)
