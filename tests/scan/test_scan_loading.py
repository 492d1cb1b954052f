"""Finding and decoding model files: formats by content, hostile input refused."""

import hashlib
import io
import json
import pickle

import pytest
import safetensors.torch
import torch

from mlguard.scan.loading import (ModelFileError, as_state_dict, check_finite, decode, discover,
                                  read_model_file)

from scan_helper import Evil, evil_pickle


def _sd():
    return {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(3), "m": torch.ones(2).bool()}


def _torch_save(obj, **kw) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["safetensors", "zip", "legacy", "checkpoint"])
def test_formats_are_told_apart_by_content(fmt):
    sd = _sd()
    data = {"safetensors": lambda: safetensors.torch.save(sd),
            "zip": lambda: _torch_save(sd),
            "legacy": lambda: _torch_save(sd, _use_new_zipfile_serialization=False),
            "checkpoint": lambda: _torch_save({"epoch": 2, "model_state_dict": sd})}[fmt]()
    out = decode(data)
    assert out.format == ("safetensors" if fmt == "safetensors" else "torch.save")
    assert out.module is None and sorted(out.state_dict) == sorted(sd)
    for name, t in sd.items():
        assert torch.equal(out.state_dict[name], t) and out.state_dict[name].dtype == t.dtype


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"hello, I am a text file\n", "not a model file: unrecognized format"),
    (b"PK\x03\x04garbage", "truncated or corrupt zip archive"),
    (b"\x80\x02garbage", r"pickle with unsupported content refused \(not unpickled\)"),
    (_torch_save(_sd(), _use_new_zipfile_serialization=False)[:-20],
     "truncated or corrupt torch.save file"),
    (b"\xff\x00\x00\x00\x00\x00\x00\x00{", "truncated or corrupt safetensors file"),
    (_torch_save([1, 2, 3]), "not a state_dict: the file holds a list"),
    (_torch_save({"w": torch.ones(1), "epoch": 3}), "not a state_dict: entry 'epoch' is a int"),
])
def test_bad_bytes_name_the_problem(data, message):
    with pytest.raises(ModelFileError, match=message):
        decode(data)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4:UserWarning")
def test_code_in_a_pickle_is_never_run(tmp_path):
    marker = tmp_path / "marker"
    for data in (evil_pickle(str(marker)), pickle.dumps(Evil(str(marker)), protocol=4),
                 _torch_save({"w": Evil(str(marker))})):
        with pytest.raises(ModelFileError, match=r"pickle .*refused \(not unpickled\)"):
            decode(data)
    assert not marker.exists()


def test_non_finite_weights():
    check_finite({"a": torch.ones(3), "i": torch.tensor([1, 2]), "e": torch.empty(0),
                  "big": torch.full((4,), 6e4, dtype=torch.float16)})  # the sum overflows
    with pytest.raises(ModelFileError, match=r"in pair$"):
        check_finite({"pair": torch.tensor([float("inf"), -float("inf")])})
    with pytest.raises(ModelFileError, match=r"non-finite weights: NaN or inf in b, c"):
        check_finite({"a": torch.ones(3), "b": torch.tensor([1.0, float("inf")]),
                      "c": torch.tensor([float("nan")], dtype=torch.bfloat16)})


def test_as_state_dict_unwraps_checkpoints():
    sd = _sd()
    assert as_state_dict({"state_dict": sd, "optimizer": {"lr": 1}}) == sd
    assert as_state_dict({"model": sd}) == sd


def test_discover_walks_folders_and_reads_with_hash(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.pt", "a/b/y.safetensors", "a/b/z.PTH", "a/notes.txt", "top.ckpt"):
        (tmp_path / name).write_bytes(b"data " + name.encode())
    found = discover([tmp_path / "a", tmp_path / "a" / "notes.txt", str(tmp_path / "top.ckpt"),
                      tmp_path / "a" / "x.pt"])
    assert [p.removeprefix(str(tmp_path) + "/") for p in found] == \
        ["a/b/y.safetensors", "a/b/z.PTH", "a/notes.txt", "a/x.pt", "top.ckpt"]
    f = read_model_file(found[0])
    assert f.sha256 == hashlib.sha256(b"data a/b/y.safetensors").hexdigest() and f.size == 22
    with pytest.raises(FileNotFoundError, match="models: no such file or folder"):
        discover([tmp_path / "missing"])
    with pytest.raises(TypeError, match="models must hold paths"):
        discover([3])
    with pytest.raises(ModelFileError, match="cannot read file"):
        read_model_file(str(tmp_path / "a"))


def test_packing_for_the_device_copy_round_trips():
    """The CUDA staging path packs tensors into one flat buffer; check it on the CPU."""
    from mlguard.scan.staging import DeviceStager, layout_of, pack, views
    sd = {"w": torch.randn(5, 3).t(), "b": torch.randn(7).bfloat16(), "n": torch.tensor(3),
          "mask": torch.tensor([True, False, True]), "e": torch.empty(0, 4, dtype=torch.float64),
          "h": torch.randn(2, 2).half()}
    layout, total = layout_of(sd)
    assert all(offset % 64 == 0 for *_, offset in layout)
    flat = torch.zeros(total, dtype=torch.uint8)
    pack(sd, flat, layout)
    out = views(flat, layout)
    for name, t in sd.items():
        assert out[name].dtype == t.dtype and torch.equal(out[name], t), name
    assert DeviceStager(torch.device("cpu"))(sd) is sd  # nothing to stage on the CPU


SAFETENSORS_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
                      torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
                      torch.float8_e4m3fn]


