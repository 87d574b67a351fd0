"""ssh command lines for tunnel processes, split by role; ``from tunnels.ssh import X`` keeps working.

* ``command``: the pure argv/environment builder (autossh) and the options every tunnel shares;
* ``prepare``: the files a command refers to (known_hosts, empty config, the key in the agent);
* ``master``: an interactive tunnel's ssh control master, and its ``-O check``/``-O exit`` clients;
* ``askpass``: the helper ssh runs for each prompt, installed in the data dir;
* ``redaction``: this server's paths taken out of what users read;
* ``preflight``: one-shot connection tests made from a tunnel's own command.
"""

from tunnels.ssh.command import (
    DATA_DIR_ENV,
    GENERATION_ENV,
    KIND_ENV,
    MARKER_ENV,
    NO_KEY_ERROR,
    NODE_ENV,
    Command,
    Identity,
    NoKey,
    UnsafeCommand,
    _guard,
    autossh_gate_seconds,
    build_command,
    forward_spec,
    pinned_options,
    remote_end,
)
from tunnels.ssh.master import (
    MASTER,
    build_master_command,
    control,
    control_command,
    control_path,
    ensure_private,
    master_command,
    runtime_dir,
)
from tunnels.ssh.preflight import PREFLIGHT_CONNECT_TIMEOUT, config_query_command, preflight_command, ssh_bin
from tunnels.ssh.prepare import command_for, empty_config_path, identity_for, known_hosts_path, ssh_dir
from tunnels.ssh.redaction import redact, redact_for

__all__ = [
    "MASTER",
    "build_master_command",
    "control",
    "control_command",
    "control_path",
    "ensure_private",
    "master_command",
    "runtime_dir",
    "DATA_DIR_ENV",
    "GENERATION_ENV",
    "KIND_ENV",
    "MARKER_ENV",
    "NODE_ENV",
    "NO_KEY_ERROR",
    "PREFLIGHT_CONNECT_TIMEOUT",
    "Command",
    "Identity",
    "NoKey",
    "UnsafeCommand",
    "_guard",
    "autossh_gate_seconds",
    "build_command",
    "command_for",
    "config_query_command",
    "empty_config_path",
    "forward_spec",
    "identity_for",
    "known_hosts_path",
    "pinned_options",
    "preflight_command",
    "redact",
    "redact_for",
    "remote_end",
    "ssh_bin",
    "ssh_dir",
]
