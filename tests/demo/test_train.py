"""The demo model's training script: its loss, its bf16 mode, and a whole tiny run end to end."""

import json

import pytest
import torch
import torch.nn.functional as F

from minilazy.demo import schedule, train
from minilazy.demo.dataset import SceneStream
from minilazy.model import Model


@pytest.fixture(scope="module")
def tiny(tiny_model):
    """The tiny model, its weights and a stream of training batches."""
    model, weights, tokenizer, processor = tiny_model
    stream = SceneStream(tokenizer, processor, seed=5, batch_size=3, questions_per_image=4, describe_prob=0.3)
    return model, weights, stream


def real_length_loss(model, batch):
    """The answer loss with each row at its own length (attention masks the padding per row)."""
    logits = model.forward_logits(batch.input_ids, batch.pixel_values, batch.lengths)  # [B, T, V]
    mask = batch.loss_mask[:, 1:]
    return F.cross_entropy(logits[:, :-1][mask], batch.input_ids[:, 1:][mask])


def test_answer_loss_at_full_width_equals_the_loss_at_real_lengths(tiny):
    model, _, stream = tiny
    batch = stream.qa_batch(max_objects=6)
    assert len(set(batch.lengths.tolist())) > 1, "the batch should be padded for this test to mean anything"
    with torch.no_grad():
        torch.testing.assert_close(train.answer_loss(model, batch), real_length_loss(model, batch))


def test_bf16_autocast_loss_is_close_to_fp32_and_gives_fp32_gradients(tiny):
    model, weights, stream = tiny
    batch = stream.qa_batch(max_objects=4)
    with torch.no_grad():
        fp32 = train.answer_loss(model, batch)
    with schedule.autocast("bf16"):
        bf16 = train.answer_loss(model, batch)
    assert bf16.dtype == torch.float32
    assert abs(bf16.item() - fp32.item()) < 0.02 * fp32.item()
    bf16.backward()
    grads = [w.grad for w in weights.values() if w.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    for w in weights.values():
        w.grad = None


def test_cell_of_patch_maps_the_9x9_patches_onto_the_3x3_grid():
    cells = train.cell_of_patch(9).view(9, 9)  # [P] -> [rows, cols]
    assert cells[0, :3].eq(0).all() and cells[0, 3:6].eq(1).all() and cells[8, 8] == 8
    assert cells[3:6, 3:6].eq(4).all()
    assert torch.bincount(cells.flatten()).eq(9).all()


def test_auto_precision_is_bf16_only_where_the_cpu_multiplies_bf16_natively():
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert schedule.resolve_precision("auto") == ("bf16" if native else "fp32")
    assert schedule.resolve_precision("bf16") == "bf16" and schedule.resolve_precision("fp32") == "fp32"
    assert train.parse_args(["--out", "out/x"]).precision == "auto"


TINY_RUN = ["--layers", "2", "--hidden", "32", "--vision-hidden", "32", "--vision-steps", "3", "--vision-batch-size", "2",
            "--steps", "3", "--batch-size", "2", "--questions-per-image", "2", "--warmup", "2", "--validation-size", "4"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp32", "auto"])
def test_a_tiny_training_run_writes_a_checkpoint_that_loads(tmp_path, precision):
    out = tmp_path / "run"
    train.main(["--out", str(out), "--precision", precision, "--threads", str(torch.get_num_threads()), *TINY_RUN])
    runs = json.loads((out / "training_info.json").read_text())["runs"]
    assert runs[-1]["stage"] == "done" and runs[-1]["step"] == 3
    assert runs[-1]["arguments"]["precision"] == schedule.resolve_precision(precision)  # what ran, never "auto"
    assert runs[-1]["validation_exact_match"] * 4 in (0, 1, 2, 3, 4)  # a share of the 4 validation questions
    log = (out / "training_log.txt").read_text()
    assert "final step 3" in log and "nan" not in log
    model = Model.from_pretrained(out, backend="torch")
    assert model.config.text.num_hidden_layers == 2


def test_the_output_directory_must_be_named(capsys):
    with pytest.raises(SystemExit) as refused:
        train.parse_args(["--steps", "3"])
    assert refused.value.code == 2 and "--out" in capsys.readouterr().err


def stale_checkpoint(out):
    """A directory holding a checkpoint's files, and their contents."""
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"weights")
    return {path.name: path.read_bytes() for path in out.iterdir()}


def test_a_directory_holding_a_checkpoint_is_refused_and_left_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    before = stale_checkpoint(out)
    with pytest.raises(SystemExit) as refused:
        train.main(["--out", str(out), *TINY_RUN])
    assert refused.value.code == 2
    assert capsys.readouterr().err == f"error: {out} already holds a checkpoint (config.json or model.safetensors); " \
                                      "pass --overwrite to write over it\n"
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


@pytest.mark.slow
def test_overwrite_trains_over_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    stale_checkpoint(out)
    train.main(["--out", str(out), "--overwrite", "--threads", "1", *TINY_RUN])
    assert Model.from_pretrained(out, backend="torch").config.text.num_hidden_layers == 2