def test_zero_copy_safetensors_matches_the_library():
    from mlguard.scan.safetensors_view import load
    g = torch.Generator().manual_seed(0)
    sd = {f"t{i}": (torch.randn(3, 5, generator=g) * 50).to(dt)
          for i, dt in enumerate(SAFETENSORS_DTYPES)}
    sd.update(odd=torch.arange(7, dtype=torch.int8), empty=torch.empty(0, 3),
              scalar=torch.tensor(2.5), big=torch.randn(64, 33, generator=g))
    data = bytearray(safetensors.torch.save(sd, metadata={"format": "pt"}))
    ours, theirs = load(data), safetensors.torch.load(bytes(data))
    assert sorted(ours) == sorted(theirs)
    for name, t in theirs.items():
        assert ours[name].dtype == t.dtype and ours[name].shape == t.shape, name
        assert torch.equal(ours[name].reshape(-1).view(torch.uint8),
                           t.reshape(-1).view(torch.uint8)), name  # bitwise, NaN included
    views = [n for n in ours if ours[n].numel() and ours[n].untyped_storage().data_ptr() ==
             torch.frombuffer(data, dtype=torch.uint8).data_ptr()]
    assert len(views) >= len(sd) - 3  # shares the file's memory: no copy


def _safetensors_bytes(header: dict, payload: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + payload


@pytest.mark.parametrize("header, payload, message", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4,
     r"outside the 4-byte data \(truncated file\?\)"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8,
     "8 bytes do not hold a F32 tensor of shape"),
    ({"a": {"dtype": "F31", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8,
     "shape must be a list of ints >= 0"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8,
     "overlapping tensors or a gap"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8,
     "cover 4 of 8 data bytes"),
    ({"a": [1, 2]}, b"", "entry 'a' is not an object"),
])
def test_corrupt_safetensors_headers(header, payload, message):
    with pytest.raises(ModelFileError, match=message):
        decode(_safetensors_bytes(header, payload))


def test_safetensors_header_that_does_not_fit():
    data = (10**6).to_bytes(8, "little") + b"{}"
    with pytest.raises(ModelFileError, match="header length 1000000 does not fit"):
        decode(data)
    with pytest.raises(ModelFileError, match="header is not valid JSON"):
        decode((4).to_bytes(8, "little") + b"{abc")


def test_buffer_pool_reuses_the_best_fit_and_keeps_few():
    from mlguard.scan.buffers import BufferPool
    pool = BufferPool(keep=2)
    small, big = pool.acquire(10), pool.acquire(3 << 20)
    assert small.numel() == 1 << 20 and big.numel() == 3 << 20  # rounded up to 1 MiB
    pool.release(big)
    pool.release(small)
    pool.release(pool.acquire(5 << 20))  # not kept: the pool is full
    assert pool.acquire(100).data_ptr() == small.data_ptr()  # smallest that fits
    assert pool.acquire(2 << 20).data_ptr() == big.data_ptr()
    assert pool.acquire(1).data_ptr() not in (small.data_ptr(), big.data_ptr())


def test_memory_stream_reads_and_seeks_without_copying_the_source():
    from mlguard.scan.buffers import MemoryStream
    buf = bytearray(b"0123456789")
    stream = MemoryStream(memoryview(buf)[2:8])
    assert stream.read(3) == b"234" and stream.tell() == 3
    stream.seek(-2, io.SEEK_END)
    assert stream.read() == b"67" and stream.read(5) == b""
    buf[2] = ord("x")  # a view, not a copy
    stream.seek(0)
    assert stream.read(1) == b"x"
    with pytest.raises(ValueError, match="negative seek position"):
        stream.seek(-1)


def test_decode_from_a_pooled_buffer_larger_than_the_file(tmp_path):
    from mlguard.scan.buffers import BufferPool
    pool = BufferPool(keep=4)
    sd = _sd()
    for name, data in (("a.safetensors", safetensors.torch.save(sd)), ("b.pt", _torch_save(sd)),
                       ("c.pt", _torch_save(sd, _use_new_zipfile_serialization=False))):
        (tmp_path / name).write_bytes(data)
        f = read_model_file(str(tmp_path / name), pool)
        assert f.buffer.numel() == 1 << 20 and f.size == len(data)
        out = decode(f.data).state_dict
        assert all(torch.equal(out[k], v) for k, v in sd.items()), name
        pool.release(f.buffer)
