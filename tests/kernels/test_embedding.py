"""embedding and merge_image_features: kernels against references, references against plain torch."""

import pytest
import torch
import torch.nn.functional as F

from minilazy.kernels.embedding import embedding, embedding_ref, merge_image_features, merge_image_features_ref
from tests.helpers import TOLERANCES

DTYPES = [dtype for dtype, _, _ in TOLERANCES]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ids_shape,D", [((1,), 40), ((2, 37), 72), ((3, 5), 40)])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_embedding_kernel_matches_reference(ids_shape, D, dtype, index_dtype):
    table = torch.randn(101, D).to(dtype)
    ids = torch.randint(0, 101, ids_shape, dtype=index_dtype)
    out = embedding(ids, table)
    assert out.shape == (*ids_shape, D) and out.dtype == dtype
    assert torch.equal(out, embedding_ref(ids, table))  # a copy: exact


def test_embedding_kernel_reads_strided_table():
    table = torch.randn(50, 2 * 72)[:, :72]  # [V, D], row stride 2D
    ids = torch.randint(0, 50, (2, 5))
    assert torch.equal(embedding(ids, table), table[ids])


def test_embedding_reference_is_f_embedding_and_differentiable():
    table = torch.randn(30, 40, requires_grad=True)
    ids = torch.tensor([[0, 29, 3, 3, 7]])
    out = embedding_ref(ids, table)
    assert torch.equal(out, F.embedding(ids, table))
    out.sum().backward()
    counts = torch.bincount(ids.view(-1), minlength=30).float()  # [V]
    assert torch.equal(table.grad, counts[:, None].expand(30, 40))


@pytest.mark.parametrize("bad_id", [-1, 30])
def test_embedding_rejects_out_of_range_ids(bad_id):
    table = torch.randn(30, 40)
    ids = torch.tensor([1, bad_id, 2])
    for fn in (embedding, embedding_ref):
        with pytest.raises(ValueError, match=r"ids must lie in \[0, 30\)"):
            fn(ids, table)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,T,D,N", [(1, 1, 40, 1), (2, 37, 72, 20), (1, 5, 40, 3)])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_merge_image_features_kernel_matches_reference(B, T, D, N, dtype, index_dtype):
    embeds = torch.randn(B, T, D).to(dtype)
    features = torch.randn(N, D).to(dtype)
    rows = torch.randperm(B * T)[:N].to(index_dtype)
    expected = merge_image_features_ref(embeds.clone(), features, rows)
    returned = merge_image_features(embeds, features, rows)
    assert returned is embeds
    assert torch.equal(embeds, expected)


def test_merge_image_features_reference_matches_python_loop():
    embeds = torch.randn(2, 5, 40)
    features = torch.randn(3, 2 * 40)[:, :40]  # [N, D], strided rows
    rows = torch.tensor([9, 0, 4])
    expected = embeds.clone()
    for i, row in enumerate(rows.tolist()):
        expected[row // 5, row % 5] = features[i]
    assert torch.equal(merge_image_features_ref(embeds.clone(), features, rows), expected)
    assert torch.equal(merge_image_features(embeds, features, rows), expected)


@pytest.mark.parametrize(
    "features,rows,message",
    [
        (torch.randn(2, 40), torch.tensor([0, 10]), r"rows must lie in \[0, 10\)"),
        (torch.randn(2, 41), torch.tensor([0, 1]), "features must be"),
        (torch.randn(2, 40).half(), torch.tensor([0, 1]), "features must be"),
        (torch.randn(2, 40), torch.tensor([0, 1, 2]), "rows must be"),
    ],
)
def test_merge_image_features_rejects_bad_input(features, rows, message):
    for fn in (merge_image_features, merge_image_features_ref):
        with pytest.raises(ValueError, match=message):
            fn(torch.zeros(2, 5, 40), features, rows)
