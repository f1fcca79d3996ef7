"""IAM policies: parse and validate documents, compile them into a :class:`PolicySet`, decide and explain."""

from authmw.policy.document import Policy, Statement, parse_policy
from authmw.policy.engine import PolicySet

__all__ = ["Policy", "PolicySet", "Statement", "parse_policy"]
