"""sanawm: the SANA-WM world model in PyTorch."""

from sanawm.errors import UserInputError

__all__ = ["UserInputError"]
__version__ = "0.1.0"
