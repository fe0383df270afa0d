"""The one exception family of netsim.

Errors carry where they happened as data and print as a single line a person can act on.
They are raised low (a token parser knows the bad value, not the file) and located high
(the file reader adds ``file:line``), see :meth:`NetsimError.at`.
"""

from __future__ import annotations

import copy


class NetsimError(Exception):
    """netsim could not do what was asked."""

    def __init__(self, message: str = "", *, where: str = "") -> None:
        self.message = message or (self.__doc__ or "error").strip()
        self.where = where
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message

    def at(self, where: str) -> NetsimError:
        """Return the same error located at ``where`` (prefixed to any location it already has)."""
        new = copy.copy(self)
        new.where = f"{where}: {self.where}" if self.where else where
        new.args = (str(new),)
        return new


class SpecError(NetsimError):
    """bad pod spec, manifest, flag or option value"""


class RulesetError(NetsimError):
    """the ruleset text could not be parsed"""


class DNSWireError(NetsimError):
    """malformed DNS message"""


class ConfigError(NetsimError):
    """bad Kubernetes/Istio object"""


class LabError(NetsimError):
    """the lab could not be set up or torn down"""


__all__ = ["ConfigError", "DNSWireError", "LabError", "NetsimError", "RulesetError", "SpecError"]
