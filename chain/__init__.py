"""Blockcoin: a proof-of-work chain whose coin pays for decentralized storage."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("blockcoin")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0.0.0+unknown"
