"""tinywarden: learn a device's normal behaviour from its own telemetry and flag deviations on-device."""

from tinywarden.errors import TinywardenError

__version__ = "0.1.0"
__all__ = ["TinywardenError", "__version__"]
