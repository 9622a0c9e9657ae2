"""Window gathering: the same values as plain indexing, from either memory layout; batch memory
reused only once nothing holds it."""

from __future__ import annotations

import pickle
import threading
import time

import pytest
import torch

from terratorch_hsi_peft.datamodules.windows import BatchBuffers, gather_windows, pixel_major


def _reference(cube: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return torch.stack([cube[:, r][:, :, c] for r, c in zip(rows, cols, strict=True)])


def _windows(size: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    cube = torch.randn(7, 13, 11, generator=generator)
    tops = torch.tensor([0, 3, 8, 8])
    lefts = torch.tensor([0, 6, 2, 6])
    offsets = torch.arange(size)
    return cube, tops[:, None] + offsets, lefts[:, None] + offsets


def test_pixel_major_keeps_shape_and_values_and_puts_each_spectrum_together() -> None:
    cube, _, _ = _windows()
    laid_out = pixel_major(cube)
    assert laid_out.shape == cube.shape
    assert torch.equal(laid_out, cube)
    assert laid_out.stride() == (1, 11 * 7, 7)
    # Already pixel-major: the same memory, no copy.
    assert pixel_major(laid_out).data_ptr() == laid_out.data_ptr()


def test_gather_matches_indexing_from_either_layout() -> None:
    cube, rows, cols = _windows()
    expected = _reference(cube, rows, cols)
    for source in (cube, pixel_major(cube)):
        windows = gather_windows(source, rows, cols)
        assert windows.shape == (4, 7, 5, 5)
        assert torch.equal(windows, expected)
        assert windows.is_contiguous(memory_format=torch.channels_last)


def test_gather_takes_non_square_and_scattered_windows() -> None:
    cube, _, _ = _windows()
    rows = torch.tensor([[0, 2, 4], [12, 11, 10]])
    cols = torch.tensor([[1, 1], [10, 0]])
    assert torch.equal(gather_windows(pixel_major(cube), rows, cols), _reference(cube, rows, cols))


def test_gather_into_out_writes_the_same_windows_into_its_memory() -> None:
    cube, rows, cols = _windows()
    out = torch.empty(4 * 5 * 5, 7)
    windows = gather_windows(pixel_major(cube), rows, cols, out=out)
    assert torch.equal(windows, _reference(cube, rows, cols))
    assert windows.data_ptr() == out.data_ptr()


# -- BatchBuffers -------------------------------------------------------------------------------


def _filled(buffers: BatchBuffers, value: float) -> torch.Tensor:
    batch = buffers.take((6, 4), torch.float32)
    batch.fill_(value)
    return batch


def test_buffers_hand_out_tensors_of_the_shape_and_dtype_asked_not_views_of_the_pool() -> None:
    buffers = BatchBuffers()
    for shape, dtype in [((6, 4), torch.float32), ((3, 2, 5), torch.float64), ((7,), torch.int64)]:
        batch = buffers.take(shape, dtype)
        assert batch.shape == shape and batch.dtype == dtype and batch.is_contiguous()
        assert batch._base is None


def test_buffers_reuse_memory_nothing_references_any_more() -> None:
    buffers = BatchBuffers()
    pointer = _filled(buffers, 1.0).data_ptr()  # dropped at once
    assert buffers.take((6, 4), torch.float32).data_ptr() == pointer
    # The same bytes under another shape of the same size are reused too.
    assert buffers.take((4, 6), torch.float32).data_ptr() == pointer


@pytest.mark.parametrize(
    "hold",
    [
        pytest.param(lambda batch: batch, id="the batch"),
        pytest.param(lambda batch: {"image": batch[:, :2].permute(1, 0)}, id="a view in a dict"),
        pytest.param(lambda batch: batch.numpy(), id="a numpy array"),
    ],
)
def test_buffers_never_overwrite_memory_a_consumer_still_holds(hold) -> None:
    buffers = BatchBuffers()
    held = hold(_filled(buffers, 1.0))
    again = _filled(buffers, 2.0)  # the loader cuts the next batch while the first is held
    first = held if isinstance(held, dict) else {"x": held}
    for value in first.values():
        assert (torch.as_tensor(value) != 2.0).all()
    del held, first, value
    assert buffers.take((6, 4), torch.float32).data_ptr() != again.data_ptr()


def test_buffers_never_overwrite_a_batch_an_autograd_graph_saved() -> None:
    buffers = BatchBuffers()
    weight = torch.ones(4, requires_grad=True)
    loss = (_filled(buffers, 1.0) * weight).sum()  # the product saves the batch for backward
    _filled(buffers, 2.0)
    loss.backward()
    assert torch.equal(weight.grad, torch.full((4,), 6.0))  # 6 rows of 1.0, not of 2.0


def test_buffers_keep_at_most_size_and_make_room_for_another_batch_size() -> None:
    buffers = BatchBuffers(size=2)
    held = [_filled(buffers, float(i)) for i in range(3)]  # the pool is full and busy
    assert len({batch.data_ptr() for batch in held}) == 3
    assert [batch[0, 0].item() for batch in held] == [0.0, 1.0, 2.0]
    kept = [batch.data_ptr() for batch in held[:2]]  # the third was not kept
    del held
    # A short last batch takes the place of the first free buffer; the second stays.
    short = buffers.take((2, 4), torch.float32)
    assert buffers.take((6, 4), torch.float32).data_ptr() == kept[1]
    pointer = short.data_ptr()
    del short
    assert buffers.take((2, 4), torch.float32).data_ptr() == pointer
    assert len(buffers._kept) == 2


def test_buffers_are_not_reused_in_a_dataloader_worker(monkeypatch) -> None:
    buffers = BatchBuffers()
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    pointers = [_filled(buffers, 1.0).data_ptr() for _ in range(3)]
    assert not buffers._kept and len(pointers) == 3


def test_buffers_fall_back_to_new_memory_where_torch_cannot_count_references(monkeypatch) -> None:
    monkeypatch.delattr(torch._C, "_storage_Use_Count")
    buffers = BatchBuffers()
    batch = _filled(buffers, 1.0)
    assert batch.shape == (6, 4) and not buffers._kept


def test_buffers_copied_to_another_process_start_empty() -> None:
    buffers = BatchBuffers(size=3)
    _filled(buffers, 1.0)
    copy = pickle.loads(pickle.dumps(buffers))
    assert copy.size == 3 and not copy._kept and buffers._kept
    assert _filled(copy, 2.0).shape == (6, 4) and len(copy._kept) == 1


def test_buffers_never_give_threads_cutting_batches_at_once_the_same_memory() -> None:
    buffers = BatchBuffers(size=2)
    clobbered = []

    def cut(value: float) -> None:
        for _ in range(300):
            batch = _filled(buffers, value)
            time.sleep(0)  # let the other threads cut theirs while this one is held
            if not bool((batch == value).all()):
                clobbered.append(value)

    threads = [threading.Thread(target=cut, args=(float(v),)) for v in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not clobbered


def test_buffers_filled_in_and_out_of_inference_mode() -> None:
    buffers = BatchBuffers()
    cube, rows, cols = _windows()
    source, expected = pixel_major(cube), _reference(cube, rows, cols)
    with torch.inference_mode():
        inside = gather_windows(source, rows, cols, out=buffers.take((100, 7), cube.dtype))
        assert torch.equal(inside, expected)
    del inside
    outside = gather_windows(source, rows, cols, out=buffers.take((100, 7), cube.dtype))
    assert torch.equal(outside, expected) and not outside.is_inference()


def test_buffers_of_size_zero_keep_nothing() -> None:
    buffers = BatchBuffers(size=0)
    assert _filled(buffers, 1.0).shape == (6, 4) and not buffers._kept


def test_buffers_size_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="size=-1"):
        BatchBuffers(size=-1)
