"""Fixtures of the web demo's tests (test_demo.py, test_demo_clients.py): the demo serving a model trained for
them, so that both modules test the same server set-up."""

import threading

import pytest

from tests.conftest import real_photos
from training.demo import serve
from training.run import TrainConfig, train


@pytest.fixture(scope="module")
def demo(tiny_store, tmp_path_factory):
    """(page URL, checkpoint, a photo, a reference photo, a folder) with the demo serving a trained model."""
    store, _ = tiny_store
    tmp = tmp_path_factory.mktemp("demo")
    cfg = TrainConfig(store=str(store), out=str(tmp / "run"), width=1 / 8, size=64, batch_size=4, steps=2,
                      holdout=0.25, eval_images=4)  # fmt: skip
    train(cfg)
    (_, photo), (_, reference) = real_photos(2)
    (tmp / "photo.jpg").write_bytes(photo)
    (tmp / "reference.jpg").write_bytes(reference)
    server = serve(str(tmp / "run" / "checkpoint-last.pt"), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", tmp / "run" / "checkpoint-last.pt", tmp
    server.shutdown()
    server.server_close()
