"""IAM policies: parse and validate documents, compile them into a :class:`PolicySet`, decide and explain."""

from authmw.policy.builtin import modelarts_actions, system_policies
from authmw.policy.document import Policy, Statement, parse_policy
from authmw.policy.engine import Decision, PolicySet
from authmw.policy.lint import LintWarning, RouteUse, lint, never_applies

__all__ = [
    "Decision",
    "LintWarning",
    "Policy",
    "PolicySet",
    "RouteUse",
    "Statement",
    "lint",
    "modelarts_actions",
    "never_applies",
    "parse_policy",
    "system_policies",
]
