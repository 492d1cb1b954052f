import pytest

# Every op test that takes `device` runs on each device: the CUDA case carries the `cuda`
# mark, so it is skipped, saying so, on a machine without a GPU (tests/conftest.py).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param
