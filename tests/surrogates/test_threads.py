"""surrogates/threads.py: the thread setting for a block, restored afterwards."""

from __future__ import annotations

import pytest
import torch

from surrogates.threads import torch_threads


def test_the_setting_holds_inside_and_is_restored_after_an_error() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"), torch_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
