"""Roles and what each may do: defined once, checked by the API (and shown by the CLI).

A token carries one role. Roles are ordered: each may do everything the one
before it may, plus its own permissions.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    READ = "read"  # list and show workflows, checkpoints, history, events, metrics
    CREATE = "create"  # start workflows
    RESOLVE = "resolve"  # decide at checkpoints
    CANCEL = "cancel"  # cancel workflows
    RETRY = "retry"  # retry failed workflows
    MANAGE_TOKENS = "manage_tokens"  # create, list and revoke API tokens


class Role(StrEnum):
    VIEWER = "viewer"  # reads
    REVIEWER = "reviewer"  # reads, creates, resolves, cancels, retries
    ADMIN = "admin"  # everything, tokens included

    @property
    def permissions(self) -> frozenset[Permission]:
        return ROLE_PERMISSIONS[self]

    def may(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self]


_VIEWER = frozenset({Permission.READ})
_REVIEWER = _VIEWER | {Permission.CREATE, Permission.RESOLVE, Permission.CANCEL, Permission.RETRY}
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.REVIEWER: _REVIEWER,
    Role.ADMIN: frozenset(Permission),
}
