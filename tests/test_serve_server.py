"""The server helpers of sanawm.serve.server."""

import threading

import pytest

from sanawm.serve.server import load_off_main_thread


def test_load_off_main_thread_hands_back_the_value_and_the_error():
    assert load_off_main_thread(lambda: threading.current_thread() is not threading.main_thread())

    def broken():
        raise ValueError("bad folder")

    with pytest.raises(ValueError, match="bad folder"):
        load_off_main_thread(broken)
