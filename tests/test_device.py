"""`choose_device`: the one place a user's device name becomes a torch device."""

import pytest
import torch

from sanawm.device import choose_device
from sanawm.errors import UserInputError


def test_default_and_named_devices():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device().type == expected and choose_device("").type == expected
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["warp-drive", "cuda:x", 3.5])
def test_unknown_names_are_user_errors(name):
    with pytest.raises(UserInputError, match="unknown device"):
        choose_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_a_gpu_is_a_user_error():
    with pytest.raises(UserInputError, match="CUDA is not available"):
        choose_device("cuda:0")
