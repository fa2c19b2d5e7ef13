"""The version stamped into every sidecar and run record."""

from importlib.metadata import PackageNotFoundError, version

try:
    CODE_VERSION = version("pipeline-assets")
except PackageNotFoundError:  # running from a source tree that is not installed
    CODE_VERSION = "0+unknown"
