"""The virtual device used by the device-consistency tests catches what a GPU would reject."""

from __future__ import annotations

import pytest
import torch

from ..helpers.virtual_device import DEVICE, DeviceMismatch, Virtual, to_host, virtual_device


def test_mixing_a_host_tensor_into_a_device_op_is_refused_as_on_cuda():
    with virtual_device():
        x = torch.ones(3, 4).to(DEVICE)
        with pytest.raises(DeviceMismatch, match="cpu tensor of shape \\[3, 4\\]"):
            _ = x / torch.ones(3, 4)
        with pytest.raises(DeviceMismatch):
            _ = x @ torch.ones(4, 2)  # the meta device alone would let this through
        y = x * torch.tensor(2.0)  # a 0-dim host scalar is fine, as on CUDA
        x[:, :2] = torch.zeros(3, 2)  # a copy from the host is fine
        with pytest.raises(TypeError, match="numpy"):
            y.numpy()
    assert isinstance(y, Virtual) and y.device == DEVICE
    assert to_host(x).sum().item() == 6.0 and to_host(y).sum().item() == 24.0


def test_host_syncs_are_recorded_with_their_kind():
    with virtual_device() as audit:
        x = torch.arange(6.0, device=DEVICE)
        assert float(x.sum()) == 15.0
        assert x[x > 2].shape == (3,)
        host = x.cpu()
        torch.zeros(6).copy_(x)
        lin = torch.nn.Linear(6, 2).to(DEVICE)
        _ = lin(x)  # parameters moved with the module: no sync, no mismatch
    assert [s.kind for s in audit.syncs] == ["scalar", "value_shaped", "to_host", "to_host"]
    assert type(host) is torch.Tensor and host.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
