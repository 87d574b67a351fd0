"""The service layer: every change to tunnels goes through here.

Both API surfaces, the admin and the dashboard call these functions; no
business rule is written in a view. Functions only change the database
(desired state); the worker is the only code that touches processes.

Split by role: ``base`` (errors, who is acting, the change marker),
``checks`` (quotas, ports, network policy, the SSH key), ``config``
(create, update, delete, replace-all, restore, backups), ``desired``
(start, stop, restart, hash prefixes) and ``outcomes`` (waiting for the
worker). Callers use ``services.<name>``: everything is re-exported here.
"""

from tunnels.ports import NoFreePort, PortTaken
from tunnels.prompts import NoPrompt, Pending
from tunnels.prompts import answer as answer_prompt
from tunnels.prompts import pending as pending_prompt
from tunnels.prompts import pending_ids as pending_prompt_ids
from tunnels.services.base import (
    MARKER,
    SYSTEM,
    Actor,
    DuplicateTunnel,
    NotRunnable,
    bump_marker,
    marker_value,
)
from tunnels.services.checks import (
    KEY_FIELD,
    NO_SUCH_KEY,
    POLICY_FIELDS,
    _lock_owner,
    check_count,
    check_listen,
    check_policy,
    check_port_free,
    check_quota,
    default_key_id,
    resolve_key,
)
from tunnels.services.config import (
    ASSIGN_ATTEMPTS,
    _ensure_unique,
    backups_dir,
    create_tunnel,
    delete_tunnel,
    discard_backup,
    replace_all,
    restore_backup,
    snapshot,
    update_tunnel,
)
from tunnels.services.desired import (
    INTERACTIVE_ELSEWHERE,
    MIN_PREFIX,
    HashPrefixError,
    check_runnable,
    request_restart,
    request_start,
    request_stop,
    resolve_prefix,
    set_auto_restart,
    start_all,
    stop_all,
)
from tunnels.services.outcomes import (
    OUTCOME_FIELDS,
    WAIT_POLL,
    WORKER_CHANCE,
    WORKER_CHECK,
    WORKER_GRACE,
    Heartbeat,
    Outcome,
    live_workers,
    newest_heartbeat,
    no_worker,
    node_problems,
    wait_for_outcome,
    wait_for_outcomes,
)
from tunnelsite.errors import InvalidInput, NotFound, QuotaExceeded, ServiceError

__all__ = [
    "ASSIGN_ATTEMPTS",
    "Actor",
    "DuplicateTunnel",
    "HashPrefixError",
    "INTERACTIVE_ELSEWHERE",
    "InvalidInput",
    "KEY_FIELD",
    "MARKER",
    "MIN_PREFIX",
    "NO_SUCH_KEY",
    "NoFreePort",
    "NoPrompt",
    "Pending",
    "answer_prompt",
    "pending_prompt",
    "pending_prompt_ids",
    "NotFound",
    "NotRunnable",
    "OUTCOME_FIELDS",
    "Outcome",
    "POLICY_FIELDS",
    "PortTaken",
    "QuotaExceeded",
    "SYSTEM",
    "ServiceError",
    "WAIT_POLL",
    "WORKER_CHECK",
    "_ensure_unique",
    "_lock_owner",
    "backups_dir",
    "bump_marker",
    "check_count",
    "check_listen",
    "check_policy",
    "check_port_free",
    "check_quota",
    "check_runnable",
    "create_tunnel",
    "default_key_id",
    "delete_tunnel",
    "discard_backup",
    "live_workers",
    "newest_heartbeat",
    "no_worker",
    "node_problems",
    "Heartbeat",
    "WORKER_CHANCE",
    "WORKER_GRACE",
    "marker_value",
    "replace_all",
    "request_restart",
    "request_start",
    "request_stop",
    "resolve_key",
    "resolve_prefix",
    "restore_backup",
    "set_auto_restart",
    "snapshot",
    "start_all",
    "stop_all",
    "update_tunnel",
    "wait_for_outcome",
    "wait_for_outcomes",
]
